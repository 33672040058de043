"""Shared pieces of the integration tests: real worker processes, producing and collecting topics."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from kafka import KafkaConsumer

from deploy.kafka.local_broker import free_port_pair
from tests.integration.conftest import REPO_ROOT


@dataclass
class Pipeline:
    """Names of one test's private pipeline."""

    bootstrap: str
    app_id: str
    clicks: str
    intents: str
    dlq: str
    partitions: int = 3

    @classmethod
    def unique(cls, bootstrap: str, suffix: str, partitions: int = 3) -> "Pipeline":
        return cls(bootstrap, f"app-{suffix}", f"clicks-{suffix}", f"intents-{suffix}", f"dlq-{suffix}", partitions)

    def worker_args(self, data_dir: Path, web_port: int | None = None) -> list[str]:
        return ["worker", "--bootstrap", self.bootstrap, "--app-id", self.app_id, "--topics", self.clicks,
                "--intents-topic", self.intents, "--dlq-topic", self.dlq, "--partitions", str(self.partitions),
                "--data-dir", str(data_dir), "--web-port", str(web_port or free_port_pair())]


def start_worker(pipeline: Pipeline, data_dir: Path, log_path: Path, extra: list[str] | None = None,
                 env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", *pipeline.worker_args(data_dir), *(extra or [])],
        cwd=REPO_ROOT, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def stop_worker(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def collect(bootstrap: str, topic: str, until, timeout_s: float = 120.0, group: str | None = None) -> list:
    """Read `topic` from the beginning until `until(records)` is true or the timeout passes."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=group,
                             enable_auto_commit=False)
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(records):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def decode_all(records) -> list[dict]:
    return [orjson.loads(r.value) for r in records]


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


class Load:
    """Sends events at a fixed rate in a thread and counts what it has sent."""

    def __init__(self, bootstrap: str, topic: str, events: list, rate: float):
        self.sent = 0

        def counted():
            for ev in events:
                yield ev
                self.sent += 1

        self.thread = threading.Thread(target=produce, args=(bootstrap, topic, counted(), rate), daemon=True)
        self.thread.start()


def read_to_end(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list:
    """Every record of `topic` up to the end offsets at the time of the call (deterministic, unlike
    polling for a while): in partition order, then offset order."""
    from kafka import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    records: list = []
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s}s")
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(r for r in batch if r.offset < end[TopicPartition(r.topic, r.partition)])
    finally:
        consumer.close()
    return sorted(records, key=lambda r: (r.partition, r.offset))


def locate(bootstrap: str, topic: str, event_ids) -> str:
    """Where lost events sit in the source topic ("event_id@partition/offset"), for failure messages."""
    wanted = set(event_ids)
    found = [(r.partition, r.offset, orjson.loads(r.value).get("event_id")) for r in read_to_end(bootstrap, topic)]
    return ", ".join(f"{e}@{p}/{o}" for p, o, e in found if e in wanted)


def read_changelog(bootstrap: str, topic: str) -> dict[bytes, bytes | None]:
    """Last value per key of a (compacted) changelog topic; None = tombstone."""
    return {r.key: r.value for r in read_to_end(bootstrap, topic)}


def read_table_files(data_dir: Path, table: str = "users") -> dict[bytes, bytes]:
    """Every key of a stopped worker's RocksDB table partitions, read straight from disk."""
    from rocksdict import AccessType, Rdict

    merged: dict[bytes, bytes] = {}
    for path in sorted((data_dir / "v1" / "tables").glob(f"{table}-*.db")):
        db = Rdict(str(path), access_type=AccessType.read_only())
        try:
            # Faust keeps each partition's changelog offset under a reserved key beside the data.
            merged.update({k: v for k, v in db.items() if not k.startswith(b"__faust\x00")})
        finally:
            db.close()
    return merged


def read_persisted_offsets(data_dir: Path, table: str = "users") -> dict[int, int]:
    """partition -> the changelog offset a stopped worker's RocksDB table says it holds everything through."""
    from rocksdict import AccessType, Rdict

    offsets = {}
    for path in sorted((data_dir / "v1" / "tables").glob(f"{table}-*.db")):
        db = Rdict(str(path), access_type=AccessType.read_only())
        try:
            stored = db.get(b"__faust\x00offset__")
            if stored is not None:
                offsets[int(path.stem.rsplit("-", 1)[1])] = int(stored)
        finally:
            db.close()
    return offsets


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """partition -> the topic's end offset (the next offset to be written)."""
    from kafka import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return {tp.partition: end for tp, end in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def commit_positions(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int | None, int]]:
    """partition -> (the group's committed offset, the end offset)."""
    from kafka import TopicPartition

    # A consumer that never subscribes does not join the group; it only fetches the group's offsets.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        end = consumer.end_offsets(parts)
        return {tp.partition: (consumer.committed(tp), end[tp]) for tp in parts}
    finally:
        consumer.close()


def group_caught_up(bootstrap: str, group: str, topic: str) -> bool:
    """True when the consumer group's committed offsets reached the topic's end offsets."""
    return all((committed or 0) >= end for committed, end in commit_positions(bootstrap, group, topic).values())


def commit_lag_after(bootstrap: str, group: str, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
    """Wait up to `timeout_s` for the group's commits to reach the end of every partition; return the
    partitions still behind, with how many records. Reported, not asserted: a lagging commit costs
    duplicates at the next failover, not intents (Faust can record a commit that the broker refused)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lag = {p: end - (committed or 0) for p, (committed, end) in commit_positions(bootstrap, group, topic).items()
               if (committed or 0) < end}
        if not lag or time.monotonic() > deadline:
            return lag
        time.sleep(1.0)


def rewind_group(bootstrap: str, group: str, topic: str) -> None:
    """Commit offset 0 for every partition of `topic` in `group` (no member may be active)."""
    from kafka import OffsetAndMetadata, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.commit({tp: OffsetAndMetadata(0, "", -1) for tp in parts})
    finally:
        consumer.close()


def wait_until(predicate, timeout_s: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# ---------------------------------------------------------------- scaling, faults and replay (issue 7)
def make_model(out_dir: Path, seed: int = 0, hidden_size: int = 32) -> Path:
    """A small random-weight model artifact: the tests compare pipelines, not model quality."""
    import torch

    from models import artifacts
    from models.features import FeatureSpec
    from models.gru import GRUConfig, IntentGRU

    torch.manual_seed(seed)
    spec = FeatureSpec()
    artifacts.save(IntentGRU(GRUConfig.from_spec(spec, hidden_size=hidden_size)), {"threshold": 0.5}, out_dir, spec)
    return out_dir


def produce(bootstrap: str, topic: str, events, rate: float = 0.0) -> None:
    """ClickEvents keyed by user id with their event time as record time, paced when rate > 0."""
    from streams.commands import produce_events

    produce_events(events, bootstrap, topic, rate=rate)


def group_members(bootstrap: str, group: str) -> dict[str, dict[str, set[int]]]:
    """member id -> {topic: partitions assigned to it}, as the group coordinator sees it now.

    Faust assigns each worker its active source partitions plus the changelog partitions it keeps
    (actives and standbys), so a changelog set larger than the source set shows standby replicas.
    """
    from kafka import KafkaAdminClient

    from kafka.errors import CoordinatorNotAvailableError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        desc = admin.describe_groups([group])[group]
    except CoordinatorNotAvailableError:  # a fresh broker creates __consumer_offsets on first use
        return {}
    finally:
        admin.close()
    out: dict[str, dict[str, set[int]]] = {}
    for m in desc.get("members", []):
        assignment = m.get("member_assignment") or {}
        topics: dict[str, set[int]] = {}
        if isinstance(assignment, dict):
            for entry in assignment.get("assigned_partitions", []):
                topics.setdefault(entry["topic"], set()).update(entry["partitions"])
        out[m["member_id"]] = topics
    return out


def spread(members: dict[str, dict[str, set[int]]], topic: str) -> list[set[int]]:
    """Each member's partitions of `topic` (empty sets included)."""
    return [t.get(topic, set()) for t in members.values()]


def wait_for(predicate, timeout_s: float, every: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what} not reached in {timeout_s:.0f}s")


TIMING_FIELDS = ("scored_at", "latency_ms")


def rescored_events(by_id: dict[str, list[dict]], p_tol: float = 1e-6) -> list[str]:
    """Events whose intents differ only in timing (and p_purchase by float noise): scored twice, not
    re-emitted, i.e. an intent reached Kafka while the state remembering it did not (DESIGN §4)."""
    def core(d: dict) -> dict:
        return {k: v for k, v in d.items() if k not in TIMING_FIELDS and k != "p_purchase"}

    return [eid for eid, copies in by_id.items()
            if any(c != copies[0] for c in copies)
            and all(core(c) == core(copies[0]) and abs(c["p_purchase"] - copies[0]["p_purchase"]) <= p_tol
                    for c in copies)]


def intents_by_event(intents: list[dict], strict: bool = True) -> tuple[dict[str, list[dict]], int]:
    """event id -> its intents, and the number of duplicates. strict: every duplicate is an exact copy."""
    by_id: dict[str, list[dict]] = {}
    for intent in intents:
        by_id.setdefault(intent["event_id"], []).append(intent)
    if strict:
        rescored = set(rescored_events(by_id))
        for event_id, copies in by_id.items():
            if event_id in rescored:
                raise AssertionError(
                    f"{len(rescored)} event(s) scored twice instead of re-emitted (the intent was published but "
                    f"the state that remembers it never reached the changelog), e.g. {event_id}: {copies}")
            assert all(c == copies[0] for c in copies), f"duplicate intents for {event_id} differ: {copies}"
    return by_id, sum(len(v) - 1 for v in by_id.values())


def changelog_states(bootstrap: str, app_id: str, table: str = "users") -> dict:
    """user id -> UserState: the last value per key of the table's changelog topic."""
    from models.state import UserState

    last = read_changelog(bootstrap, f"{app_id}-{table}-changelog")
    return {k.decode(): UserState.from_bytes(v) for k, v in last.items() if v is not None}


def reference_states(events) -> dict:
    """user id -> UserState after applying all of the user's events offline, in order."""
    from models.state import UserState

    states: dict = {}
    for ev in events:
        state = states.get(ev.user_id)
        if state is None:
            state = states[ev.user_id] = UserState.new(ev.user_id)
        state.apply(ev)
    return states


def window_mismatches(live: dict, reference: dict, now_ms: int) -> list[str]:
    """Users whose rolling-window features (at now_ms and at their last event) differ from the reference."""
    import numpy as np

    bad = [uid for uid in reference if uid not in live]
    for uid, ref in reference.items():
        got = live.get(uid)
        if got is None:
            continue
        last = ref.session.last_ms if ref.session is not None else now_ms
        for t in (last, now_ms):
            if not np.array_equal(got.windows.features(t), ref.windows.features(t)):
                bad.append(uid)
                break
    return bad


def private_ops_env(suffix: str) -> dict[str, str]:
    """Per-test erasure and control topics: the shared defaults would tie tests with different partition
    counts together (erasure is co-partitioned) and let one test's model deploy reach another's workers."""
    return {"INTENTSTREAM_ERASURE_TOPIC": f"erasure-{suffix}", "INTENTSTREAM_CONTROL_TOPIC": f"control-{suffix}"}
