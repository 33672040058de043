"""User state in the RocksDB table survives losing the worker and its disk, and re-delivery is harmless."""
from __future__ import annotations

import shutil
import signal
from pathlib import Path

import orjson
from kafka import KafkaProducer

from models.simulator import SimConfig, simulate
from models.state import UserState
from schemas.codec import encode_click
from streams.topics import ensure_topics
from tests.integration.helpers import (
    Pipeline, collect, end_offsets, group_caught_up, read_changelog, read_persisted_offsets, read_table_files,
    read_to_end, rewind_group, start_worker, stop_worker, tail, wait_until,
)


def test_state_restores_from_changelog_and_redelivery_changes_nothing(kafka_bootstrap: str, unique: str,
                                                                      tmp_path: Path) -> None:
    pipe = Pipeline.unique(kafka_bootstrap, unique)
    ensure_topics(kafka_bootstrap, {pipe.clicks: 3, pipe.intents: 3, pipe.dlq: 1})
    events = [e for e, _p in simulate(SimConfig(n_users=150, n_days=2, seed=5))]
    changelog = f"{pipe.app_id}-users-changelog"
    data_dir, log_path = tmp_path / "state", tmp_path / "worker.log"

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    for ev in events:
        producer.send(pipe.clicks, key=ev.user_id.encode(), value=encode_click(ev))
    producer.flush()

    # 1. Process everything, then crash (SIGKILL: no clean shutdown).
    worker = start_worker(pipe, data_dir, log_path)
    try:
        first = collect(kafka_bootstrap, pipe.intents, lambda rs: len(rs) >= len(events), timeout_s=180)
        assert len(first) >= len(events), tail(log_path)
        assert wait_until(lambda: group_caught_up(kafka_bootstrap, pipe.app_id, pipe.clicks), 30), tail(log_path)
    finally:
        stop_worker(worker, signal.SIGKILL)
    on_disk = read_table_files(data_dir)
    logged = {k: v for k, v in read_changelog(kafka_bootstrap, changelog).items() if v is not None}
    users = {e.user_id.encode() for e in events}
    assert set(logged) == users
    assert on_disk == logged  # the local RocksDB and its changelog agree
    # ... and it records having all of the changelog, so a restart on this disk re-reads none of it.
    assert read_persisted_offsets(data_dir) == {p: end - 1 for p, end in end_offsets(kafka_bootstrap, changelog).items()
                                                if end > 0}
    for key, value in logged.items():
        state = UserState.from_bytes(value)
        assert state.user_id.encode() == key and state.session is not None

    # 2. Lose the disk; the restarted worker rebuilds the table from the changelog alone.
    shutil.rmtree(data_dir)
    probe = next(e for e in events if e.user_id == events[-1].user_id)
    worker = start_worker(pipe, data_dir, log_path)
    try:
        # A click for a new user: its intent appears only after table recovery has finished.
        newcomer = type(probe)(event_id=f"probe-{unique}", user_id=f"newcomer-{unique}", ts=probe.ts, type="page_view")
        producer.send(pipe.clicks, key=newcomer.user_id.encode(), value=encode_click(newcomer))
        producer.flush()
        got = collect(kafka_bootstrap, pipe.intents,
                      lambda rs: any(orjson.loads(r.value)["event_id"] == newcomer.event_id for r in rs), timeout_s=120)
        assert any(orjson.loads(r.value)["event_id"] == newcomer.event_id for r in got), tail(log_path)
        assert wait_until(lambda: group_caught_up(kafka_bootstrap, pipe.app_id, pipe.clicks), 30)
    finally:
        stop_worker(worker)
    restored = read_table_files(data_dir)
    assert {k: v for k, v in restored.items() if k in users} == logged

    # 3. Re-deliver every applied offset: states stay byte-identical, re-emitted intents are exact copies.
    rewind_group(kafka_bootstrap, pipe.app_id, pipe.clicks)
    before = read_changelog(kafka_bootstrap, changelog)
    intents_before = read_to_end(kafka_bootstrap, pipe.intents)
    seen_before = {(r.partition, r.offset) for r in intents_before}
    original = {orjson.loads(r.value)["event_id"]: r.value for r in intents_before}
    worker = start_worker(pipe, data_dir, log_path)
    try:
        assert wait_until(lambda: group_caught_up(kafka_bootstrap, pipe.app_id, pipe.clicks), 120), tail(log_path)
    finally:
        stop_worker(worker)
    producer.close()
    after = read_changelog(kafka_bootstrap, changelog)
    assert after == before
    replayed = [r for r in read_to_end(kafka_bootstrap, pipe.intents) if (r.partition, r.offset) not in seen_before]
    assert replayed, "re-delivered clicks should re-emit their most recent intents"
    assert all(r.value == original[orjson.loads(r.value)["event_id"]] for r in replayed)
    print(f"\n{len(events)} events, {len(logged)} users restored, {len(replayed)} intents re-emitted on re-delivery")
