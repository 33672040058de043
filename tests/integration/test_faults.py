"""Faults under load on the real broker: a worker SIGKILLed, a worker on an empty state dir, the broker
restarted. No event may lose its intent; duplicates only as exact copies; state equals a reference."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import orjson
import pytest

from deploy.kafka import local_broker
from models import artifacts
from models.offline import offline_scores
from models.simulator import SimConfig, simulate
from streams.topics import ensure_topics
from tests.integration.helpers import (
    Load,
    Pipeline,
    changelog_states,
    collect,
    decode_all,
    group_members,
    intents_by_event,
    locate,
    make_model,
    private_ops_env,
    produce,
    reference_states,
    spread,
    start_worker,
    stop_worker,
    tail,
    commit_lag_after,
    wait_for,
    window_mismatches,
)

PARTITIONS = 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "m", seed=5)


def _all_ids(n: int):
    return lambda rs: len({orjson.loads(r.value)["event_id"] for r in rs}) >= n


def _owners(bootstrap: str, group: str, topic: str, n: int):
    members = group_members(bootstrap, group)
    parts = spread(members, topic)
    ok = len(members) == n and all(parts) and sorted(p for s in parts for p in s) == list(range(PARTITIONS))
    return members if ok else None


def recovery_seconds(records, partitions: set[int], since: float) -> float | None:
    """From `since` (epoch s) to the first intent written to one of `partitions` after it (record time)."""
    times = [r.timestamp / 1000.0 for r in records if r.partition in partitions and r.timestamp / 1000.0 > since]
    return min(times) - since if times else None


def test_sigkill_worker_then_empty_state_dir_restores_from_changelog(kafka_bootstrap: str, unique: str,
                                                                      tmp_path: Path, model_dir: Path) -> None:
    pipe = Pipeline.unique(kafka_bootstrap, unique, partitions=PARTITIONS)
    ensure_topics(kafka_bootstrap, {pipe.clicks: PARTITIONS, pipe.intents: PARTITIONS, pipe.dlq: 1})
    events = [e for e, _p in simulate(SimConfig(n_users=400, n_days=2, seed=17))]
    cut = int(len(events) * 0.85)
    first, rest = events[:cut], events[cut:]
    env = private_ops_env(unique)
    logs = {n: tmp_path / f"{n}.log" for n in "abc"}

    def start(name: str):
        return start_worker(pipe, tmp_path / name, logs[name], ["--model", str(model_dir), "--standby-replicas", "1",
                                                                 "--max-batch", "64", "--session-timeout", "6"], env=env)

    workers = {"a": start("a"), "b": start("b")}
    try:
        before = wait_for(lambda: _owners(kafka_bootstrap, pipe.app_id, pipe.clicks, 2), 120, what="two members")
        load = Load(kafka_bootstrap, pipe.clicks, first, rate=len(first) / 20.0)
        wait_for(lambda: load.sent >= len(first) // 3, 60, what="a third of the load")
        stop_worker(workers.pop("a"), signal.SIGKILL)
        killed_at = time.time()
        after = wait_for(lambda: _owners(kafka_bootstrap, pipe.app_id, pipe.clicks, 1), 90, what="failover")
        moved = set().union(*(t.get(pipe.clicks, set()) for m, t in before.items() if m not in after))
        load.thread.join(timeout=120)
        records = collect(kafka_bootstrap, pipe.intents, _all_ids(len(first)), timeout_s=120)
        assert workers["b"].poll() is None, "survivor died:\n" + tail(logs["b"])

        # A worker on an empty state dir takes over everything and must restore it from the changelog.
        stop_worker(workers.pop("b"))
        workers["c"] = start("c")
        produce(kafka_bootstrap, pipe.clicks, rest)
        records = collect(kafka_bootstrap, pipe.intents, _all_ids(len(events)), timeout_s=150)
        assert workers["c"].poll() is None, "worker c died:\n" + tail(logs["c"])
        lag = commit_lag_after(kafka_bootstrap, pipe.app_id, pipe.clicks)
    finally:
        for proc in workers.values():
            stop_worker(proc)

    intents = decode_all(records)
    by_id, duplicates = intents_by_event(intents)  # duplicates only as exact copies
    missing = {e.event_id for e in events} - set(by_id)
    assert not missing, (f"{len(missing)} events lost: {locate(kafka_bootstrap, pipe.clicks, missing)}\n"
                         + tail(logs["b"]))
    recovery = recovery_seconds(records, moved, killed_at)
    print(f"\nSIGKILL of 1 of 2 workers ({len(first)} events at {len(first) / 20:.0f}/s): partitions {sorted(moved)} "
          f"moved, first intent on them {recovery:.1f}s after the kill; {duplicates} exact duplicates "
          f"({10_000 * duplicates / len(events):.1f} per 10k events); commits behind the end: {lag or 'none'}")
    assert moved and recovery is not None

    # Scores after failover and after the restore equal the offline full-sequence pass over all events:
    # a lost or double-applied event, or a missing hidden state, would shift them.
    art = artifacts.load(model_dir)
    offline = offline_scores(events, art.model, art.spec)
    worst = max(abs(copies[0]["p_purchase"] - offline[eid]) for eid, copies in by_id.items())
    assert worst < 1e-5, worst

    # Each user's rolling windows in the table (its changelog) equal the reference over the full input.
    live = changelog_states(kafka_bootstrap, pipe.app_id)
    reference = reference_states(events)
    assert not window_mismatches(live, reference, events[-1].ts)
    assert all(live[u].applied and live[u].session.n_events == reference[u].session.n_events for u in reference)


def test_broker_restart_mid_stream(tmp_path: Path, unique: str, model_dir: Path) -> None:
    # Its own broker: restarting the session broker would disturb every other test.
    cfg = local_broker.BrokerConfig(data_dir=tmp_path / "kafka", port=local_broker.free_port_pair())
    local_broker.start(cfg)
    bootstrap = cfg.bootstrap
    workers = {}
    try:
        pipe = Pipeline.unique(bootstrap, unique, partitions=2)
        ensure_topics(bootstrap, {pipe.clicks: 2, pipe.intents: 2, pipe.dlq: 1})
        events = [e for e, _p in simulate(SimConfig(n_users=200, n_days=2, seed=8))]
        env = private_ops_env(unique)
        workers = {n: start_worker(pipe, tmp_path / n, tmp_path / f"{n}.log",
                                   ["--model", str(model_dir), "--max-batch", "64", "--session-timeout", "30"],
                                   env=env) for n in "ab"}
        wait_for(lambda: len(group_members(bootstrap, pipe.app_id)) == 2, 120, what="two members")
        load = Load(bootstrap, pipe.clicks, events, rate=len(events) / 15.0)
        wait_for(lambda: load.sent >= len(events) // 3, 60, what="a third of the load")
        local_broker.stop(cfg)
        down_at = time.time()
        time.sleep(3)
        local_broker.start(cfg)
        up_at = time.time()
        load.thread.join(timeout=150)
        records = collect(bootstrap, pipe.intents, _all_ids(len(events)), timeout_s=150)
        for n, proc in workers.items():
            assert proc.poll() is None, f"worker {n} died:\n" + tail(tmp_path / f"{n}.log")
    finally:
        for proc in workers.values():
            stop_worker(proc)
        local_broker.stop(cfg)

    by_id, duplicates = intents_by_event(decode_all(records))
    missing = {e.event_id for e in events} - set(by_id)
    assert not missing, f"{len(missing)} events lost:\n" + tail(tmp_path / "a.log")
    resumed = [r.timestamp / 1000.0 for r in records if r.timestamp / 1000.0 > up_at]
    print(f"\nbroker down {up_at - down_at:.1f}s mid-stream: {len(events)} events, all answered; first intent "
          f"{(min(resumed) - up_at) if resumed else float('nan'):.1f}s after the broker was back; "
          f"{duplicates} exact duplicates")
