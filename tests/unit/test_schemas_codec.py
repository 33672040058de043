"""schemas.codec: click decoding (valid, malformed corpus, random bytes), intent and dead-letter round trips."""
from __future__ import annotations

import dataclasses
import json
import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.codec import (
    ContractError,
    DecodeError,
    decode_click,
    decode_dead_letter,
    decode_intent,
    encode_click,
    encode_dead_letter,
    encode_intent,
    encode_scored_click,
    intent_level,
    make_intent_id,
)
from schemas.events import EVENT_TYPES, INTENT_LEVELS, ClickEvent, DeadLetter, IntentEvent

CORPUS = Path(__file__).parent / "malformed" / "clicks.jsonl"
VALID = {"event_id": "e1", "user_id": "u1", "ts": 1_718_000_000_000, "type": "add_to_cart"}


def _msg(**fields) -> bytes:
    return orjson.dumps({**VALID, **fields})


# Cases that cannot live in a UTF-8 text file, or would make it huge.
GENERATED = [
    ("binary garbage", "not_json", b"\x00\xff\xfe\x80\x81garbage\x00"),
    ("invalid UTF-8 inside a string", "not_json", _msg()[:-1] + b',"query":"\xc3\x28"}'),
    ("UTF-8 byte order mark", "not_json", b"\xef\xbb\xbf" + _msg()),
    ("over 64 KiB", "too_large", _msg(query="q" * 70_000)),
    ("deep nesting beyond orjson's limit", "not_json", b"[" * 5_000 + b"]" * 5_000),
    ("deep object nesting inside an unknown field", "not_json",
     _msg()[:-1] + b',"x":' + b'{"a":' * 2_000 + b"1" + b"}" * 2_001),
    ("one byte over a custom limit", "too_large", b" " * 101),
]


def _corpus() -> list[tuple[str, str, bytes]]:
    rows = [orjson.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["name"], r["code"], r["text"].encode("utf-8")) for r in rows] + GENERATED


@pytest.mark.parametrize("name,code,data", _corpus(), ids=[c[0] for c in _corpus()])
def test_malformed_corpus_yields_expected_code(name, code, data):
    max_bytes = 100 if name == "one byte over a custom limit" else codec.MAX_MESSAGE_BYTES
    result = decode_click(data, max_bytes=max_bytes)
    assert isinstance(result, DecodeError), f"{name}: decoded to {result!r}"
    assert result.code == code, f"{name}: {result}"
    assert result.message


def test_corpus_is_large_and_covers_every_code():
    cases = _corpus()
    assert len(cases) >= 30
    assert len({c[2] for c in cases}) == len(cases), "duplicate inputs in the corpus"
    assert {c[1] for c in cases} == set(codec.DECODE_ERROR_CODES) - {"internal"}


def test_valid_minimal_and_full_events():
    assert decode_click(_msg()) == ClickEvent("e1", "u1", 1_718_000_000_000, "add_to_cart")
    full = _msg(session_id="s1", item_id=123, category_id="c", price=9, quantity=3, query="red shoes", device="app")
    ev = decode_click(full)
    assert ev == ClickEvent("e1", "u1", 1_718_000_000_000, "add_to_cart", "s1", "123", "c", 9.0, 3, "red shoes", "app")
    assert type(ev.price) is float


def test_int_ids_become_decimal_strings():
    ev = decode_click(_msg(event_id=0, user_id=-17, item_id=18_446_744_073_709_551_615))
    assert (ev.event_id, ev.user_id, ev.item_id) == ("0", "-17", "18446744073709551615")


def test_null_and_empty_optionals_are_absent_and_unknown_fields_ignored():
    ev = decode_click(_msg(session_id="", item_id=None, query="", device=None, _p_optimal=0.3, extra={"a": [1]}))
    assert ev == ClickEvent("e1", "u1", 1_718_000_000_000, "add_to_cart")


def test_duplicate_keys_last_wins():
    data = b'{"event_id":"e1","user_id":"first","ts":1718000000000,"type":"search","user_id":"last"}'
    assert decode_click(data).user_id == "last"


def test_nesting_within_limit_in_unknown_field_is_ignored():
    data = _msg()[:-1] + b',"x":' + b"[" * 1000 + b"]" * 1000 + b"}"
    assert isinstance(decode_click(data), ClickEvent)


def test_size_limit_is_configurable_and_inclusive():
    data = _msg()
    assert isinstance(decode_click(data, max_bytes=len(data)), ClickEvent)
    assert decode_click(data, max_bytes=len(data) - 1).code == "too_large"


def test_str_and_memoryview_input_accepted_other_types_rejected():
    assert isinstance(decode_click(_msg().decode()), ClickEvent)
    assert isinstance(decode_click(memoryview(_msg())), ClickEvent)
    assert decode_click(None).code == "not_json"
    assert decode_click(12).code == "not_json"


def test_internal_errors_are_caught(monkeypatch):
    def boom(*_a, **_k):
        raise RuntimeError("bug")

    monkeypatch.setattr(codec, "_new_click", boom)
    result = decode_click(_msg())
    assert result.code == "internal" and "bug" in result.message


def _reference_ms(text: str) -> int:
    # Independent path: datetime.fromisoformat after mapping RFC 3339 spellings it does not take.
    t = text.upper().replace("Z", "+00:00").replace(" ", "T")
    m = re.fullmatch(r"(.*?)(\.[0-9]+)?([+-][0-9]{2}:[0-9]{2})", t)
    dt = datetime.fromisoformat(m.group(1) + (m.group(2) or "")[:7] + m.group(3))
    return (dt - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


@pytest.mark.parametrize(
    "text",
    [
        "2024-06-10T12:00:00Z",
        "2024-06-10T12:00:00.5+00:00",
        "2024-06-10t14:30:00.123456789+02:30",
        "2024-06-10 07:00:00-05:00",
        "2000-01-01T00:00:00z",
        "2099-12-31T23:59:59.999Z",
        "2024-02-29T23:59:59.001-11:59",
    ],
)
def test_rfc3339_matches_datetime(text):
    assert decode_click(_msg(ts=text)).ts == _reference_ms(text)


_offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@settings(max_examples=200, deadline=None)
@given(st.datetimes(datetime(2000, 1, 2), datetime(2099, 12, 30), timezones=_offsets))
def test_rfc3339_property(dt):
    text = dt.isoformat(timespec="milliseconds")
    assert codec.parse_rfc3339_ms(text) == _reference_ms(text)


def test_rfc3339_truncates_sub_millisecond_digits():
    assert codec.parse_rfc3339_ms("2024-06-10T12:00:00.123999Z") == codec.parse_rfc3339_ms("2024-06-10T12:00:00.123Z")


def test_ts_bounds_are_half_open():
    assert decode_click(_msg(ts=codec.MIN_TS_MS)).ts == codec.MIN_TS_MS
    assert decode_click(_msg(ts=codec.MIN_TS_MS - 1)).code == "bad_value"
    assert decode_click(_msg(ts=codec.MAX_TS_MS - 1)).ts == codec.MAX_TS_MS - 1
    assert decode_click(_msg(ts=codec.MAX_TS_MS)).code == "bad_value"
    assert "seconds" in decode_click(_msg(ts=1_718_000_000)).message


# --------------------------------------------------------------------------------- property tests

# Printable per str.isprintable: no Other (C*) or Separator (Z*) categories, except the ASCII space.
_printable = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")) | st.just(" ")
_id_text = st.text(_printable, min_size=1, max_size=codec.MAX_ID_CHARS).filter(str.isprintable)
_opt_text = lambda n: st.none() | st.text(min_size=1, max_size=n)  # noqa: E731

clicks = st.builds(
    ClickEvent,
    event_id=_id_text,
    user_id=_id_text,
    ts=st.integers(codec.MIN_TS_MS, codec.MAX_TS_MS - 1),
    type=st.sampled_from(EVENT_TYPES),
    session_id=st.none() | _id_text,
    item_id=st.none() | _id_text,
    category_id=st.none() | _id_text,
    price=st.none() | st.floats(0, codec.MAX_PRICE, allow_nan=False),
    quantity=st.none() | st.integers(codec.MIN_QUANTITY, codec.MAX_QUANTITY),
    query=_opt_text(codec.MAX_QUERY_CHARS),
    device=_opt_text(codec.MAX_DEVICE_CHARS),
)


@settings(max_examples=300, deadline=None)
@given(clicks)
def test_click_round_trip(ev):
    data = encode_click(ev)
    assert decode_click(data) == ev
    assert encode_click(decode_click(data)) == data


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_decode_never_raises_on_random_bytes(data):
    result = decode_click(data)
    assert isinstance(result, (ClickEvent, DecodeError))
    if isinstance(result, DecodeError):
        assert result.code in codec.DECODE_ERROR_CODES and result.code != "internal", result


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_decode_never_raises_on_mutated_valid_messages(data):
    # Random bytes rarely get past the parser; flipping bytes of a real message reaches the field checks.
    msg = bytearray(_msg(session_id="s1", item_id=7, price=1.5, quantity=2, query="q", device="d"))
    for _ in range(data.draw(st.integers(1, 4))):
        msg[data.draw(st.integers(0, len(msg) - 1))] = data.draw(st.integers(0, 255))
    msg = msg[: data.draw(st.integers(1, len(msg)))]
    result = decode_click(bytes(msg))
    assert isinstance(result, (ClickEvent, DecodeError))
    assert not isinstance(result, DecodeError) or result.code != "internal", result


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from([*VALID, "price", "quantity", "query", "device", "session_id", "item_id", "v"]),
                       _json_values, max_size=8), st.booleans())
def test_decode_never_raises_on_random_fields(fields, merge):
    # stdlib json: it also writes integers beyond 64 bits, which orjson.dumps refuses
    result = decode_click(json.dumps({**VALID, **fields} if merge else fields).encode())
    assert isinstance(result, (ClickEvent, DecodeError))
    assert not isinstance(result, DecodeError) or result.code != "internal", result


# ---------------------------------------------------------------------------------- intent / DLQ

intents = st.builds(
    IntentEvent,
    intent_id=st.text(max_size=40),
    user_id=st.text(max_size=40),
    session_id=st.text(max_size=40),
    event_id=st.text(max_size=40),
    event_ts=st.integers(0, 2**53),
    p_purchase=st.floats(0, 1),
    intent=st.sampled_from(INTENT_LEVELS),
    model_version=st.text(max_size=20),
    session_events=st.integers(1, 10_000),
    cart_value=st.floats(0, 1e9),
    recent_counts=st.dictionaries(st.sampled_from(EVENT_TYPES), st.integers(0, 10_000)),
    scored_at=st.integers(0, 2**53),
    latency_ms=st.floats(0, 1e6),
)


@settings(max_examples=300, deadline=None)
@given(intents)
def test_intent_round_trip_is_byte_stable(ev):
    data = encode_intent(ev)
    back = decode_intent(data)
    assert back == ev
    assert encode_intent(back) == data


@settings(max_examples=200, deadline=None)
@given(p=st.floats(0, 1), counts=st.lists(st.integers(0, 50), min_size=len(EVENT_TYPES), max_size=len(EVENT_TYPES)),
       cart=st.floats(0, 1e6), latency=st.floats(0, 1e4), n=st.integers(1, 500))
def test_the_workers_intent_encoder_gives_encode_intents_bytes(p, counts, cart, latency, n):
    """encode_scored_click (the worker's hot path, no IntentEvent built) == encode_intent of that IntentEvent."""
    click = ClickEvent(event_id="e-1", user_id="u-9", ts=1_700_000_000_123, type="add_to_cart", item_id="i")
    ev = IntentEvent(make_intent_id("e-1", "u-9", "gru-x"), "u-9", "u-9:1", "e-1", click.ts, p, intent_level(p),
                     "gru-x", n, cart, {EVENT_TYPES[i]: c for i, c in enumerate(counts) if c}, 1_700_000_000_200,
                     latency)
    assert encode_scored_click(click, "u-9:1", p, "gru-x", n, cart, tuple(counts), 1_700_000_000_200,
                               latency) == encode_intent(ev)
    with pytest.raises(ContractError):
        encode_scored_click(click, "u-9:1", math.nan, "gru-x", n, cart, tuple(counts), 1, latency)


def test_intent_encoding_independent_of_dict_order_and_number_types():
    a = IntentEvent("i", "u", "s", "e", 1, 0.5, "medium", "m", 3, 10.0, {"search": 1, "page_view": 2}, 5, 1.0)
    b = dataclasses.replace(a, cart_value=10, latency_ms=1, recent_counts={"page_view": 2, "search": 1})
    assert encode_intent(a) == encode_intent(b)
    assert list(orjson.loads(encode_intent(a))["recent_counts"]) == ["page_view", "search"]


@pytest.mark.parametrize("p", [math.nan, -0.1, 1.5, math.inf])
def test_intent_encode_rejects_bad_probability(p):
    ev = IntentEvent("i", "u", "s", "e", 1, p, "low", "m", 1, 0.0)
    with pytest.raises(ContractError):
        encode_intent(ev)


@pytest.mark.parametrize(
    "patch,code",
    [({"p_purchase": 2}, "bad_value"), ({"intent": "huge"}, "bad_value"), ({"user_id": None}, "missing_field"),
     ({"event_ts": "1"}, "bad_type"), ({"v": 9}, "bad_value"), ({"recent_counts": {"a": 1.5}}, "bad_type")],
)
def test_decode_intent_rejects(patch, code):
    good = orjson.loads(encode_intent(IntentEvent("i", "u", "s", "e", 1, 0.5, "medium", "m", 1, 0.0)))
    with pytest.raises(ContractError) as info:
        decode_intent(orjson.dumps({**good, **patch}))
    assert info.value.code == code


dead_letters = st.builds(
    DeadLetter,
    error_code=st.sampled_from(codec.ERROR_CODES),
    error_message=st.text(max_size=100),
    original=st.binary(max_size=200),
    topic=st.text(min_size=1, max_size=30),
    partition=st.integers(0, 1000),
    offset=st.integers(0, 2**62),
    failed_at=st.integers(0, 2**53),
    key=st.none() | st.binary(max_size=40),
)


@settings(max_examples=200, deadline=None)
@given(dead_letters)
def test_dead_letter_round_trip(dl):
    data = encode_dead_letter(dl)
    assert decode_dead_letter(data) == dl
    assert encode_dead_letter(decode_dead_letter(data)) == data


def test_dead_letter_rejects_bad_base64():
    good = orjson.loads(encode_dead_letter(DeadLetter("not_json", "x", b"\x00", "t", 0, 0, 0)))
    with pytest.raises(ContractError) as info:
        decode_dead_letter(orjson.dumps({**good, "original": "not base64!"}))
    assert info.value.code == "bad_value"


# ------------------------------------------------------------------------------- ids and levels


def test_intent_id_deterministic_and_separating():
    a = make_intent_id("e1", "u1", "m1")
    assert a == make_intent_id("e1", "u1", "m1")
    assert len(a) == 32 and int(a, 16) >= 0
    assert a != make_intent_id("e1", "u1", "m2")
    assert make_intent_id("a|b", "c", "m") != make_intent_id("a", "b|c", "m")
    assert make_intent_id("ab", "c", "m") != make_intent_id("a", "bc", "m")


@given(st.tuples(st.text(), st.text(), st.text()), st.tuples(st.text(), st.text(), st.text()))
def test_intent_id_differs_for_different_triples(x, y):
    assert (make_intent_id(*x) == make_intent_id(*y)) == (x == y)


@pytest.mark.parametrize("p,level", [(0.0, "low"), (0.2999, "low"), (0.3, "medium"), (0.6999, "medium"),
                                     (0.7, "high"), (1.0, "high")])
def test_intent_level_default_thresholds(p, level):
    assert intent_level(p) == level


def test_intent_level_custom_thresholds():
    assert intent_level(0.5, medium=0.1, high=0.5) == "high"
    assert intent_level(0.05, medium=0.1, high=0.5) == "low"
    with pytest.raises(ValueError):
        intent_level(0.5, medium=0.8, high=0.2)


def test_decoded_click_is_a_plain_frozen_click_event():
    # decode_click builds events through a faster path (schemas.frozen.fast_constructor); it must be
    # indistinguishable from the dataclass constructor.
    assert codec._new_click is not ClickEvent, "fast constructor fell back; check the ClickEvent layout"
    ev = decode_click(_msg(price=2.5, device="app"))
    ref = ClickEvent("e1", "u1", 1_718_000_000_000, "add_to_cart", price=2.5, device="app")
    assert type(ev) is ClickEvent and ev == ref and hash(ev) == hash(ref) and repr(ev) == repr(ref)
    assert dataclasses.replace(ev, quantity=2).quantity == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.user_id = "x"
