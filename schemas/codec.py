"""Wire codec for the v1 contracts: orjson plus hand-written checks.

`decode_click` is the gate every byte on `clickstream` passes through. It is a pure function (no wall
clock, no globals that change) that returns either a `ClickEvent` or a `DecodeError` with a stable code,
and it never raises, so the worker can route anything it cannot use to the dead-letter topic.

Decisions (see docs/contracts.md for the producer-facing version):
- ids (`event_id`, `user_id`, `session_id`, `item_id`, `category_id`) are JSON strings or integers;
  integers become their decimal string, booleans and floats are rejected. Ids must be printable
  (`str.isprintable`: no control, format or separator characters except the ASCII space).
- `ts` is an integer of epoch milliseconds or an RFC 3339 string with an offset; both end up as epoch ms.
  Bounds are fixed (2000-01-01 <= ts < 2100-01-01 UTC) rather than relative to the wall clock, so a
  message decodes the same today and in a replay next year. Epoch *seconds* fall below the lower bound
  and are rejected with a hint rather than guessed.
- optional fields given as `null` or `""` are treated as absent.
- duplicate keys: the last one wins (orjson's behaviour, and JavaScript's); the checks see that value.
- unknown fields are ignored; a `v` field, if present, must be 1.
"""
from __future__ import annotations

import base64
import hashlib
import math
import re
from dataclasses import dataclass
from datetime import date

import orjson

from schemas.events import (
    EVENT_TYPE_INDEX,
    EVENT_TYPES,
    INTENT_LEVELS,
    SCHEMA_VERSION,
    ClickEvent,
    DeadLetter,
    IntentEvent,
)
from schemas.frozen import fast_constructor

# Limits. schemas.jsonschema reads these, so the JSON Schema files and the decoder cannot disagree.
MAX_MESSAGE_BYTES = 65_536
MAX_ID_CHARS = 128
MAX_QUERY_CHARS = 512
MAX_DEVICE_CHARS = 64
MAX_PRICE = 1e9
MIN_QUANTITY = 1
MAX_QUANTITY = 1_000_000
MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z (exclusive)

ID_FIELDS = ("event_id", "user_id", "session_id", "item_id", "category_id")
REQUIRED_CLICK_FIELDS = ("event_id", "user_id", "ts", "type")

# What decode_click can return (stable: producers and DLQ tools match on these).
DECODE_ERROR_CODES = (
    "not_json",
    "not_object",
    "missing_field",
    "bad_type",
    "bad_value",
    "too_large",
    "unknown_event_type",
    "internal",
)
# Every DeadLetter.error_code: the decode codes plus those the worker sets itself.
ERROR_CODES = DECODE_ERROR_CODES + (
    "key_mismatch",  # message key is not the event's user_id (would break co-partitioned state)
    "processing_error",  # the event decoded but applying or scoring it failed
)

# RFC 3339 date-time (section 5.6), ASCII digits only; 't', 'z' and a space separator are allowed (5.6 note).
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Why a message is not a usable ClickEvent. `code` is one of DECODE_ERROR_CODES; `message` is for humans."""

    code: str
    message: str


class ContractError(ValueError):
    """Raised by the strict decoders/encoders (intent, dead letter) that are not on the hot path."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _Invalid(Exception):
    """Internal: carries a DecodeError out of nested checks."""

    def __init__(self, code: str, message: str):
        self.code = code
        self.message = message


# ----------------------------------------------------------------------------------------------- click


# decode_click's ClickEvent constructor (a third of its cost was the frozen dataclass __init__)
_new_click = fast_constructor(ClickEvent, "e", "u", 0, "page_view")


def decode_click(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> ClickEvent | DecodeError:
    """Decode and validate one click message. Never raises."""
    try:
        return _decode_click(data, max_bytes)
    except _Invalid as exc:
        return DecodeError(exc.code, exc.message)
    except Exception as exc:  # last resort: a bug here must not stop the stream
        return DecodeError("internal", f"{type(exc).__name__}: {exc}"[:300])


def _decode_click(data, max_bytes: int) -> ClickEvent | DecodeError:
    if isinstance(data, str):  # tolerated for tests and tools; measured and parsed as UTF-8 like the wire
        data = data.encode("utf-8", "surrogatepass")
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        return DecodeError("not_json", f"message must be bytes, got {type(data).__name__}")
    size = len(data)
    if size > max_bytes:
        return DecodeError("too_large", f"message is {size} bytes, limit is {max_bytes}")
    if size == 0:
        return DecodeError("not_json", "empty message")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return DecodeError("not_json", str(exc)[:200])
    if type(obj) is not dict:
        return DecodeError("not_object", f"top level must be a JSON object, got {_json_type(obj)}")

    get = obj.get
    event_id = get("event_id")
    user_id = get("user_id")
    ts = get("ts")
    etype = get("type")
    if event_id is None or user_id is None or ts is None or etype is None:
        # Report every missing required field at once: producers fix them together.
        missing = [f for f in REQUIRED_CLICK_FIELDS if get(f) is None]
        return DecodeError("missing_field", f"required field(s) missing or null: {', '.join(missing)}")

    version = get("v")
    if version is not None and (type(version) is not int or version != SCHEMA_VERSION):
        return DecodeError("bad_value", f"unsupported schema version v={version!r}, expected {SCHEMA_VERSION}")

    if type(etype) is not str:  # before the dict lookup: a list or object here is unhashable
        return DecodeError("bad_type", f"type must be a string, got {_json_type(etype)}")
    if etype not in EVENT_TYPE_INDEX:
        return DecodeError("unknown_event_type", f"type {_clip(etype)!r} is not one of {', '.join(EVENT_TYPES)}")

    # Hot path: the common case (a short printable string) is tested inline; anything else goes through
    # _id, which normalizes ints and produces the error. This roughly halves the cost of the id checks.
    if not (type(event_id) is str and 0 < len(event_id) <= MAX_ID_CHARS and event_id.isprintable()):
        event_id = _id(event_id, "event_id", False)
    if not (type(user_id) is str and 0 < len(user_id) <= MAX_ID_CHARS and user_id.isprintable()):
        user_id = _id(user_id, "user_id", False)
    if type(ts) is not int or not MIN_TS_MS <= ts < MAX_TS_MS:
        ts = _ts(ts)

    session_id = get("session_id")
    if session_id is not None and not (
        type(session_id) is str and 0 < len(session_id) <= MAX_ID_CHARS and session_id.isprintable()
    ):
        session_id = _id(session_id, "session_id", True)
    item_id = get("item_id")
    if item_id is not None and not (
        type(item_id) is str and 0 < len(item_id) <= MAX_ID_CHARS and item_id.isprintable()
    ):
        item_id = _id(item_id, "item_id", True)
    category_id = get("category_id")
    if category_id is not None and not (
        type(category_id) is str and 0 < len(category_id) <= MAX_ID_CHARS and category_id.isprintable()
    ):
        category_id = _id(category_id, "category_id", True)

    price = get("price")
    if price is not None:
        tp = type(price)
        if tp is int:
            price = float(price)
        elif tp is not float:
            raise _Invalid("bad_type", f"price must be a number, got {_json_type(price)}")
        # orjson never yields NaN or inf (it rejects NaN, Infinity and 1e400); the range test rejects them anyway.
        if not 0.0 <= price <= MAX_PRICE:
            raise _Invalid("bad_value", f"price must be finite and within [0, {MAX_PRICE:g}], got {price!r}")

    quantity = get("quantity")
    if quantity is not None:
        if type(quantity) is not int:
            raise _Invalid("bad_type", f"quantity must be an integer, got {_json_type(quantity)}")
        if not MIN_QUANTITY <= quantity <= MAX_QUANTITY:
            raise _Invalid("bad_value", f"quantity must be within [{MIN_QUANTITY}, {MAX_QUANTITY}], got {quantity}")

    query = get("query")
    if query is not None:
        query = _text(query, "query", MAX_QUERY_CHARS)
    device = get("device")
    if device is not None:
        device = _text(device, "device", MAX_DEVICE_CHARS)

    return _new_click(event_id, user_id, ts, etype, session_id, item_id, category_id, price, quantity, query, device)


def _id(value, name: str, optional: bool = False) -> str | None:
    tv = type(value)
    if tv is str:
        n = len(value)
        if n == 0:
            if optional:
                return None
            raise _Invalid("bad_value", f"{name} must not be empty")
        if n > MAX_ID_CHARS:
            raise _Invalid("bad_value", f"{name} is {n} characters, limit is {MAX_ID_CHARS}")
        if not value.isprintable():
            raise _Invalid("bad_value", f"{name} contains control, format or separator characters")
        return value
    if tv is int:  # bool is a subclass of int; `type(...) is int` rejects it
        return str(value)
    raise _Invalid("bad_type", f"{name} must be a string or an integer, got {_json_type(value)}")


def _text(value, name: str, limit: int) -> str | None:
    if type(value) is not str:
        raise _Invalid("bad_type", f"{name} must be a string, got {_json_type(value)}")
    if len(value) > limit:
        raise _Invalid("bad_value", f"{name} is {len(value)} characters, limit is {limit}")
    return value or None


def _ts(value) -> int:
    tv = type(value)
    if tv is int:
        ms = value
    elif tv is str:
        ms = parse_rfc3339_ms(value)
    else:
        raise _Invalid(
            "bad_type", f"ts must be epoch milliseconds (integer) or an RFC 3339 string, got {_json_type(value)}"
        )
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        hint = " (looks like epoch seconds; send milliseconds)" if MIN_TS_MS // 1000 <= ms < MAX_TS_MS // 1000 else ""
        raise _Invalid("bad_value", f"ts {ms} is outside [2000-01-01, 2100-01-01) in epoch ms{hint}")
    return ms


def parse_rfc3339_ms(text: str) -> int:
    """RFC 3339 date-time -> epoch ms (floor of sub-millisecond digits). Exact integer arithmetic."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise _Invalid("bad_value", f"ts {_clip(text)!r} is not an RFC 3339 date-time with an offset")
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = m.groups()
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise _Invalid("bad_value", f"ts {text!r} has an invalid calendar date") from None
    hour, minute, second = int(hour), int(minute), int(second)
    # Leap seconds (:60) are rejected: epoch time cannot represent them and they are vanishingly rare in clicks.
    if hour > 23 or minute > 59 or second > 59:
        raise _Invalid("bad_value", f"ts {text!r} has an invalid time of day")
    offset_min = 0
    if not zulu:
        oh, om = int(off_h), int(off_m)
        if oh > 23 or om > 59:
            raise _Invalid("bad_value", f"ts {text!r} has an invalid UTC offset")
        offset_min = (oh * 60 + om) * (1 if sign == "+" else -1)
    millis = int((frac or "0")[:3].ljust(3, "0"))
    return (((days * 24 + hour) * 60 + minute - offset_min) * 60 + second) * 1000 + millis


def click_to_dict(ev: ClickEvent) -> dict:
    """The wire form of a ClickEvent: required fields, then the optional ones that are set."""
    d = {"v": SCHEMA_VERSION, "event_id": ev.event_id, "user_id": ev.user_id, "ts": ev.ts, "type": ev.type}
    for name in ("session_id", "item_id", "category_id", "price", "quantity", "query", "device"):
        value = getattr(ev, name)
        if value is not None:
            d[name] = value
    return d


def encode_click(ev: ClickEvent) -> bytes:
    return orjson.dumps(click_to_dict(ev))


# ---------------------------------------------------------------------------------------------- intent


def make_intent_id(event_id: str, user_id: str, model_version: str) -> str:
    """Deterministic intent id: the same click scored by the same model version always gets the same id.

    Each part is length-prefixed before hashing, so no choice of ids can make two triples collide by
    concatenation ("a|b","c" vs "a","b|c").
    """
    h = hashlib.blake2b(digest_size=16, person=b"intentstream.v1")
    for part in (event_id, user_id, model_version):
        raw = part.encode("utf-8")
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return h.hexdigest()


def intent_level(p: float, medium: float = 0.3, high: float = 0.7) -> str:
    """Coarse level for downstream rules: low < medium <= p < high <= p (defaults 0.3 and 0.7)."""
    if not 0.0 <= medium <= high <= 1.0:
        raise ValueError(f"need 0 <= medium <= high <= 1, got medium={medium}, high={high}")
    if p >= high:
        return "high"
    if p >= medium:
        return "medium"
    return "low"


def _ordered_counts(counts: dict[str, int]) -> dict[str, int]:
    # Event-type order, then any other names sorted: the same counts always serialize the same way.
    known = {k: int(counts[k]) for k in EVENT_TYPES if k in counts}
    if len(known) < len(counts):  # rare: names that are not event types
        for k in sorted(k for k in counts if k not in EVENT_TYPE_INDEX):
            known[k] = int(counts[k])
    return known


def intent_to_dict(ev: IntentEvent) -> dict:
    """Wire form with a fixed key order and normalized number types (the bytes must be reproducible)."""
    if ev.intent not in INTENT_LEVELS:
        raise ContractError("bad_value", f"intent must be one of {INTENT_LEVELS}, got {ev.intent!r}")
    return _intent_dict(ev.v, ev.intent_id, ev.user_id, ev.session_id, ev.event_id, int(ev.event_ts),
                        float(ev.p_purchase), ev.intent, ev.model_version, int(ev.session_events),
                        float(ev.cart_value), _ordered_counts(ev.recent_counts), int(ev.scored_at),
                        float(ev.latency_ms))


def _intent_dict(v: int, intent_id: str, user_id: str, session_id: str, event_id: str, event_ts: int, p: float,
                 intent: str, model_version: str, session_events: int, cart_value: float,
                 recent_counts: dict[str, int], scored_at: int, latency_ms: float) -> dict:
    """The one place that lays an intent out on the wire; the numbers come normalized (int or float)."""
    if not (0.0 <= p <= 1.0):  # also rejects NaN, which orjson would otherwise write as null
        raise ContractError("bad_value", f"p_purchase must be within [0, 1], got {p!r}")
    if not (math.isfinite(cart_value) and math.isfinite(latency_ms)):
        raise ContractError("bad_value", "cart_value and latency_ms must be finite")
    return {
        "v": v,
        "intent_id": intent_id,
        "user_id": user_id,
        "session_id": session_id,
        "event_id": event_id,
        "event_ts": event_ts,
        "p_purchase": p,
        "intent": intent,
        "model_version": model_version,
        "session_events": session_events,
        "cart_value": cart_value,
        "recent_counts": recent_counts,
        "scored_at": scored_at,
        "latency_ms": latency_ms,
    }


def encode_intent(ev: IntentEvent) -> bytes:
    return orjson.dumps(intent_to_dict(ev))


def encode_scored_click(click: ClickEvent, session_id: str, p_purchase: float, model_version: str,
                        session_events: int, cart_value: float, counts_by_type: tuple[int, ...], scored_at: int,
                        latency_ms: float) -> bytes:
    """encode_intent of the IntentEvent a worker makes for `click`, byte for byte, without building it (one
    per click on the worker's hot path). `counts_by_type`: the last hour's count per EVENT_TYPES index;
    p_purchase, cart_value and latency_ms are floats, the rest ints (as the worker makes them)."""
    return orjson.dumps(_intent_dict(
        SCHEMA_VERSION, make_intent_id(click.event_id, click.user_id, model_version), click.user_id, session_id,
        click.event_id, click.ts, p_purchase, intent_level(p_purchase), model_version, session_events, cart_value,
        {EVENT_TYPES[i]: c for i, c in enumerate(counts_by_type) if c}, scored_at, latency_ms))


def decode_intent(data: bytes) -> IntentEvent:
    """Strict decoder for consumers of `intents`; raises ContractError on anything off-contract."""
    obj = _load_object(data)
    _check_version(obj)
    s = _Fields(obj)
    p = s.number("p_purchase")
    if not 0.0 <= p <= 1.0:
        raise ContractError("bad_value", f"p_purchase must be within [0, 1], got {p}")
    intent = s.string("intent")
    if intent not in INTENT_LEVELS:
        raise ContractError("bad_value", f"intent must be one of {INTENT_LEVELS}, got {intent!r}")
    counts = obj.get("recent_counts", {})
    if type(counts) is not dict or any(type(k) is not str or type(v) is not int for k, v in counts.items()):
        raise ContractError("bad_type", "recent_counts must be an object of integer counts")
    return IntentEvent(
        intent_id=s.string("intent_id"),
        user_id=s.string("user_id"),
        session_id=s.string("session_id"),
        event_id=s.string("event_id"),
        event_ts=s.integer("event_ts"),
        p_purchase=p,
        intent=intent,
        model_version=s.string("model_version"),
        session_events=s.integer("session_events"),
        cart_value=s.number("cart_value"),
        recent_counts=counts,
        scored_at=s.integer("scored_at"),
        latency_ms=s.number("latency_ms"),
        v=SCHEMA_VERSION,
    )


# ----------------------------------------------------------------------------------------- dead letter


def dead_letter_to_dict(dl: DeadLetter) -> dict:
    if dl.error_code not in ERROR_CODES:
        raise ContractError("bad_value", f"error_code must be one of {ERROR_CODES}, got {dl.error_code!r}")
    return {
        "v": dl.v,
        "error_code": dl.error_code,
        "error_message": dl.error_message,
        "topic": dl.topic,
        "partition": int(dl.partition),
        "offset": int(dl.offset),
        "failed_at": int(dl.failed_at),
        "original": base64.b64encode(bytes(dl.original)).decode("ascii"),
        "key": None if dl.key is None else base64.b64encode(bytes(dl.key)).decode("ascii"),
    }


def encode_dead_letter(dl: DeadLetter) -> bytes:
    return orjson.dumps(dead_letter_to_dict(dl))


def decode_dead_letter(data: bytes) -> DeadLetter:
    """Strict decoder for tools that inspect or replay `clickstream.dlq`; raises ContractError."""
    obj = _load_object(data)
    _check_version(obj)
    s = _Fields(obj)
    code = s.string("error_code")
    if code not in ERROR_CODES:
        raise ContractError("bad_value", f"error_code must be one of {ERROR_CODES}, got {code!r}")
    key = obj.get("key")
    return DeadLetter(
        error_code=code,
        error_message=s.string("error_message"),
        original=_b64(s.string("original"), "original"),
        topic=s.string("topic"),
        partition=s.integer("partition"),
        offset=s.integer("offset"),
        failed_at=s.integer("failed_at"),
        key=None if key is None else _b64(key, "key"),
        v=SCHEMA_VERSION,
    )


# ------------------------------------------------------------------------------------------- helpers


def _load_object(data) -> dict:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ContractError("not_json", str(exc)) from None
    if type(obj) is not dict:
        raise ContractError("not_object", f"top level must be a JSON object, got {_json_type(obj)}")
    return obj


def _check_version(obj: dict) -> None:
    v = obj.get("v", SCHEMA_VERSION)
    if type(v) is not int or v != SCHEMA_VERSION:
        raise ContractError("bad_value", f"unsupported schema version v={v!r}, expected {SCHEMA_VERSION}")


class _Fields:
    """Typed required-field access for the strict (non hot path) decoders."""

    def __init__(self, obj: dict):
        self.obj = obj

    def _get(self, name: str):
        value = self.obj.get(name)
        if value is None:
            raise ContractError("missing_field", f"required field {name} is missing or null")
        return value

    def string(self, name: str) -> str:
        value = self._get(name)
        if type(value) is not str:
            raise ContractError("bad_type", f"{name} must be a string, got {_json_type(value)}")
        return value

    def integer(self, name: str) -> int:
        value = self._get(name)
        if type(value) is not int:
            raise ContractError("bad_type", f"{name} must be an integer, got {_json_type(value)}")
        return value

    def number(self, name: str) -> float:
        value = self._get(name)
        if type(value) not in (int, float):
            raise ContractError("bad_type", f"{name} must be a number, got {_json_type(value)}")
        return float(value)


def _b64(value, name: str) -> bytes:
    if type(value) is not str:
        raise ContractError("bad_type", f"{name} must be a base64 string, got {_json_type(value)}")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ContractError("bad_value", f"{name} is not valid base64") from None


_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "integer", float: "number", bool: "boolean"}


def _json_type(value) -> str:
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[:n] + "..."
