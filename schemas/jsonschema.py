"""JSON Schema (draft 2020-12) for the v1 contracts, generated from the dataclasses and codec limits.

    python -m schemas.jsonschema --write   # regenerate schemas/json/*.json
    python -m schemas.jsonschema --check   # exit 1 if the checked-in files differ from the code

Each property starts from the dataclass field's annotation (str -> string, int -> integer, ...) and is
refined by the rules below, which read their bounds from `schemas.codec`. A dataclass field without a
description here is an error, so a new field cannot ship without its schema.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import orjson

from schemas import codec
from schemas.events import EVENT_TYPES, INTENT_LEVELS, SCHEMA_VERSION, ClickEvent, DeadLetter, IntentEvent

log = logging.getLogger(__name__)

JSON_DIR = Path(__file__).resolve().parent / "json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

_BASE_TYPES = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bytes": {"type": "string", "contentEncoding": "base64"},
    "dict[str, int]": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
}

# orjson reads integers in [-2**63, 2**64) exactly; larger ones become floats, which ids reject.
_INT_ID = {"type": "integer", "minimum": -(2**63), "maximum": 2**64 - 1}
_ID = {"anyOf": [{"type": "string", "minLength": 1, "maxLength": codec.MAX_ID_CHARS}, _INT_ID]}
_OPTIONAL_ID = {"anyOf": [{"type": "string", "maxLength": codec.MAX_ID_CHARS}, _INT_ID, {"type": "null"}]}

CLICK_RULES: dict[str, tuple[str, dict]] = {
    "event_id": (
        "Producer-unique id of this event. String (printable) or integer; integers are read as their decimal string.",
        _ID,
    ),
    "user_id": ("Shopper id; also the Kafka message key. String (printable) or integer.", _ID),
    "ts": (
        "Event time: integer epoch milliseconds, or an RFC 3339 date-time with an offset (normalized to epoch ms). "
        "Must lie in [2000-01-01, 2100-01-01) UTC.",
        {
            "anyOf": [
                {"type": "integer", "minimum": codec.MIN_TS_MS, "exclusiveMaximum": codec.MAX_TS_MS},
                {"type": "string", "format": "date-time", "pattern": "^" + codec._RFC3339.pattern + "$"},
            ]
        },
    ),
    "type": ("What the shopper did.", {"type": "string", "enum": list(EVENT_TYPES)}),
    "session_id": (
        "Explicit session id; when absent the engine cuts sessions after 30 minutes of inactivity.",
        _OPTIONAL_ID,
    ),
    "item_id": ("Product id, for product-level events.", _OPTIONAL_ID),
    "category_id": ("Product category id.", _OPTIONAL_ID),
    "price": (
        "Unit price in the shop's currency; finite, >= 0.",
        {"type": ["number", "null"], "minimum": 0, "maximum": codec.MAX_PRICE},
    ),
    "quantity": (
        "Units, for cart and purchase events (default 1).",
        {"type": ["integer", "null"], "minimum": codec.MIN_QUANTITY, "maximum": codec.MAX_QUANTITY},
    ),
    "query": ("Search text, for search events.", {"type": ["string", "null"], "maxLength": codec.MAX_QUERY_CHARS}),
    "device": (
        "Device class, e.g. desktop, mobile, app.",
        {"type": ["string", "null"], "maxLength": codec.MAX_DEVICE_CHARS},
    ),
}

INTENT_RULES: dict[str, tuple[str, dict]] = {
    "intent_id": (
        "Deterministic id: the same click scored by the same model version gives the same id (dedupe on it).",
        {"pattern": "^[0-9a-f]{32}$"},
    ),
    "user_id": ("Shopper id (also the message key).", {}),
    "session_id": ("Session the click belongs to (explicit, or `user_id:start_ms` when cut by inactivity).", {}),
    "event_id": ("event_id of the triggering click.", {}),
    "event_ts": ("Event time of the triggering click, epoch ms.", {}),
    "p_purchase": ("Probability that this session reaches a purchase after this event.", {"minimum": 0, "maximum": 1}),
    "intent": (
        "Coarse level of p_purchase (default thresholds: low < 0.3 <= medium < 0.7 <= high).",
        {"enum": list(INTENT_LEVELS)},
    ),
    "model_version": ("Version of the model that produced the score.", {}),
    "session_events": ("Events in the session so far, this one included.", {"minimum": 1}),
    "cart_value": ("Value currently in the session's cart.", {"minimum": 0}),
    "recent_counts": ("Events of each type by this user in the last hour (keys are ClickEvent types).", {}),
    "scored_at": ("Wall-clock epoch ms when the score was computed.", {}),
    "latency_ms": ("scored_at minus the click's arrival at the worker.", {}),
}

DEAD_LETTER_RULES: dict[str, tuple[str, dict]] = {
    "error_code": ("Why the click was rejected.", {"enum": list(codec.ERROR_CODES)}),
    "error_message": ("Human-readable detail.", {}),
    "original": ("The exact bytes received, base64.", {}),
    "topic": ("Source topic.", {}),
    "partition": ("Source partition.", {"minimum": 0}),
    "offset": ("Source offset.", {"minimum": 0}),
    "failed_at": ("Wall-clock epoch ms when the click was rejected.", {}),
    "key": ("The original message key, base64, or null.", {}),
}


def _examples() -> dict[str, dict]:
    click = ClickEvent(
        event_id="ev-7f3a9c01", user_id="u-1042", ts=1_718_000_000_123, type="add_to_cart",
        session_id="s-88e1", item_id="sku-30071", category_id="shoes", price=59.9, quantity=1, device="mobile",
    )
    intent = IntentEvent(
        intent_id=codec.make_intent_id(click.event_id, click.user_id, "gru-2024-06-10"),
        user_id=click.user_id, session_id="s-88e1", event_id=click.event_id, event_ts=click.ts,
        p_purchase=0.4375, intent=codec.intent_level(0.4375), model_version="gru-2024-06-10",
        session_events=6, cart_value=59.9, recent_counts={"page_view": 3, "product_view": 2, "add_to_cart": 1},
        scored_at=1_718_000_000_131, latency_ms=2.6,
    )
    dead = DeadLetter(
        error_code="bad_value", error_message="price must be finite and within [0, 1e+09], got -5.0",
        original=b'{"event_id":"ev-1","user_id":"u-1","ts":1718000000000,"type":"purchase","price":-5}',
        topic="clickstream", partition=3, offset=120_442, failed_at=1_718_000_000_200, key=b"u-1",
    )
    return {
        "click_event": codec.click_to_dict(click),
        "intent_event": codec.intent_to_dict(intent),
        "dead_letter": codec.dead_letter_to_dict(dead),
    }


EXAMPLES = _examples()


def _property(cls, field: dataclasses.Field, rules: dict[str, tuple[str, dict]]) -> dict:
    if field.name not in rules:
        raise KeyError(f"{cls.__name__}.{field.name} has no schema rule in schemas/jsonschema.py")
    description, rule = rules[field.name]
    annotation = str(field.type).removesuffix(" | None")
    if annotation not in _BASE_TYPES:
        raise KeyError(f"{cls.__name__}.{field.name}: no JSON type for annotation {field.type!r}")
    prop = {"description": description}
    if "anyOf" not in rule:
        prop.update(_BASE_TYPES[annotation])
        if str(field.type).endswith("| None"):
            prop["type"] = [prop["type"], "null"]
    prop.update(rule)
    return prop


def _schema(cls, name: str, rules, required: list[str], additional: bool) -> dict:
    props = {"v": {"description": "Schema version.", "const": SCHEMA_VERSION}}
    for field in dataclasses.fields(cls):
        if field.name != "v":
            props[field.name] = _property(cls, field, rules)
    extra = set(rules) - set(props)
    if extra:
        raise KeyError(f"schema rules for fields {cls.__name__} does not have: {sorted(extra)}")
    return {
        "$schema": DRAFT,
        "$id": f"urn:intentstream:{name}:v{SCHEMA_VERSION}",
        "title": f"{cls.__name__} v{SCHEMA_VERSION}",
        "description": " ".join((cls.__doc__ or "").split()),
        "type": "object",
        "required": required,
        "properties": props,
        "additionalProperties": additional,
        "examples": [EXAMPLES[name]],
    }


def build_schemas() -> dict[str, dict]:
    """File name -> schema. Producers may add fields to clicks (ignored); our own outputs are closed."""
    intent_fields = [f.name for f in dataclasses.fields(IntentEvent)]
    dead_fields = [f.name for f in dataclasses.fields(DeadLetter)]
    return {
        f"click_event.v{SCHEMA_VERSION}.json": _schema(
            ClickEvent, "click_event", CLICK_RULES, list(codec.REQUIRED_CLICK_FIELDS), additional=True
        ),
        f"intent_event.v{SCHEMA_VERSION}.json": _schema(
            IntentEvent, "intent_event", INTENT_RULES, intent_fields, additional=False
        ),
        f"dead_letter.v{SCHEMA_VERSION}.json": _schema(
            DeadLetter, "dead_letter", DEAD_LETTER_RULES, dead_fields, additional=False
        ),
    }


def render(schema: dict) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2) + b"\n"


def drift(directory: Path = JSON_DIR) -> list[str]:
    """Names of schema files that are missing or differ from what the code generates."""
    return [name for name, schema in build_schemas().items()
            if not (directory / name).is_file() or (directory / name).read_bytes() != render(schema)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the files")
    mode.add_argument("--check", action="store_true", help="exit 1 if the files drifted from the code")
    parser.add_argument("--dir", type=Path, default=JSON_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.write:
        args.dir.mkdir(parents=True, exist_ok=True)
        for name, schema in build_schemas().items():
            (args.dir / name).write_bytes(render(schema))
            log.info("wrote %s", args.dir / name)
        return 0
    stale = drift(args.dir)
    for name in stale:
        log.error("%s is out of date: run python -m schemas.jsonschema --write", args.dir / name)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
