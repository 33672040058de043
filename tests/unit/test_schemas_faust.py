"""schemas.faust_codecs: the registered codecs use the contract encoders."""
from __future__ import annotations

import pytest
from faust.serializers import codecs

import schemas.faust_codecs  # noqa: F401  (registers the codecs)
from schemas.codec import encode_click
from schemas.events import ClickEvent, DeadLetter, IntentEvent


@pytest.mark.parametrize(
    "name,value",
    [
        ("click", ClickEvent("e1", "u1", 1_718_000_000_000, "purchase", price=3.5, quantity=2)),
        ("intent", IntentEvent("i", "u1", "s", "e1", 1_718_000_000_000, 0.8, "high", "m", 4, 3.5, {"purchase": 1})),
        ("dead_letter", DeadLetter("not_json", "empty message", b"", "clickstream", 0, 7, 1_718_000_000_000, b"u1")),
    ],
)
def test_codec_round_trip(name, value):
    codec = codecs.get_codec(name)
    data = codec.dumps(value)
    assert isinstance(data, bytes)
    assert codec.loads(data) == value


def test_click_codec_matches_encode_click_and_rejects_bad_input():
    ev = ClickEvent("e1", "u1", 1_718_000_000_000, "search", query="shoes")
    assert codecs.get_codec("click").dumps(ev) == encode_click(ev)
    with pytest.raises(ValueError, match="unknown_event_type"):
        codecs.get_codec("click").loads(b'{"event_id":1,"user_id":2,"ts":1718000000000,"type":"x"}')
