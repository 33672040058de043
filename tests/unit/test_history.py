"""Lifetime history in UserState: matches a brute-force recount of the finished sessions, survives the
state record, and a v1 record (no history) loads with an empty one."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.history import DEVICE_SLOTS, FINISHED_NAMES, N_FINISHED, UserHistory, device_index, history_inputs
from models.state import StateConfig, UserState
from schemas.events import EVENT_TYPES, ClickEvent
from tests.unit.test_session import USER, click_from_bits
from tests.unit.test_session import reference as session_reference

BASE_TS = 1_700_000_000_000
DEVICES = (None, "desktop", "mobile", "tablet", "app", "Smart-TV")


def reference_finished(events: list[ClickEvent], session_no: list[int], upto: int) -> dict[str, float]:
    """Totals over the sessions that started before event `upto`'s session, recounted from the clicks.
    `session_no`: each event's session number (ids can repeat, e.g. "s-a", "s-b", "s-a")."""
    out = dict.fromkeys(FINISHED_NAMES, 0.0)
    for sno in range(session_no[upto]):
        evs = [e for e, s in zip(events[:upto], session_no[:upto]) if s == sno]
        types = [e.type for e in evs]
        out["sessions"] += 1
        out["sessions.purchase"] += "purchase" in types
        out["sessions.cart_no_purchase"] += "add_to_cart" in types and "purchase" not in types
        out["sessions.checkout"] += "begin_checkout" in types
        for t in types:
            out[f"events.{t}"] += 1
        out[f"sessions.device.{DEVICE_SLOTS[device_index(evs[0].device)]}"] += 1
        for prev, e in zip(evs, evs[1:]):  # gaps in arrival order, late clicks count 0
            out["gaps"] += 1
            out["log_gap_sum"] += math.log1p(max(0, e.ts - prev.ts) / 1000.0)
        for e in evs:
            value = (e.price or 0.0) * (1 if e.quantity is None else e.quantity)
            if e.type == "add_to_cart":
                out["cart_value_added"] += value
            elif e.type == "purchase":
                out["purchase_amount"] += value
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**63 - 1), st.integers(0, len(DEVICES) - 1), st.booleans()),
                max_size=40))
def test_history_matches_a_recount_of_finished_sessions(draws):
    ts, events = BASE_TS, []
    for i, (x, d, _) in enumerate(draws):
        ev, ts = click_from_bits(i, ts, x)
        events.append(ClickEvent(**{**{f: getattr(ev, f) for f in ev.__dataclass_fields__}, "device": DEVICES[d]}))
    config = StateConfig()
    sessions = session_reference(events, config.session_gap_ms, config.recent_k)
    ids = np.cumsum([s["new"] for s in sessions]).tolist()
    ids = [n - 1 for n in ids]
    state = UserState.new(USER, config)
    for i, (ev, (_, _, roundtrip)) in enumerate(zip(events, draws)):
        if roundtrip:
            state = UserState.from_bytes(state.to_bytes(), config)
        step = state.apply(ev)
        ref = reference_finished(events, ids, i)
        got = dict(zip(FINISHED_NAMES, step.history.tolist()))
        for name in FINISHED_NAMES:
            assert math.isclose(got[name], ref[name], rel_tol=1e-5, abs_tol=1e-4), (i, name, got[name], ref[name])
        assert not step.history.flags.writeable  # a snapshot: later clicks cannot change it
    assert UserState.from_bytes(state.to_bytes()) == state


def test_step_history_is_a_snapshot():
    state = UserState.new(USER)
    first = state.apply(ClickEvent("a", USER, BASE_TS, "page_view"))
    same = state.apply(ClickEvent("b", USER, BASE_TS + 1_000, "search"))
    nxt = state.apply(ClickEvent("c", USER, BASE_TS + 3_600_000, "page_view"))
    assert first.history is same.history and not first.history.any()
    assert nxt.history[FINISHED_NAMES.index("sessions")] == 1 and not first.history.any()


def test_history_inputs():
    assert not history_inputs(None).any() and not history_inputs(np.zeros(N_FINISHED)).any()
    h = UserHistory()
    for ts in (0, 1_000):
        h.add(EVENT_TYPES.index("page_view"), ts, None if ts == 0 else 0, "desktop")
    h.close_session()
    x = history_inputs(h.finished)
    assert x[0] == np.float32(math.log1p(1)) and x[1] == 1.0 and np.isfinite(x).all()


def test_history_costs_little_in_the_record():
    state = UserState.new(USER)
    empty = len(state.to_bytes())
    state.apply(ClickEvent("a", USER, BASE_TS, "page_view"))
    with_session = state.to_bytes()
    state.history = UserHistory()
    assert len(with_session) - len(state.to_bytes()) <= 64  # int columns + 6 float32 sums, when non-empty
    assert empty < len(with_session)
