"""`intentstream replay`: the live pipeline over a bounded slice of history, as its own app.

    plan (once, stored) : per source partition [start, end) from earliest | a timestamp | offsets,
                          to the end offsets captured at start | an end timestamp
    per batch           : consume ─► Pipeline.process ─► one RocksDB WriteBatch
                          (user states + next positions + the batch's output as an "outbox")
                          ─► produce the outbox, wait for acks ─► drop the outbox ─► commit the group

The replay owns its consumer group (`intentstream-replay-<name>`, committed for monitoring with the
usual Kafka tools), its state dir (`var/replay/<name>`) and its output topic (`intents.backfill.<name>`),
so it never touches the live workers' state. The RocksDB store is the source of truth for resuming:
states and positions change in one atomic write, and the outbox written with them is re-sent after a
crash, so a killed replay resumes where it stopped and its output holds every intent, duplicates only
as exact copies of the last batch. Same Pipeline, same state record and the same "topic/partition"
offsets as the worker, hence the same intents as live (up to scored_at/latency_ms).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import orjson

from .settings import REPO_ROOT

log = logging.getLogger(__name__)

_PLAN, _POS, _OUTBOX = b"m:plan", b"m:positions", b"m:outbox"
_USER = b"u:"


# ------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class ReplayConfig:
    name: str
    bootstrap: str = "127.0.0.1:9092"
    source_topics: tuple[str, ...] = ("clickstream",)
    output_topic: str | None = None  # default intents.backfill.<name>
    dlq_topic: str | None = None  # default <output>.dlq
    data_dir: Path | None = None  # default var/replay/<name>
    from_time_ms: int | None = None  # start at the first record with timestamp >= this
    from_offsets: dict[str, int] = field(default_factory=dict)  # "topic/partition" -> offset (others: earliest)
    to_time_ms: int | None = None  # stop before the first record with timestamp >= this
    model_dir: Path | None = None
    device: str = "auto"
    max_batch: int = 4096  # records per batch; larger than the worker's: a backfill is always backlogged
    max_rate: float = 0.0  # events/s; 0 = as fast as it goes (a backfill can starve live traffic)
    max_message_bytes: int = 65_536
    progress: str = "auto"  # auto (bar on a terminal, log lines otherwise) | bar | log | off
    fresh: bool = False  # drop stored state and progress first
    torch_threads: int = 1
    # The live workers' INTENTSTREAM_PSEUDONYM_KEY: the same key gives the same pseudonyms, hence the same intents.
    pseudonym_key: str = field(default="", repr=False)

    @property
    def output(self) -> str:
        return self.output_topic or f"intents.backfill.{self.name}"

    @property
    def dlq(self) -> str:
        return self.dlq_topic or f"{self.output}.dlq"

    @property
    def group_id(self) -> str:
        return f"intentstream-replay-{self.name}"

    @property
    def state_dir(self) -> Path:
        return self.data_dir or REPO_ROOT / "var" / "replay" / self.name


@dataclass
class ReplayResult:
    events: int = 0  # source records consumed in this run (valid or not)
    intents: int = 0
    dead_letters: int = 0
    resent: int = 0  # outbox records re-sent after a crash
    seconds: float = 0.0  # wall time of the consume/score/produce loop
    resumed: bool = False
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # "topic/partition" -> [start, end)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def parse_time(text: str) -> int:
    """Epoch milliseconds, or an ISO-8601 time (UTC when no zone is given)."""
    if text.lstrip("-").isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def parse_offsets(text: str, topics: tuple[str, ...]) -> dict[str, int]:
    """"P=OFF" (every source topic) or "TOPIC:P=OFF", comma-separated -> {"topic/P": OFF}."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        where, _, offset = part.partition("=")
        topic, _, partition = where.rpartition(":")
        if not offset.isdigit() or not partition.isdigit():
            raise ValueError(f"bad offset spec {part!r}: expected P=OFFSET or TOPIC:P=OFFSET")
        for t in ([topic] if topic else topics):
            out[f"{t}/{int(partition)}"] = int(offset)
    return out


# ------------------------------------------------------------------------------------------ store
class ReplayStore:
    """The replay's RocksDB: user states under u:<user_id>, the plan, positions and the outbox."""

    def __init__(self, path: Path):
        from rocksdict import Options, Rdict

        path.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self.db = Rdict(str(path / "state.rdict"), opts)

    def close(self) -> None:
        self.db.close()

    def get_json(self, key: bytes):
        raw = self.db.get(key)
        return orjson.loads(raw) if raw is not None else None

    def user(self, user_id: str) -> bytes | None:
        return self.db.get(_USER + user_id.encode())

    def save_plan(self, plan: dict) -> None:
        self.db.put(_PLAN, orjson.dumps(plan))

    def commit_batch(self, states: dict, positions: dict[str, int], outbox: dict) -> None:
        """States, positions and the batch's output in one atomic write (see the module docstring)."""
        from rocksdict import WriteBatch

        wb = WriteBatch(raw_mode=True)
        for user_id, state in states.items():
            wb.put(_USER + user_id.encode(), state.to_bytes())
        wb.put(_POS, orjson.dumps(positions))
        wb.put(_OUTBOX, orjson.dumps(outbox))
        self.db.write(wb)

    def save_positions(self, positions: dict[str, int]) -> None:
        self.db.put(_POS, orjson.dumps(positions))

    def clear_outbox(self) -> None:
        self.db.delete(_OUTBOX)


def _outbox(result) -> dict:
    return {
        "intents": [[uid, value.decode()] for uid, value in result.intents],
        "dlq": [[base64.b64encode(k).decode() if k is not None else None, v.decode()] for k, v in result.dead_letters],
    }


# ------------------------------------------------------------------------------------------ replay
class _Progress:
    def __init__(self, mode: str, total: int, initial: int):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode, self.total, self.done = mode, total, initial
        self.t0 = time.monotonic()
        self.start_done = initial
        self.last_log = self.t0
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="ev", unit_scale=True, desc="replay", smoothing=0.1)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.mode == "log" and time.monotonic() - self.last_log >= 10:
            self.last_log = time.monotonic()
            rate = (self.done - self.start_done) / max(self.last_log - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info("replay: %d/%d events (%.1f%%), %.0f ev/s, ETA %.0fs", self.done, self.total,
                     100.0 * self.done / max(self.total, 1), rate, eta)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def partition_counts(bootstrap: str, topics) -> dict[str, int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_topics(list(topics))
    finally:
        admin.close()
    return {d.get("name", d.get("topic")): len(d["partitions"]) for d in described if not d.get("error_code")}


async def _plan(consumer, config: ReplayConfig) -> dict[str, list[int]]:
    """Per source partition: [start, end) offsets, resolved against the broker now."""
    from aiokafka import TopicPartition

    counts = partition_counts(config.bootstrap, config.source_topics)
    tps = []
    for topic in config.source_topics:
        if not counts.get(topic):
            raise RuntimeError(f"replay: source topic {topic!r} does not exist")
        tps += [TopicPartition(topic, p) for p in range(counts[topic])]
    earliest = await consumer.beginning_offsets(tps)
    latest = await consumer.end_offsets(tps)  # the end captured at start: later records are not replayed

    async def at_time(ts: int | None, default: dict) -> dict:
        if ts is None:
            return default
        found = await consumer.offsets_for_times({tp: ts for tp in tps})
        return {tp: (found[tp].offset if found.get(tp) is not None else latest[tp]) for tp in tps}

    start = await at_time(config.from_time_ms, earliest)
    end = await at_time(config.to_time_ms, latest)
    plan = {}
    for tp in tps:
        key = f"{tp.topic}/{tp.partition}"
        s = max(config.from_offsets.get(key, start[tp]), earliest[tp])
        plan[key] = [min(s, latest[tp]), max(min(end[tp], latest[tp]), min(s, latest[tp]))]
    unknown = set(config.from_offsets) - set(plan)
    if unknown:
        raise ValueError(f"replay: --from-offsets names partitions that do not exist: {sorted(unknown)}")
    return plan


async def _commit(consumer, tps: dict, positions: dict[str, int], plan: dict) -> None:
    offsets = {tps[k]: positions[k] for k in tps if positions[k] > plan[k][0]}
    if offsets:
        await consumer.commit(offsets)


async def replay(config: ReplayConfig, scorer=None) -> ReplayResult:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from models.state import UserState

    from .batched_send import publish
    from .pipeline import Pipeline, Record, settle_gc
    from .privacy import Pseudonymizer
    from .scorer import Scorer
    from .topics import ensure_topics

    if config.fresh and config.state_dir.exists():
        shutil.rmtree(config.state_dir)
    store = ReplayStore(config.state_dir)
    consumer = AIOKafkaConsumer(bootstrap_servers=config.bootstrap, group_id=config.group_id,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 << 20, fetch_max_bytes=16 << 20)
    producer = AIOKafkaProducer(bootstrap_servers=config.bootstrap, linger_ms=5, max_batch_size=256 * 1024,
                                enable_idempotence=True)
    result = ReplayResult()
    progress = None
    await consumer.start()
    await producer.start()
    try:
        stored = store.get_json(_PLAN)
        wanted = {"sources": list(config.source_topics), "output": config.output, "dlq": config.dlq}
        if stored is not None:
            if {k: stored[k] for k in wanted} != wanted:
                raise RuntimeError(f"replay {config.name!r}: {config.state_dir} holds a replay of {stored['sources']} "
                                   f"into {stored['output']}; use another --name, or --fresh to start over")
            plan = {k: tuple(v) for k, v in stored["ranges"].items()}
            result.resumed = True
            log.info("replay %s: resuming the stored plan (range flags of this run are ignored)", config.name)
        else:
            plan = {k: tuple(v) for k, v in (await _plan(consumer, config)).items()}
            store.save_plan({**wanted, "ranges": plan, "created_at": int(time.time() * 1000)})
        result.ranges = dict(plan)
        n_parts = max(int(k.rsplit("/", 1)[1]) for k in plan) + 1
        ensure_topics(config.bootstrap, {config.output: n_parts, config.dlq: 1})

        async def send(outbox: dict) -> list[asyncio.Future]:
            """Queue the outbox's records; the futures resolve once the broker acknowledged them."""
            # One producer batch per partition (streams/batched_send.py), not one send per intent.
            keyed = [(None, uid.encode(), v.encode()) for uid, v in outbox["intents"]]
            futures = [fut for _p, _n, fut in await publish(producer, config.output, keyed)]
            futures += [await producer.send(config.dlq, key=base64.b64decode(k) if k else None, value=v.encode())
                        for k, v in outbox["dlq"]]
            return futures

        pending = store.get_json(_OUTBOX)
        if pending is not None:  # crashed between the state write and the acks: send that batch again
            await asyncio.gather(*await send(pending))
            result.resent = len(pending["intents"]) + len(pending["dlq"])
            store.clear_outbox()
            log.info("replay %s: re-sent %d records of the batch in flight at the crash", config.name, result.resent)

        positions: dict[str, int] = store.get_json(_POS) or {k: s for k, (s, _e) in plan.items()}
        tps = {k: TopicPartition(k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1])) for k in plan}
        consumer.assign(list(tps.values()))
        active = {}
        for k, tp in tps.items():
            if positions[k] < plan[k][1]:
                consumer.seek(tp, positions[k])
                active[k] = tp
        consumer.pause(*[tp for k, tp in tps.items() if k not in active])

        total = sum(e - s for s, e in plan.values())
        progress = _Progress(config.progress, total, sum(positions[k] - plan[k][0] for k in plan))
        pseudonymize = Pseudonymizer(config.pseudonym_key) if config.pseudonym_key else None
        pipeline = Pipeline(scorer or Scorer.load(config.model_dir, config.device), config.max_message_bytes,
                            pseudonymize=pseudonymize)
        settle_gc()

        def load_state(user_id: str, _rec: Record) -> UserState | None:
            raw = store.user(user_id)
            return UserState.from_bytes(raw) if raw is not None else None

        t0 = last_commit = time.monotonic()
        while active:
            fetched = await consumer.getmany(*active.values(), timeout_ms=500, max_records=config.max_batch)
            arrived = time.time() * 1000.0
            records: list[Record] = []
            consumed = 0
            for tp, batch in fetched.items():
                k = f"{tp.topic}/{tp.partition}"
                end = plan[k][1]
                for m in batch:
                    if m.offset >= end:
                        break
                    records.append(Record(m.key, m.value, m.topic, m.partition, m.offset, arrived))
                if batch:
                    new_pos = min(batch[-1].offset + 1, end)
                    consumed += new_pos - positions[k]
                    positions[k] = new_pos
            if not fetched:  # idle: a gap (compaction, transaction markers) may hide the end offset
                for k, tp in list(active.items()):
                    moved = max(positions[k], min(await consumer.position(tp), plan[k][1]))
                    consumed += moved - positions[k]
                    positions[k] = moved
            for k, tp in list(active.items()):
                if positions[k] >= plan[k][1]:
                    consumer.pause(tp)
                    del active[k]
            if records:
                out = pipeline.process(records, load_state)
                outbox = _outbox(out)
                store.commit_batch(out.states, positions, outbox)
                await asyncio.gather(*await send(outbox))  # acked before the outbox is dropped
                store.clear_outbox()
                result.intents += len(out.intents)
                result.dead_letters += len(out.dead_letters)
            elif consumed:  # only records past the end, or a gap: just move the positions
                store.save_positions(positions)
            if time.monotonic() - last_commit >= 2.0:  # the group's offsets are for monitoring only
                await _commit(consumer, tps, positions, plan)
                last_commit = time.monotonic()
            result.events += consumed
            progress.update(consumed)
            if config.max_rate > 0:  # pace against the run's own clock
                ahead = result.events / config.max_rate - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        result.seconds = time.monotonic() - t0
        await _commit(consumer, tps, positions, plan)
    finally:
        if progress is not None:
            progress.close()
        await producer.stop()
        await consumer.stop()
        store.close()
    return result


def run_replay(config: ReplayConfig, scorer=None) -> ReplayResult:
    import torch

    torch.set_num_threads(config.torch_threads)
    return asyncio.run(replay(config, scorer))


# ------------------------------------------------------------------------------------------ CLI
def _cmd_replay(args: argparse.Namespace) -> int:
    topics = tuple(t for t in args.topics.split(",") if t)
    config = ReplayConfig(
        name=args.name, bootstrap=args.bootstrap, source_topics=topics, output_topic=args.output,
        dlq_topic=args.dlq_topic, data_dir=args.data_dir,
        from_time_ms=parse_time(args.from_time) if args.from_time else None,
        from_offsets=parse_offsets(args.from_offsets, topics) if args.from_offsets else {},
        to_time_ms=parse_time(args.to_time) if args.to_time else None,
        model_dir=args.model, device=args.device, max_batch=args.max_batch, max_rate=args.max_rate,
        progress=args.progress, fresh=args.fresh, pseudonym_key=os.environ.get("INTENTSTREAM_PSEUDONYM_KEY", ""),
    )
    res = run_replay(config)
    print(f"replay {config.name}: {res.events} events -> {res.intents} intents in {config.output}, "
          f"{res.dead_letters} dead letters in {config.dlq}, {res.seconds:.1f}s ({res.rate:,.0f} events/s)"
          + (f", resumed (re-sent {res.resent})" if res.resumed else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="backfill: run the pipeline over a bounded range of history into its own topic",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="names the group, state dir and default output topic")
    p.add_argument("--bootstrap", default=os.environ.get("INTENTSTREAM_BOOTSTRAP", "127.0.0.1:9092"))
    p.add_argument("--topics", default="clickstream", help="comma-separated source topics")
    p.add_argument("--output", help="output topic (default intents.backfill.<name>)")
    p.add_argument("--dlq-topic", help="dead letters (default <output>.dlq)")
    p.add_argument("--data-dir", type=Path, help="state dir (default var/replay/<name>)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-time", help="start at this record time (epoch ms or ISO-8601; default: earliest)")
    start.add_argument("--from-offsets", help="start offsets: P=OFF or TOPIC:P=OFF, comma-separated "
                                              "(unlisted partitions start at the earliest offset)")
    p.add_argument("--to-time", help="stop before this record time (default: the end offsets at start)")
    p.add_argument("--model", type=Path, help="model artifact dir (default: shipped model)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--max-batch", type=int, default=4096)
    p.add_argument("--max-rate", type=float, default=0.0, help="events/s cap (0 = unlimited)")
    p.add_argument("--progress", choices=["auto", "bar", "log", "off"], default="auto")
    p.add_argument("--fresh", action="store_true", help="forget stored progress and state, start over")
    p.set_defaults(func=_cmd_replay)
