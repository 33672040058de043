"""Privacy on the real broker: pseudonyms from ingest on, and `forget` surviving a restore from changelog."""
from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from deploy.kafka.local_broker import free_port_pair
from schemas.events import ClickEvent
from streams import cli
from streams.privacy import Pseudonymizer
from streams.topics import ensure_topics
from tests.integration.helpers import (Pipeline, collect, make_model, produce, read_changelog, start_worker,
                                       stop_worker, tail, wait_for)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as r:
            return json.loads(r.read())["ready"]
    except (urllib.error.URLError, OSError, ValueError):
        return False


def metric(port: int, line_start: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def clicks(user: str, tag: str, start_ms: int, n: int, first: int = 0) -> list[ClickEvent]:
    """n product views in one explicit session, a minute apart, numbered from `first`. Event and session
    ids must not embed the user id (they travel unpseudonymized): they use `tag` instead."""
    return [ClickEvent(event_id=f"{tag}-e{k}", user_id=user, session_id=f"{tag}-s", ts=start_ms + k * 60_000,
                       type="product_view", item_id=f"i{k}", price=10.0 + k) for k in range(first, first + n)]


def test_pseudonymized_ids_and_forget_survives_restore_from_changelog(kafka_bootstrap: str, unique: str,
                                                                      tmp_path: Path, monkeypatch) -> None:
    pipe = Pipeline.unique(kafka_bootstrap, unique)
    ensure_topics(kafka_bootstrap, {pipe.clicks: 3, pipe.intents: 3, pipe.dlq: 1})
    model = make_model(tmp_path / "model", hidden_size=16)
    key = f"secret-{unique}"
    env = {"INTENTSTREAM_PSEUDONYM_KEY": key}
    for name, value in {**env, "INTENTSTREAM_BOOTSTRAP": kafka_bootstrap, "INTENTSTREAM_APP_ID": pipe.app_id,
                        "INTENTSTREAM_PARTITIONS": "3"}.items():
        monkeypatch.setenv(name, value)
    pseudo = Pseudonymizer(key)
    alice, bob = f"alice-{unique}", f"bob-{unique}"
    t0 = int(time.time() * 1000) - 3_600_000
    first = clicks(alice, "a", t0, 5) + clicks(bob, "b", t0, 5)

    def intents_for(events) -> dict[str, dict]:
        ids = {e.event_id for e in events}
        got = [orjson.loads(r.value) for r in collect(kafka_bootstrap, pipe.intents, lambda rs: ids <= {
            orjson.loads(r.value)["event_id"] for r in rs}, timeout_s=60)]
        return {i["event_id"]: i for i in got if i["event_id"] in ids}

    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    port = free_port_pair()
    worker = start_worker(pipe, tmp_path / "state", logs[0], ["--model", str(model), "--web-port", str(port)], env)
    try:
        wait_for(lambda: ready(port), 90, what="worker ready")
        produce(kafka_bootstrap, pipe.clicks, first)
        got = intents_for(first)
        assert len(got) == 10, tail(logs[0])
        assert {i["user_id"] for i in got.values()} == {pseudo(alice), pseudo(bob)}
        records = collect(kafka_bootstrap, pipe.intents, lambda rs: len(rs) >= 10)
        raw = b"".join(r.value + (r.key or b"") for r in records)
        assert alice.encode() not in raw and bob.encode() not in raw  # neither in intent values nor keys

        assert cli.main(["forget", alice]) == 0
        wait_for(lambda: metric(port, 'intentstream_erasures_total{outcome="erased"}') == 1, 30, what="erasure")
    finally:
        stop_worker(worker)

    changelog = read_changelog(kafka_bootstrap, f"{pipe.app_id}-users-changelog")
    assert changelog[pseudo(alice).encode()] is None  # the tombstone
    assert changelog[pseudo(bob).encode()] is not None
    stored = b"".join(k + (v or b"") for k, v in changelog.items())
    assert alice.encode() not in stored and bob.encode() not in stored  # neither in keys nor in states

    # Lose the local state entirely: the new worker restores the table from the changelog.
    shutil.rmtree(tmp_path / "state")
    port = free_port_pair()
    worker = start_worker(pipe, tmp_path / "state", logs[1], ["--model", str(model), "--web-port", str(port)], env)
    try:
        wait_for(lambda: ready(port), 90, what="restored worker ready")
        later = clicks(alice, "a", t0, 1, first=5) + clicks(bob, "b", t0, 1, first=5)
        produce(kafka_bootstrap, pipe.clicks, later)
        got = intents_for(later)
    finally:
        stop_worker(worker)
    # Bob's session went on from the restored state; Alice's state was gone, so hers starts over.
    assert got["b-e5"]["session_events"] == 6
    assert got["a-e5"]["session_events"] == 1
    for log in logs:
        text = log.read_text(errors="replace")
        assert alice not in text and bob not in text, "a clear user id was logged"
