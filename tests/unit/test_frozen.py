"""The cheaper constructors of the hot frozen dataclasses (schemas.frozen) must be in use and build
objects indistinguishable from the dataclass constructor's."""
from __future__ import annotations

import dataclasses

import pytest

from models.session import RecentEvent, new_recent_event
from models.state import RecentIntent, new_recent_intent
from schemas.events import IntentEvent
from schemas.frozen import fast_constructor

_new_intent_event = fast_constructor(IntentEvent, "i", "u", "s", "e", 0, 0.5, "low", "m", 1, 0.0)

CASES = [
    (new_recent_event, RecentEvent, (1_704_067_200_000, 3, 17, 0, 19.99, 2), {}),
    (new_recent_intent, RecentIntent, ("clickstream/0", 7, 0.25, 1, 2.5, 3, 9.5, (1, 0, 2), "gru-1"), {}),
    (_new_intent_event, IntentEvent, ("i", "u", "s", "e", 1, 0.5, "medium", "m", 2, 3.0),
     {"recent_counts": {"page_view": 1}, "latency_ms": 1.5}),
]


@pytest.mark.parametrize("new, cls, args, kwargs", CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_fast_constructor_builds_plain_frozen_instances(new, cls, args, kwargs):
    assert new is not cls, f"fast constructor fell back; check the {cls.__name__} layout"
    obj, ref = new(*args, **kwargs), cls(*args, **kwargs)
    assert type(obj) is cls and obj == ref and repr(obj) == repr(ref)
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, first, None)


def test_fast_constructor_keeps_defaults_and_factories():
    a, b = _new_intent_event(*CASES[2][2]), _new_intent_event(*CASES[2][2])
    assert a.recent_counts == {} and a.recent_counts is not b.recent_counts and a.scored_at == 0


def test_fast_constructor_falls_back_when_init_does_more():
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            if self.x < 0:
                raise ValueError("x < 0")

    assert fast_constructor(Checked, 1) is Checked
