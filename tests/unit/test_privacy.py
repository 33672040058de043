"""Pseudonymization and erasure records, without a broker."""
from __future__ import annotations

import hashlib
import hmac
import logging
from collections import defaultdict

import orjson
import pytest
import torch

from kafka.partitioner.default import murmur2

from models import artifacts
from models.features import FeatureSpec
from models.gru import GRUConfig, IntentGRU
from models.simulator import SimConfig, simulate
from models.state import UserState
from schemas.codec import decode_dead_letter, encode_click
from streams.pipeline import Pipeline, Record
from streams.privacy import (PSEUDONYM_PREFIX, Pseudonymizer, erasure_request, kafka_partition, loggable,
                             parse_erasure)
from streams.scorer import Scorer


def test_pseudonym_is_the_keyed_hmac_and_depends_on_the_key() -> None:
    p = Pseudonymizer("secret-1")
    want = hmac.new(b"secret-1", b"u42", hashlib.sha256).hexdigest()[:32]
    assert p("u42") == PSEUDONYM_PREFIX + want
    assert p("u42") == p("u42") and p("u42") != p("u43")
    assert Pseudonymizer("secret-2")("u42") != p("u42")
    assert p.key_id != Pseudonymizer("secret-2").key_id
    with pytest.raises(ValueError):
        Pseudonymizer("")


# Test vectors of Kafka's Java Utils.murmur2 (UtilsTest), as signed 32-bit ints.
JAVA_MURMUR2 = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536, "abc": 479470107}


def test_partition_matches_the_java_default_partitioner() -> None:
    for key, signed in JAVA_MURMUR2.items():
        assert murmur2(key.encode()) == signed & 0xFFFFFFFF
        assert kafka_partition(key.encode(), 7) == (signed & 0x7FFFFFFF) % 7  # Utils.toPositive(h) % n
    assert len({kafka_partition(f"u{i}".encode(), 6) for i in range(100)}) == 6


def test_erasure_request_carries_only_the_pseudonym_and_targets_the_clear_ids_partition() -> None:
    p = Pseudonymizer("k")
    partition, key, value = erasure_request("alice", p, 6)
    assert partition == kafka_partition(b"alice", 6)
    assert key == p("alice").encode()
    assert b"alice" not in key + value
    assert parse_erasure(value, p) == (p("alice"), "ok")
    # The worker refuses a request made with another key (it would erase nothing), or a malformed one.
    assert parse_erasure(value, Pseudonymizer("other")) == (None, "key_mismatch")
    assert parse_erasure(value, None) == (None, "key_mismatch")
    assert parse_erasure(b"{not json", p) == (None, "malformed")
    assert parse_erasure(orjson.dumps({"action": "forget"}), p) == (None, "malformed")
    # Without pseudonymization the stored id is the clear id.
    _part, key, value = erasure_request("bob", None, 6)
    assert key == b"bob" and parse_erasure(value, None) == ("bob", "ok")


def test_loggable_never_returns_a_clear_id() -> None:
    assert loggable("alice") != "alice" and "alice" not in loggable("alice")
    pseudo = Pseudonymizer("k")("alice")
    assert loggable(pseudo) == pseudo


def _scorer(tmp_path) -> Scorer:
    torch.manual_seed(0)
    spec = FeatureSpec()
    artifacts.save(IntentGRU(GRUConfig.from_spec(spec, hidden_size=8)), {"threshold": 0.5}, tmp_path / "m", spec)
    return Scorer(artifacts.load(tmp_path / "m"), device="cpu")


def test_pipeline_pseudonymizes_after_the_key_check_and_never_logs_clear_ids(tmp_path, caplog) -> None:
    events = [e for e, _p in simulate(SimConfig(n_users=15, n_days=1, seed=4))]
    assert len(events) > 50
    p = Pseudonymizer("k")
    records, offsets = [], defaultdict(int)
    for ev in events:
        part = kafka_partition(ev.user_id.encode(), 3)
        records.append(Record(ev.user_id.encode(), encode_click(ev), "clicks", part, offsets[part], 0.0))
        offsets[part] += 1
    # A message keyed by another user: the check compares the key with the clear id and dead-letters it.
    bad = events[0]
    records.append(Record(b"someone-else", encode_click(bad), "clicks", 0, offsets[0], 0.0))
    store: dict[str, bytes] = {}

    def load(uid: str, _rec):
        return UserState.from_bytes(store[uid]) if uid in store else None

    with caplog.at_level(logging.DEBUG):
        result = Pipeline(_scorer(tmp_path), pseudonymize=p).process(records, load)
    clear = {e.user_id for e in events}
    assert set(result.states) == {p(u) for u in clear}
    assert len(result.intents) == len(events)
    for key, value in result.intents:
        intent = orjson.loads(value)
        assert key == intent["user_id"] and key.startswith(PSEUDONYM_PREFIX)
        assert intent["user_id"] not in clear
    assert [decode_dead_letter(v).error_code for _k, v in result.dead_letters] == ["key_mismatch"]
    assert not any(u in rec.getMessage() for rec in caplog.records for u in clear if len(u) > 2)
