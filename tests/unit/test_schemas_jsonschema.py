"""schemas/json/*.json: generated from the code, checked in, and in agreement with the decoder."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from schemas import codec
from schemas import jsonschema as gen
from schemas.events import ClickEvent

CORPUS = Path(__file__).parent / "malformed" / "clicks.jsonl"


def test_checked_in_files_match_the_code():
    assert gen.drift() == [], "schemas/json drifted from the code: run python -m schemas.jsonschema --write"


def test_check_command_detects_drift(tmp_path):
    assert gen.main(["--write", "--dir", str(tmp_path)]) == 0
    assert gen.main(["--check", "--dir", str(tmp_path)]) == 0
    path = tmp_path / "intent_event.v1.json"
    schema = orjson.loads(path.read_bytes())
    schema["properties"]["p_purchase"]["maximum"] = 2
    path.write_bytes(gen.render(schema))
    assert gen.main(["--check", "--dir", str(tmp_path)]) == 1


def test_every_dataclass_field_needs_a_rule(monkeypatch):
    monkeypatch.delitem(gen.CLICK_RULES, "device")
    with pytest.raises(KeyError, match="device"):
        gen.build_schemas()


def test_examples_are_valid_contract_messages():
    assert isinstance(codec.decode_click(orjson.dumps(gen.EXAMPLES["click_event"])), ClickEvent)
    codec.decode_intent(orjson.dumps(gen.EXAMPLES["intent_event"]))
    codec.decode_dead_letter(orjson.dumps(gen.EXAMPLES["dead_letter"]))


# With the jsonschema package, check that the schema agrees with the decoder on real inputs.
jsonschema = pytest.importorskip("jsonschema")


def _validator(name: str):
    schema = orjson.loads((gen.JSON_DIR / name).read_bytes())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_accepts_examples():
    for name, example in (("click_event.v1.json", "click_event"), ("intent_event.v1.json", "intent_event"),
                          ("dead_letter.v1.json", "dead_letter")):
        _validator(name).validate(gen.EXAMPLES[example])


def test_click_schema_rejects_what_the_decoder_rejects_structurally():
    # The schema cannot express isprintable, duplicate keys or exact calendar checks; everything else in the
    # corpus that parses as a JSON object must be rejected by both.
    semantic_only = {"newline in user_id", "NUL in event_id", "zero-width space in user_id",
                     "right-to-left override in item_id", "ts impossible date", "ts leap second",
                     "ts RFC 3339 far future", "ts RFC 3339 far past", "ts with offset hour 24",
                     "duplicate user_id key, last one null", "duplicate type key, last one unknown",
                     "duplicate price key, last one negative"}
    validator = _validator("click_event.v1.json")
    checked = 0
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        row = orjson.loads(line)
        try:
            obj = orjson.loads(row["text"].encode())
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict) or row["name"] in semantic_only:
            continue
        assert not validator.is_valid(obj), row["name"]
        checked += 1
    assert checked >= 30


def test_click_schema_accepts_what_the_decoder_accepts():
    from hypothesis import given, settings

    from tests.unit.test_schemas_codec import clicks

    validator = _validator("click_event.v1.json")

    @settings(max_examples=100, deadline=None)
    @given(clicks)
    def check(ev):
        obj = codec.click_to_dict(ev)
        assert codec.decode_click(orjson.dumps(obj)) == ev
        assert validator.is_valid(obj), list(validator.iter_errors(obj))

    check()


def test_contracts_doc_shows_the_current_examples():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "contracts.md").read_text(encoding="utf-8")
    for example in gen.EXAMPLES.values():
        assert orjson.dumps(example, option=orjson.OPT_INDENT_2).decode() in doc
    corpus_size = sum(1 for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip())
    assert f"lists {corpus_size} malformed messages" in doc
