"""The scoring worker end to end on the real broker: clicks in, one intent per valid click out."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from models import artifacts
from models.offline import offline_scores
from models.simulator import SimConfig, simulate
from schemas.codec import decode_dead_letter, encode_click
from schemas.events import ClickEvent
from streams.topics import ensure_topics
from tests.integration.conftest import REPO_ROOT
from tests.integration.helpers import (
    Pipeline, collect, commit_positions, decode_all, intents_by_event, produce, read_changelog, read_to_end,
    start_worker, stop_worker, tail, wait_until,
)

# Each poison message is (bytes, expected DLQ code); they go in mid-stream.
POISON = [
    (b"\x00\xff garbage", "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (orjson.dumps({"event_id": "p1", "user_id": "u-poison", "ts": 1_700_000_000_000}), "missing_field"),
    (orjson.dumps({"event_id": "p2", "user_id": "u-poison", "ts": 1_700_000_000_000, "type": "teleport"}),
     "unknown_event_type"),
    (orjson.dumps({"event_id": "p3", "user_id": "u-poison", "ts": 1_700_000_000_000, "type": "purchase",
                   "price": -3}), "bad_value"),
]


def check_intents(events: list[ClickEvent], intents: list[dict], log_path: Path) -> tuple[dict, float]:
    """One intent per event (re-deliveries may repeat one, but only as an exact copy), each user's intents in
    the order of the user's events, and live equal to offline: the same model over the same events in a
    full-sequence pass. Returns the intents by event id and the largest live-offline difference."""
    by_id: dict[str, list[dict]] = defaultdict(list)
    for intent in intents:
        by_id[intent["event_id"]].append(intent)
    assert set(by_id) == {e.event_id for e in events}, tail(log_path)
    assert all(all(x == v[0] for x in v) for v in by_id.values())
    position = {e.event_id: i for i, e in enumerate(events)}
    seen: dict[str, int] = {}
    for intent in intents:
        i = position[intent["event_id"]]
        assert i >= seen.get(intent["user_id"], -1)
        seen[intent["user_id"]] = i
    art = artifacts.load()
    offline = offline_scores(events, art.model, art.spec)
    worst = max(abs(v[0]["p_purchase"] - offline[eid]) for eid, v in by_id.items())
    assert worst < 1e-5, worst
    assert {v[0]["model_version"] for v in by_id.values()} == {art.version}
    return by_id, worst


def test_worker_scores_every_valid_click_and_dead_letters_the_rest(kafka_bootstrap: str, unique: str,
                                                                    tmp_path: Path) -> None:
    pipe = Pipeline.unique(kafka_bootstrap, unique)
    ensure_topics(kafka_bootstrap, {pipe.clicks: 3, pipe.intents: 3, pipe.dlq: 1})
    events = [e for e, _p in simulate(SimConfig(n_users=300, n_days=3, seed=11))]
    n_valid = len(events)
    assert n_valid > 1000

    log_path = tmp_path / "worker.log"
    worker = start_worker(pipe, tmp_path / "state", log_path)
    try:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        half = n_valid // 2
        for ev in events[:half]:
            producer.send(pipe.clicks, key=ev.user_id.encode(), value=encode_click(ev))
        for raw, _code in POISON:
            producer.send(pipe.clicks, key=b"u-poison", value=raw)
        for ev in events[half:]:
            producer.send(pipe.clicks, key=ev.user_id.encode(), value=encode_click(ev))
        producer.flush()
        producer.close()

        intents = decode_all(collect(kafka_bootstrap, pipe.intents,
                                     lambda rs: len({orjson.loads(r.value)["event_id"] for r in rs}) >= n_valid,
                                     timeout_s=180))
        dead = [decode_dead_letter(r.value) for r in collect(kafka_bootstrap, pipe.dlq,
                                                             lambda rs: len(rs) >= len(POISON), timeout_s=30)]
        assert worker.poll() is None, "worker died:\n" + tail(log_path)
    finally:
        stop_worker(worker)

    by_id, _worst = check_intents(events, intents, log_path)
    duplicates = sum(len(v) - 1 for v in by_id.values())
    print(f"\n{n_valid} valid events, {len(intents)} intents, {duplicates} exact duplicates")

    assert Counter(d.error_code for d in dead) == Counter(code for _raw, code in POISON)
    assert {d.original for d in dead} == {raw for raw, _code in POISON}
    assert all(d.topic == pipe.clicks and d.offset >= 0 for d in dead)

    # The default two core processes both started with the model (how many of them score depends on the
    # load: streams/core_layout.py).
    serving = [line for line in log_path.read_text().splitlines() if "core process" in line and "serving" in line]
    assert len(serving) == 2 and len({line.split("core process ")[1].split()[0] for line in serving}) == 2, serving
    # The flood came fast enough for fuller fetches (streams/fetch_pacing.py).
    assert "fetch pacing on" in log_path.read_text(), tail(log_path)
    # Faust's fetcher read the replaced callback: records skipped the conductor (streams/fast_drain.py).
    assert "consumed records go straight to the agent's queue" in log_path.read_text(), tail(log_path)
    assert "the consumer's fetches are walked in bulk" in log_path.read_text(), tail(log_path)


def test_a_restart_after_the_stream_went_quiet_re_emits_nothing(kafka_bootstrap: str, unique: str,
                                                                tmp_path: Path) -> None:
    """Each partition's progress records its last batch as delivered once the broker has its intents,
    even when no later batch follows; so a rolling restart of an idle worker repeats no intent."""
    pipe = Pipeline.unique(kafka_bootstrap, unique)
    ensure_topics(kafka_bootstrap, {pipe.clicks: 3, pipe.intents: 3, pipe.dlq: 1})
    events = [e for e, _p in simulate(SimConfig(n_users=40, n_days=1, seed=23))]
    users = sorted({e.user_id for e in events})
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)

    def send(clicks) -> None:
        for ev in clicks:
            producer.send(pipe.clicks, key=ev.user_id.encode(), value=encode_click(ev))
        producer.flush()

    def progress() -> dict[bytes, tuple[int, ...]]:
        changelog = read_changelog(kafka_bootstrap, f"{pipe.app_id}-progress-changelog")
        return {k: tuple(map(int, v.split())) for k, v in changelog.items() if v is not None}

    log_path = tmp_path / "worker.log"
    send(events)
    worker = start_worker(pipe, tmp_path / "first", log_path)
    try:
        first = collect(kafka_bootstrap, pipe.intents, lambda rs: len(rs) >= len(events), timeout_s=180)
        assert len(first) >= len(events), tail(log_path)
        # every partition's record: processed through its end, and delivered through the same offset
        assert wait_until(lambda: len(progress()) == 3 and all(len(set(v)) == 1 for v in progress().values()),
                          30), f"{progress()}\n{tail(log_path)}"
    finally:
        stop_worker(worker)
    assert worker.returncode == 0, tail(log_path)

    # A new owner (its own, empty state dir), then one more click per user: every partition gets a batch.
    later = [ClickEvent(f"later-{unique}-{i}", u, events[-1].ts + 60_000, "page_view") for i, u in enumerate(users)]
    worker = start_worker(pipe, tmp_path / "second", log_path)
    try:
        send(later)
        collect(kafka_bootstrap, pipe.intents, lambda rs: len(rs) >= len(first) + len(later), timeout_s=180)
    finally:
        stop_worker(worker)
        producer.close()
    assert worker.returncode == 0, tail(log_path)
    # Everything either worker published (a clean stop delivers what is in flight), not only what came first:
    # a repeat published a moment later must count too.
    intents = decode_all(read_to_end(kafka_bootstrap, pipe.intents))
    counts = Counter(i["event_id"] for i in intents)
    assert {e.event_id for e in later} <= set(counts), tail(log_path)
    assert "re-emitted" not in log_path.read_text(), tail(log_path)
    repeated = sorted(event_id for event_id, n in counts.items() if n > 1)
    assert len(intents) == len(first) + len(later) and not repeated, f"repeated: {repeated}\n{tail(log_path)}"


def test_a_clean_stop_while_busy_leaves_nothing_to_re_emit(kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    """A stopping worker finishes the batches it took, records them delivered and only then acks them
    (Faust waits for those acks before closing the tables); the next owner re-emits none of them."""
    pipe = Pipeline.unique(kafka_bootstrap, unique)
    ensure_topics(kafka_bootstrap, {pipe.clicks: 3, pipe.intents: 3, pipe.dlq: 1})
    events = [e for e, _p in simulate(SimConfig(n_users=600, n_days=3, seed=29))]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    for ev in events:
        producer.send(pipe.clicks, key=ev.user_id.encode(), value=encode_click(ev))
    producer.flush()
    producer.close()

    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    # small batches, so the backlog lasts well past the first intent
    worker = start_worker(pipe, tmp_path / "first", first_log, extra=["--max-batch", "128"])
    try:
        started = collect(kafka_bootstrap, pipe.intents, lambda rs: len(rs) >= 1, timeout_s=120)
        assert started, tail(first_log)
    finally:
        stop_worker(worker)  # SIGTERM while it works through the backlog
    assert worker.returncode == 0, tail(first_log)
    scored_first = len(read_to_end(kafka_bootstrap, pipe.intents))
    assert scored_first < len(events), "the first worker finished before the stop: nothing was tested"

    worker = start_worker(pipe, tmp_path / "second", second_log)
    try:
        intents = decode_all(collect(kafka_bootstrap, pipe.intents,
                                     lambda rs: len({orjson.loads(r.value)["event_id"] for r in rs}) >= len(events),
                                     timeout_s=180))
    finally:
        stop_worker(worker)
    by_id, duplicates = intents_by_event(intents)  # duplicates only as exact copies
    if set(by_id) != {e.event_id for e in events}:
        clicks = read_to_end(kafka_bootstrap, pipe.clicks)
        missing = sorted((r.partition, r.offset) for r in clicks
                         if orjson.loads(r.value)["event_id"] not in by_id)
        changelog = read_changelog(kafka_bootstrap, f"{pipe.app_id}-progress-changelog")
        raise AssertionError(f"{len(missing)} clicks never scored, (partition, offset): {missing[:5]}..{missing[-5:]}; "
                             f"commits {commit_positions(kafka_bootstrap, pipe.app_id, pipe.clicks)}; "
                             f"progress {changelog}\n{tail(second_log)}")
    assert "re-emitted: the last batch" not in second_log.read_text(), tail(second_log)
    print(f"\nstopped after {scored_first} of {len(events)} intents; {duplicates} exact duplicates after the restart")


@pytest.mark.parametrize("lost", ["last", "all"])
def test_records_lost_at_the_end_of_a_partitions_traffic_are_fetched_again(kafka_bootstrap: str, unique: str,
                                                                             tmp_path: Path, lost: str) -> None:
    """faust-streaming can lose records it fetched (the client moves past them, the agent never gets them).
    At the end of a partition's traffic no later record reveals the hole, so only unstall_fetching's
    timer brings them back. The worker here runs with the last records of one partition lost on purpose
    (tests/integration/apps/worker_dropping_fetched.py), or all of them: then the partition has neither
    progress nor a committed offset to resume from. Every click must still get its intent."""
    pipe = Pipeline.unique(kafka_bootstrap, unique)
    ensure_topics(kafka_bootstrap, {pipe.clicks: 3, pipe.intents: 3, pipe.dlq: 1})
    events = [e for e, _p in simulate(SimConfig(n_users=60, n_days=1, seed=31))]
    produce(kafka_bootstrap, pipe.clicks, events)
    in_partition_0 = sum(1 for r in read_to_end(kafka_bootstrap, pipe.clicks) if r.partition == 0)
    assert in_partition_0 > 20

    log_path = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.apps.worker_dropping_fetched", *pipe.worker_args(tmp_path / "w")],
        cwd=REPO_ROOT, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "DROP_TOPIC": pipe.clicks, "DROP_PARTITION": "0",
             "DROP_FROM": str(in_partition_0 - 10 if lost == "last" else 0)})
    try:
        intents = decode_all(collect(kafka_bootstrap, pipe.intents, lambda rs: len(rs) >= len(events), timeout_s=120))
    finally:
        stop_worker(worker)
    log = log_path.read_text(errors="replace")
    assert "dropped fetched offsets" in log, tail(log_path)  # the loss happened
    missing = {e.event_id for e in events} - {i["event_id"] for i in intents}
    assert not missing, f"{len(missing)} clicks without an intent\n{tail(log_path)}"
    assert "fetching them again" in log, tail(log_path)


def test_changing_core_layouts_lose_nothing_and_keep_every_state_exact(kafka_bootstrap: str, unique: str,
                                                                        tmp_path: Path) -> None:
    """Thresholds that make the worker move its partitions between one and two core processes every few
    seconds (streams/core_layout.py) while clicks flow: every click still gets exactly one intent (or exact
    copies), in each user's order, with the score the offline model gives; a core that kept a state cached
    from before a move would score from a stale state and miss the offline score."""
    import time

    pipe = Pipeline.unique(kafka_bootstrap, unique)
    ensure_topics(kafka_bootstrap, {pipe.clicks: 3, pipe.intents: 3, pipe.dlq: 1})
    events = [e for e, _p in simulate(SimConfig(n_users=200, n_days=3, seed=12))]
    log_path = tmp_path / "worker.log"
    # spread as soon as a core did any work; gather after 5 s "calm" (always, under 100 s/s): they alternate
    worker = start_worker(pipe, tmp_path / "state", log_path,
                          extra=["--cores-spread-load", "0", "--cores-gather-load", "100"])
    try:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        chunks = 24
        for i in range(chunks):  # ~24 s of clicks: the layout changes several times meanwhile
            for ev in events[i * len(events) // chunks:(i + 1) * len(events) // chunks]:
                producer.send(pipe.clicks, key=ev.user_id.encode(), value=encode_click(ev))
            producer.flush()
            time.sleep(1.0)
        producer.close()
        intents = decode_all(collect(kafka_bootstrap, pipe.intents,
                                     lambda rs: len({orjson.loads(r.value)["event_id"] for r in rs}) >= len(events),
                                     timeout_s=120))
        assert worker.poll() is None, "worker died:\n" + tail(log_path)
    finally:
        stop_worker(worker)

    layouts = [line for line in log_path.read_text().splitlines() if "core layout" in line]
    assert len(layouts) >= 3 and any("2 of 2" in line for line in layouts) and any("1 of 2" in line for line in layouts), \
        layouts or tail(log_path)
    # ~80 clicks/s keep the cores far under 0.3 s/s: batches went at once instead of waiting to fill
    # (streams/batch_wait.py; a worker starts waiting, for a backlog)
    assert "batches go at once" in log_path.read_text(), tail(log_path)
    _by_id, worst = check_intents(events, intents, log_path)
    print(f"\n{len(events)} events over {len(layouts)} core layouts; worst live-offline gap {worst:.2e}")
