"""`intentstream replay` on the real broker: equals the live pipeline, resumes after SIGKILL, honours ranges."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from models.simulator import SimConfig, simulate
from streams.replay import ReplayConfig, parse_offsets, parse_time, run_replay
from streams.topics import ensure_topics
from tests.integration.conftest import REPO_ROOT
from tests.integration.helpers import (
    Pipeline,
    collect,
    decode_all,
    intents_by_event,
    make_model,
    private_ops_env,
    produce,
    start_worker,
    stop_worker,
    tail,
)

TIMING = ("scored_at", "latency_ms")  # when it was scored differs between live and replay, nothing else
POISON = [b"\x00 not json", orjson.dumps({"event_id": "bad", "user_id": "u-bad", "ts": 1, "type": "teleport"})]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "m", seed=7)


def _distinct_ids(n: int):
    return lambda rs: len({orjson.loads(r.value)["event_id"] for r in rs}) >= n


def test_replay_equals_live_and_resumes_after_sigkill(kafka_bootstrap: str, unique: str, tmp_path: Path,
                                                      model_dir: Path) -> None:
    pipe = Pipeline.unique(kafka_bootstrap, unique)
    ensure_topics(kafka_bootstrap, {pipe.clicks: 3, pipe.intents: 3, pipe.dlq: 1})
    events = [e for e, _p in simulate(SimConfig(n_users=250, n_days=2, seed=21))]
    assert len(events) > 800
    half = len(events) // 2
    produce(kafka_bootstrap, pipe.clicks, events[:half])
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for raw in POISON:
        producer.send(pipe.clicks, key=b"u-bad", value=raw)
    producer.close()
    produce(kafka_bootstrap, pipe.clicks, events[half:])

    # Live: one worker scores the topic.
    log_path = tmp_path / "worker.log"
    worker = start_worker(pipe, tmp_path / "worker-state", log_path, ["--model", str(model_dir)],
                          env=private_ops_env(unique))
    try:
        live = decode_all(collect(kafka_bootstrap, pipe.intents, _distinct_ids(len(events)), timeout_s=150))
        assert worker.poll() is None, "worker died:\n" + tail(log_path)
    finally:
        stop_worker(worker)
    live_by_id, _ = intents_by_event(live)
    assert set(live_by_id) == {e.event_id for e in events}, tail(log_path)

    # Replay, killed mid-way (paced so there is a "mid-way"), then resumed to the end.
    name = f"t-{unique}"
    state_dir = tmp_path / "replay-state"
    output = f"intents.backfill.{name}"
    cmd = [sys.executable, "-m", "streams.cli", "replay", "--name", name, "--bootstrap", kafka_bootstrap,
           "--topics", pipe.clicks, "--data-dir", str(state_dir), "--model", str(model_dir), "--device", "cpu",
           "--max-batch", "64", "--max-rate", "150", "--progress", "log"]
    replay_log = tmp_path / "replay.log"
    first = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=open(replay_log, "ab"), stderr=subprocess.STDOUT)
    try:
        partial = collect(kafka_bootstrap, output, lambda rs: len(rs) >= 200, timeout_s=90)
        assert first.poll() is None, "replay ended before it could be killed:\n" + tail(replay_log)
        assert 200 <= len(partial) < len(events)
    finally:
        stop_worker(first, signal.SIGKILL)
    resumed = run_replay(ReplayConfig(name=name, bootstrap=kafka_bootstrap, source_topics=(pipe.clicks,),
                                      data_dir=state_dir, model_dir=model_dir, device="cpu", progress="off"))
    assert resumed.resumed and 0 < resumed.events < len(events) + len(POISON)

    replayed = decode_all(collect(kafka_bootstrap, output, _distinct_ids(len(events)), timeout_s=60))
    replay_by_id, duplicates = intents_by_event(replayed)  # duplicates only as exact copies
    print(f"\nreplay killed after {len(partial)} intents, resumed: {resumed.events} events in "
          f"{resumed.seconds:.1f}s, re-sent {resumed.resent}; {duplicates} exact duplicates")
    assert set(replay_by_id) == set(live_by_id)

    # The same intents as live, field for field; p_purchase up to float noise of different batch shapes.
    worst = 0.0
    for event_id, (mine,) in ((k, v[:1]) for k, v in replay_by_id.items()):
        theirs = live_by_id[event_id][0]
        worst = max(worst, abs(mine["p_purchase"] - theirs["p_purchase"]))
        strip = lambda d: {k: v for k, v in d.items() if k not in TIMING and k != "p_purchase"}  # noqa: E731
        assert strip(mine) == strip(theirs), (mine, theirs)
    assert worst < 1e-6, worst

    dead = collect(kafka_bootstrap, f"{output}.dlq", lambda rs: len(rs) >= len(POISON), timeout_s=20)
    assert sorted(orjson.loads(r.value)["error_code"] for r in dead) == sorted(["not_json", "unknown_event_type"])

    # A finished replay run again has nothing left to do.
    again = run_replay(ReplayConfig(name=name, bootstrap=kafka_bootstrap, source_topics=(pipe.clicks,),
                                    data_dir=state_dir, model_dir=model_dir, device="cpu", progress="off"))
    assert again.events == 0 and again.intents == 0


def test_replay_time_range_and_end_captured_at_start(kafka_bootstrap: str, unique: str, tmp_path: Path,
                                                      model_dir: Path) -> None:
    clicks = f"clicks-{unique}"
    ensure_topics(kafka_bootstrap, {clicks: 2})
    events = [e for e, _p in simulate(SimConfig(n_users=120, n_days=3, seed=4))]
    produce(kafka_bootstrap, clicks, events)  # record time = event time; the simulator emits in time order
    t0 = events[len(events) // 4].ts
    t1 = events[3 * len(events) // 4].ts
    config = ReplayConfig(name=f"range-{unique}", bootstrap=kafka_bootstrap, source_topics=(clicks,),
                          data_dir=tmp_path / "state", from_time_ms=t0, to_time_ms=t1, model_dir=model_dir,
                          device="cpu", progress="off")
    result = run_replay(config)
    expected = {e.event_id for e in events if t0 <= e.ts < t1}
    got = decode_all(collect(kafka_bootstrap, config.output, _distinct_ids(len(expected)), timeout_s=30))
    assert {i["event_id"] for i in got} == expected
    assert result.events == len(expected) == result.intents

    # Records that arrive after the start are outside the captured end: a rerun with --fresh sees them,
    # the stored plan does not.
    late = [e for e, _p in simulate(SimConfig(n_users=5, n_days=1, seed=99, start_ms=events[-1].ts + 1))]
    produce(kafka_bootstrap, clicks, late)
    assert run_replay(config).events == 0
    everything = run_replay(ReplayConfig(name=f"all-{unique}", bootstrap=kafka_bootstrap, source_topics=(clicks,),
                                         data_dir=tmp_path / "state-all", model_dir=model_dir, device="cpu",
                                         progress="off", fresh=True))
    assert everything.events == len(events) + len(late)


def test_range_flags_parse() -> None:
    assert parse_offsets("0=5, clicks-b:2=7", ("clicks-a", "clicks-b")) == {
        "clicks-a/0": 5, "clicks-b/0": 5, "clicks-b/2": 7}
    with pytest.raises(ValueError):
        parse_offsets("0:5", ("t",))
    assert parse_time("1700000000000") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20Z") == parse_time("2023-11-14T22:13:20") == 1_700_000_000_000
    assert parse_time("2023-11-14T23:13:20+01:00") == 1_700_000_000_000
