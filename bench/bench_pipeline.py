"""End-to-end throughput and latency, all against one real broker in one run (DESIGN §7).

  (a) bare aiokafka consume → produce loop (the ceiling for any Python consumer on this machine)
  (b) the intentstream worker (Faust, RocksDB table, micro-batched GRU), a real subprocess with its default
      two core processes; side by side with one core process (--core-processes 1) and with the core in the
      worker's own process (--no-core-process)
  (c) a naive design: per event, no batching, the GRU over the whole session so far

Throughput is measured on a pre-filled topic (saturation); latency at fixed offered loads, from the
moment the benchmark sends a click to the moment it receives its intent (same process, same clock).
Each load first runs for --warmup-seconds (default 3) uncounted: the first second of traffic on a fresh
worker and fresh topics measured p99 200-300 ms, against 37-55 ms per second after it (the broker took
~1 core for the first ~0.5 s, the worker's first batches were 3-5x slower). That start is reported on a
row of its own, and each counted second's p99 on another, so neither hides in the other.

    .venv/bin/python bench/bench_pipeline.py                 # defaults below
    .venv/bin/python bench/bench_pipeline.py --events 50000 --naive-events 3000 --rates 1000,5000
    .venv/bin/python bench/bench_pipeline.py --only-latency --plot docs/img/latency_by_second.png
    .venv/bin/python bench/bench_pipeline.py --only-latency --bare-latency   # and the bare loop's, the floor
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deploy.kafka import local_broker  # noqa: E402
from models.simulator import SimConfig, simulate  # noqa: E402
from schemas.codec import encode_click  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402

EVENTS = 100_000
NAIVE_EVENTS = 5_000
PARTITIONS = 6
RATES = (1000, 5000)
LATENCY_SECONDS = 10.0
WARMUP_SECONDS = 3.0
# The worker's other layouts, each timed once per --pairs after a run of the default (alternated)
VARIANTS = {"with one core process": ("--core-processes", "1"), "in one process": ("--no-core-process",)}


def make_events(n: int, seed: int):
    users = max(100, n // 9)  # ~9 events per simulated user over a few days
    out = []
    for ev, _p in simulate(SimConfig(n_users=users, n_days=4, seed=seed)):
        out.append(ev)
        if len(out) == n:
            break
    return out


async def fill(bootstrap: str, topic: str, events) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        for ev in events:
            await producer.send(topic, key=ev.user_id.encode(), value=encode_click(ev))
        await producer.flush()
    finally:
        await producer.stop()


async def bare_loop(bootstrap: str, src: str, dst: str, n: int, probe=None) -> float:
    """(a): consume every record and produce its value unchanged; events/s. `probe()` is called at the
    first record and after the last one was acknowledged."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, group_id=f"bare-{time.time_ns()}",
                                auto_offset_reset="earliest", enable_auto_commit=True, max_poll_records=2000)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, max_batch_size=512 * 1024)
    await consumer.start()
    await producer.start()
    done, t0 = 0, None
    try:
        while done < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            for records in batches.values():
                if t0 is None:
                    t0 = time.perf_counter()
                    if probe:
                        probe()
                for r in records:
                    await producer.send(dst, key=r.key, value=r.value)
                done += len(records)
        await producer.flush()
        rate = n / (time.perf_counter() - t0)
        if probe:
            probe()
        return rate
    finally:
        await consumer.stop()
        await producer.stop()


async def echo_loop(bootstrap: str, src: str, dst: str) -> None:
    """The latency floor: per click, the least a Python consumer → producer does to answer it (parse the
    click, send a small JSON answer), as soon as it is fetched; answers in the shape latency_at reads
    (`scored_at` when it was fetched, `latency_ms` 0). Runs until killed; prints READY once assigned."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, group_id=f"echo-{time.time_ns()}",
                                auto_offset_reset="earliest", enable_auto_commit=True)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    ready = False
    while True:
        batches = await consumer.getmany(timeout_ms=100)
        if not ready and consumer.assignment():
            print("READY", flush=True)
            ready = True
        for records in batches.values():
            fetched = time.time() * 1000
            for r in records:
                answer = {"event_id": orjson.loads(r.value)["event_id"], "scored_at": fetched, "latency_ms": 0.0}
                await producer.send(dst, key=r.key, value=orjson.dumps(answer))


def start_echo(bootstrap: str, src: str, dst: str) -> subprocess.Popen:
    """echo_loop in a process of its own (as the worker is), once it is assigned its partitions."""
    proc = subprocess.Popen([sys.executable, __file__, "--echo", bootstrap, src, dst], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if proc.stdout.readline().strip() != "READY":
        proc.kill()
        raise RuntimeError("the echo loop did not start")
    return proc


async def naive_loop(bootstrap: str, src: str, dst: str, n: int, model_dir: str | None) -> float:
    """(c): one event at a time; the whole session so far goes through the GRU for every click."""
    import torch
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from models import artifacts
    from models.features import advance
    from models.state import UserState
    from schemas.codec import decode_click

    art = artifacts.load(model_dir or artifacts.DEFAULT_MODEL_DIR)
    model, spec = art.model.eval(), art.spec
    states: dict[str, UserState] = {}
    sessions: dict[str, list] = {}
    consumer = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, group_id=f"naive-{time.time_ns()}",
                                auto_offset_reset="earliest", max_poll_records=500)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await consumer.start()
    await producer.start()
    done, t0 = 0, None
    try:
        while done < n:
            for records in (await consumer.getmany(timeout_ms=500, max_records=500)).values():
                t0 = t0 or time.perf_counter()
                for r in records:
                    if done >= n:
                        break
                    ev = decode_click(r.value)
                    state = states.setdefault(ev.user_id, UserState.new(ev.user_id))
                    step, x = advance(state, ev, spec)
                    seq = sessions.setdefault(step.session.session_id, [])
                    seq.append(x)
                    with torch.no_grad():
                        p = torch.sigmoid(model(torch.from_numpy(np.stack([s.cat for s in seq]))[None],
                                                torch.from_numpy(np.stack([s.num for s in seq]))[None],
                                                torch.from_numpy(np.stack([s.roll for s in seq]))[None]))[0, -1]
                    await producer.send(dst, key=r.key, value=orjson.dumps({"event_id": ev.event_id, "p": float(p)}))
                    done += 1
        await producer.flush()
        return n / (time.perf_counter() - t0)
    finally:
        await consumer.stop()
        await producer.stop()


async def drain_intents(bootstrap: str, topic: str, n: int, timeout_s: float, probe=None) -> tuple[float, int]:
    """(b): read `n` intents; events/s between the first and the last one. `probe()` is called at the
    first intent and at the last."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"drain-{time.time_ns()}",
                                auto_offset_reset="earliest", max_poll_records=5000)
    await consumer.start()
    got, t_first, t_last = 0, None, None
    deadline = time.monotonic() + timeout_s
    try:
        while got < n and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                now = time.perf_counter()
                if t_first is None and probe:
                    probe()
                t_first = t_first or now
                t_last = now
                got += len(records)
        if got >= n and probe:  # once, as the last intent came (the loop ends with that fetch's answer)
            probe()
    finally:
        await consumer.stop()
    if got < n:
        raise RuntimeError(f"only {got}/{n} intents within {timeout_s}s")
    return n / (t_last - t_first), got


GENERATOR_TICK_S = 0.001
LATENCY_PARTS = ("broker → worker batch", "batch → scored", "scored → intent published", "published → received")


@dataclasses.dataclass
class Latency:
    p50: float
    p99: float
    received: int
    sent: int
    parts: list[tuple[float, float]]  # (p50, p99) of each of LATENCY_PARTS
    harness_cpu: float  # this process's CPU while sending, a share of one core
    p99_by_second: list[float]  # of the counted clicks, by the second they were sent in
    warmup: tuple[float, float, float] | None  # p50, p99, max of the uncounted first clicks
    timeline: np.ndarray  # every click, warm-up included: (seconds since the first was sent, latency in ms)


async def latency_at(bootstrap: str, clicks: str, intents: str, events, rate: float, seconds: float,
                     warmup_s: float = 0.0) -> Latency:
    """Send at `rate` events/s for `warmup_s` + `seconds`; the click→intent latency of the clicks sent
    after the first `warmup_s`, in ms (the warm-up's own summed up apart).

    Clicks go out in ~1 ms ticks (GENERATOR_TICK_S), each timed when handed to the producer.

    The parts come from the worker's own timestamps in each intent (`scored_at`, `latency_ms` = scored
    minus batch assembly) and the intent record's timestamp (set when the worker queued it for Kafka),
    all wall clock on this one machine.
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(intents, bootstrap_servers=bootstrap, group_id=f"lat-{time.time_ns()}",
                                auto_offset_reset="latest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    await consumer.seek_to_end()
    sent_at: dict[str, float] = {}  # event id -> wall clock ms
    rows: list[tuple[float, ...]] = []  # per intent: when its click was sent, the LATENCY_PARTS, the total
    n = min(len(events), int(rate * (warmup_s + seconds)))
    stop = asyncio.Event()

    async def receive() -> None:
        while not stop.is_set() or len(rows) < len(sent_at):
            batches = await consumer.getmany(timeout_ms=100)
            now = time.time() * 1000
            for records in batches.values():
                for r in records:
                    intent = orjson.loads(r.value)
                    t = sent_at.get(intent["event_id"])
                    if t is not None:
                        arrived = intent["scored_at"] - intent["latency_ms"]
                        rows.append((t, arrived - t, intent["latency_ms"], r.timestamp - intent["scored_at"],
                                     now - r.timestamp, now - t))
            if stop.is_set() and time.perf_counter() - t_end > 10:
                return

    receiver = asyncio.create_task(receive())
    payloads = [(ev.event_id, ev.user_id.encode(), encode_click(ev)) for ev in events[:n]]
    cpu0, t0 = time.process_time(), time.perf_counter()
    i = 0
    while i < n:
        # Every click due by now, then sleep until the next one is due: one wakeup per ~1 ms tick at most,
        # not one per click, so the generator leaves the two cores to the broker and the worker.
        due = min(n, int((time.perf_counter() - t0) * rate) + 1)
        for event_id, key, value in payloads[i:due]:
            sent_at[event_id] = time.time() * 1000
            await producer.send(clicks, key=key, value=value)
        i = due
        await asyncio.sleep(max(t0 + i / rate - time.perf_counter(), GENERATOR_TICK_S))
    t_end = time.perf_counter()
    harness_cpu = (time.process_time() - cpu0) / (t_end - t0)
    stop.set()
    await receiver
    await producer.stop()
    await consumer.stop()
    lat = np.array(rows)
    since_start = (lat[:, 0] - lat[:, 0].min()) / 1000.0
    timeline = np.column_stack([since_start, lat[:, -1]])
    counted = since_start >= warmup_s
    warm, lat, since_start = lat[~counted], lat[counted], since_start[counted]
    p50, p99 = np.percentile(lat[:, 1:], 50, axis=0), np.percentile(lat[:, 1:], 99, axis=0)
    second = (since_start - warmup_s).astype(int)
    by_second = [float(np.percentile(lat[second == s, -1], 99)) for s in range(int(seconds)) if (second == s).any()]
    return Latency(float(p50[-1]), float(p99[-1]), len(lat) + len(warm), n,
                   list(zip(p50[:-1].tolist(), p99[:-1].tolist())), harness_cpu, by_second,
                   (float(np.percentile(warm[:, -1], 50)), float(np.percentile(warm[:, -1], 99)),
                    float(warm[:, -1].max())) if len(warm) else None, timeline)


def plot_timelines(path: Path, timelines: dict[float, np.ndarray], warmup_s: float) -> None:
    """Click → intent latency over each fixed-load run, p50 and p99 per 250 ms of sending, to a PNG."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    fig = Figure(figsize=(11, 3.2 * len(timelines)), layout="constrained")
    for ax, (rate, timeline) in zip(fig.subplots(len(timelines), 1, squeeze=False)[:, 0], timelines.items()):
        bins = (timeline[:, 0] // 0.25).astype(int)
        starts = np.unique(bins)
        for q, style in ((50, "-"), (99, "--")):
            ax.plot(starts * 0.25, [np.percentile(timeline[bins == b, 1], q) for b in starts], style, label=f"p{q}")
        ax.axvspan(0, warmup_s, color="0.85", label="warm-up (not counted)")
        ax.axhline(50, color="tab:red", lw=0.8, label="p99 budget at 5k (50 ms)")
        ax.set(yscale="log", xlabel="seconds since the first click", ylabel="click → intent, ms",
               title=f"{rate:,.0f} events/s")
        # 10, 20, 50 ms rather than 10^1 on the log axis
        ax.yaxis.set_major_locator(FixedLocator([5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")  # beside the lines, not on them
    fig.savefig(path, dpi=110)


def cpu_seconds(pid: int | None, children: bool = True, itself: bool = True) -> float:
    """User + system CPU seconds of a process and/or its children (the worker's core processes), from /proc."""
    if pid is None:
        return 0.0
    pids = [pid] if itself else []
    if children:
        try:
            pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            pass
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


class CpuProbe:
    """CPU seconds of named processes between the first and the last call (a `probe` for the loops above):
    per processed event, where the two cores went at saturation. Divided over all the run's events, though
    the first batch's own work comes before the first call: low by a batch in ~50 (max_batch 2048 of 100k)."""

    def __init__(self, **readers) -> None:
        self.readers, self.marks = readers, []

    def __call__(self) -> None:
        self.marks.append({name: read() for name, read in self.readers.items()})

    def used(self) -> dict[str, float]:
        """CPU seconds per process between the first call and the last."""
        first, last = self.marks[0], self.marks[-1]
        return {name: last[name] - first[name] for name in self.readers}

    def per_event_us(self, n: int) -> str:
        if len(self.marks) < 2:
            return "-"
        used = {name: s / n * 1e6 for name, s in self.used().items()}
        return ", ".join(f"{name} {us:.0f}" for name, us in used.items()) + f"; total {sum(used.values()):.0f} µs"


def changelog_records(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return sum(consumer.end_offsets(parts).values()) - sum(consumer.beginning_offsets(parts).values())
    finally:
        consumer.close()


# Where a worker's time goes, by the innermost frame that belongs to one of these (first match wins); time
# in asyncio itself (socket writes, task switches) counts for the caller that made it.
PROFILE_BUCKETS = (
    ("GRU forward (torch)", ("models/gru.py",)),
    ("featurization", ("models/features.py", "models/history.py", "models/windows.py", "models/session.py")),
    ("state encode/decode", ("models/state.py",)),
    ("decode clicks / encode intents", ("schemas/",)),
    ("pipeline glue", ("streams/pipeline.py", "streams/scorer.py", "BatchCore.process")),
    ("table writes (RocksDB + changelog)", ("faust/tables/", "faust/stores/", "rocksdict")),
    ("producer (intents, changelog sends)", ("faust/transport/producer", "aiokafka/producer")),
    ("worker shell (streams/app.py, gaps.py, web.py)", ("streams/app.py", "streams/gaps.py", "streams/web.py",
                                                         "streams/durable_table.py", "streams/user_cache.py")),
    ("Faust stream / consumer machinery", ("faust/", "mode/")),
    ("aiokafka consumer", ("aiokafka/",)),
)


def profile_summary(stacks_file: Path) -> str:
    """Share of samples per bucket and process, from py-spy's raw (collapsed) output of the worker and its
    core processes (--subprocesses): 'process ...;frame;frame;... count'.

    Waiting in the selector is counted apart, per thread: Faust runs its Kafka consumer in a thread of its
    own, whose idle time says nothing about the event loop that scores. Shares are of each process's own
    samples (py-spy samples a process only while it runs or waits in Python, so they need not add up to
    its CPU time).
    """
    totals: dict[tuple[str, str], int] = {}
    per_process: dict[str, int] = {}
    for line in stacks_file.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        process = "core processes" if any("spawn_main" in f for f in frames if f.startswith("process ")) else "shell"
        frames = [f for f in frames if not f.startswith("process ")] or ["?"]
        main_thread = "runpy" in frames[0] or process == "core processes"
        waiting = "selectors.py" in frames[-1] or ("connection.py" in frames[-1] and "_recv" in frames[-1])
        if waiting:
            bucket = "idle, main thread (waiting)" if main_thread else "idle, Faust's consumer thread"
        elif not main_thread:
            bucket = "Faust's consumer thread, working"
        else:  # unless a frame below names a bucket
            bucket = "event loop (asyncio only)" if process == "shell" else "messages to and from the shell"
            for frame in reversed(frames):  # innermost first
                hit = next((name for name, keys in PROFILE_BUCKETS if any(k in frame for k in keys)), None)
                if hit and main_thread:
                    bucket = hit
                    break
        totals[(process, bucket)] = totals.get((process, bucket), 0) + int(count)
        per_process[process] = per_process.get(process, 0) + int(count)
    rows = sorted(totals.items(), key=lambda kv: (kv[0][0] != "shell", -kv[1]))
    return "\n".join(["| worker time (py-spy, saturation run) | share of its process's samples |", "|---|---|"]
                      + [f"| {process}: {name} | {c / per_process[process]:.0%} |" for (process, name), c in rows])


def wait_ready(port: int, timeout_s: float = 120.0) -> None:
    """Poll the worker's /ready until its tables are recovered and the model is loaded."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("worker not ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=EVENTS)
    ap.add_argument("--naive-events", type=int, default=NAIVE_EVENTS)
    ap.add_argument("--rates", default=",".join(map(str, RATES)))
    ap.add_argument("--seconds", type=float, default=LATENCY_SECONDS, help="counted seconds at each load")
    ap.add_argument("--warmup-seconds", type=float, default=WARMUP_SECONDS,
                    help="seconds at each load before the counted ones (reported apart; 0: none)")
    ap.add_argument("--plot", type=Path, default=None,
                    help="write the latency runs' p50/p99 over time to this PNG (warm-up included)")
    ap.add_argument("--model", default=None, help="model artifact dir (default: shipped model)")
    ap.add_argument("--throughput-max-batches", default="2048,512,4096",
                    help="one saturation run per value; the first is the worker's default (used again for latency)")
    ap.add_argument("--producer-linger-ms", type=int, default=None, help="worker setting (default: the worker's)")
    ap.add_argument("--throughput-max-wait", type=float, default=0.05, help="seconds, for the saturation run")
    ap.add_argument("--latency-max-wait", type=float, default=0.005, help="seconds, for the fixed-load runs")
    ap.add_argument("--profile", action="store_true",
                    help="sample the worker with py-spy during the saturation run; prints where its time goes")
    ap.add_argument("--only-throughput", action="store_true", help="stop after (a) and (b)")
    ap.add_argument("--bare-latency", action="store_true",
                    help="also the latency of a bare Python consume → produce loop at the same loads (the floor)")
    ap.add_argument("--echo", nargs=3, metavar=("BOOTSTRAP", "SRC", "DST"), help=argparse.SUPPRESS)
    ap.add_argument("--only-latency", action="store_true",
                    help="only the fixed-load runs (a worker on an empty table; no (a), (b), (c), restore)")
    ap.add_argument("--pairs", type=int, default=1,
                    help="saturation runs of each other layout, each after one of the default (alternated)")
    ap.add_argument("--skip-one-process", action="store_true",
                    help="no saturation runs of the other layouts (one core process; all in one process)")
    args = ap.parse_args()
    if args.echo:
        asyncio.run(echo_loop(*args.echo))
        return

    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    cfg = local_broker.BrokerConfig(data_dir=work / "kafka", port=local_broker.free_port_pair())
    local_broker.start(cfg)
    bs = cfg.bootstrap
    rows = []
    worker = None
    try:
        events = [] if args.only_latency else make_events(args.events, seed=1)  # the latency runs make their own
        ensure_topics(bs, {"clicks": PARTITIONS, "bare-out": PARTITIONS, "intents": PARTITIONS,
                           "naive-out": PARTITIONS, "clickstream.dlq": 1})
        if not args.only_latency:
            asyncio.run(fill(bs, "clicks", events))
            print(f"filled 'clicks' with {len(events)} events", flush=True)
            broker_pid = local_broker.running_pid(cfg)
            bare_cpu = CpuProbe(loop=time.process_time, broker=lambda: cpu_seconds(broker_pid))
            bare = asyncio.run(bare_loop(bs, "clicks", "bare-out", len(events), bare_cpu))
            rows.append(("(a) bare aiokafka consume→produce", f"{bare:,.0f} events/s", "-"))
            rows.append(("  … CPU per event (µs)", bare_cpu.per_event_us(len(events)), "-"))
            print(rows[-1], flush=True)

        def start_worker(max_wait: float, max_batch: int | None = None, app_id: str = "bench",
                         intents: str = "intents", extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, int]:
            port = local_broker.free_port_pair()
            cmd = [sys.executable, "-m", "streams.cli", "worker", "--bootstrap", bs, "--app-id", app_id,
                   "--topics", "clicks", "--intents-topic", intents, "--partitions", str(PARTITIONS),
                   "--data-dir", str(work / app_id), "--web-port", str(port), "--max-wait", str(max_wait)]
            if args.model:
                cmd += ["--model", args.model]
            if max_batch:
                cmd += ["--max-batch", str(max_batch)]
            if args.producer_linger_ms is not None:
                cmd += ["--producer-linger-ms", str(args.producer_linger_ms)]
            cmd += extra
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=open(work / "worker.log", "ab"), stderr=subprocess.STDOUT)
            return proc, port

        # Throughput config: a longer batching window lets micro-batches grow to hundreds of clicks; each
        # max_batch gets a worker of its own (own group, table and intents topic) over the same clicks.
        # Then the other layouts (VARIANTS) at the first max_batch; with --pairs N, N rounds of them, each run
        # after one of the default layout (alternated: the machine drifts).
        max_batches = [int(b) for b in args.throughput_max_batches.split(",")]
        runs = [(mb, "", ()) for mb in max_batches]
        for pair in range(0 if args.skip_one_process else args.pairs):
            for n, (label, flags) in enumerate(VARIANTS.items()):
                if pair or n:
                    runs.append((max_batches[0], "", ()))
                runs.append((max_batches[0], label, flags))
        rates, last_default = [], None
        for i, (max_batch, label, extra) in enumerate([] if args.only_latency else runs):
            app_id, intents = ("bench", "intents") if i == 0 else (f"bench-{i}", f"intents-{i}")
            ensure_topics(bs, {intents: PARTITIONS})
            worker, port = start_worker(args.throughput_max_wait, max_batch, app_id, intents, extra)
            spy = None
            if args.profile and i == 0:
                wait_ready(port)  # sample the steady state, not imports and table recovery
                spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses", "--pid",
                                        str(worker.pid),
                                        "--rate", "200", "--format", "raw", "--output", str(work / "worker.stacks")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            broker_pid = local_broker.running_pid(cfg)
            worker_cpu = CpuProbe(shell=lambda: cpu_seconds(worker.pid, children=False),
                                  cores=lambda: cpu_seconds(worker.pid, itself=False),
                                  broker=lambda: cpu_seconds(broker_pid), reader=time.process_time)
            rate, _ = asyncio.run(drain_intents(bs, intents, len(events), timeout_s=900, probe=worker_cpu))
            rates.append(rate)
            if spy is not None:
                spy.send_signal(2)  # SIGINT: py-spy writes its samples and exits
                spy.wait(timeout=60)
                print(profile_summary(work / "worker.stacks"), flush=True)
            layout = f" {label} ({' '.join(extra)})" if extra else ""
            rows.append((f"(b) intentstream worker{layout} (max_wait {args.throughput_max_wait * 1000:.0f} ms, "
                         f"max_batch {max_batch})", f"{rate:,.0f} events/s",
                         f"≥ 20,000/s and ≥ 50% of (a): {rate / bare:.0%}"
                         + (f"; the default run before made {last_default / rate:.2f}× this" if extra else "")))
            if not extra and max_batch == max_batches[0]:
                last_default = rate
            print(rows[-1], flush=True)
            rows.append(("  … CPU per event (µs, from the first intent to the last)",
                         worker_cpu.per_event_us(len(events)), "-"))
            print(rows[-1], flush=True)
            worker.terminate()
            worker.wait(timeout=60)
            worker = None
        if not args.only_throughput:
            # Latency config: the default 5 ms window. Its state dir starts empty, so this start also
            # measures restoring the users table from its changelog.
            import shutil

            shutil.rmtree(work / "bench", ignore_errors=True)
            t_restore = time.perf_counter()
            worker, port = start_worker(args.latency_max_wait, max_batches[0])
            wait_ready(port)
            restore_s = time.perf_counter() - t_restore
            if not args.only_latency:
                n_changelog = changelog_records(bs, "bench-users-changelog")
                rows.append(("restore users table from changelog (empty state dir → ready)",
                             f"{n_changelog:,} records in {restore_s:.1f} s ({n_changelog / restore_s:,.0f} "
                             "records/s, incl. worker start)", "-"))
                print(rows[-1], flush=True)

                naive = asyncio.run(naive_loop(bs, "clicks", "naive-out", args.naive_events, args.model))
                rows.append(("(c) naive: per event, full-session GRU", f"{naive:,.0f} events/s",
                             " ".join(f"(b, max_batch {mb}{' ' + label if label else ''})/(c) = {r / naive:.1f}×;"
                                      for (mb, label, _extra), r in zip(runs, rates))
                             + " target ≥ 10×"))
                print(rows[-1], flush=True)

            timelines: dict[float, np.ndarray] = {}
            fresh = make_events(int(max(map(float, args.rates.split(","))) * (args.warmup_seconds + args.seconds)) + 10,
                                seed=2)

            def measure_latency(label: str, answerer: str, pid: int, clicks: str, answers: str, rate: float,
                                parts: tuple[str, ...]) -> Latency:
                """One fixed-load run against `pid` (the worker, or the echo loop), reported under `label`."""
                batch = [dataclasses.replace(e, event_id=f"{answers}{int(rate)}-{e.event_id}") for e in fresh]
                # Who used the two cores meanwhile: below saturation the cost is per wakeup, not per click
                broker_pid = local_broker.running_pid(cfg)
                cpu = CpuProbe(own=lambda: cpu_seconds(pid, children=False),
                               children=lambda: cpu_seconds(pid, itself=False), broker=lambda: cpu_seconds(broker_pid))
                cpu()
                t0 = time.perf_counter()
                lat = asyncio.run(latency_at(bs, clicks, answers, batch, rate, args.seconds, args.warmup_seconds))
                elapsed = time.perf_counter() - t0
                cpu()
                own, children, broker = (s / elapsed for s in cpu.used().values())
                split = f" ({own:.2f} itself, {children:.2f} its core processes)" if children else ""
                rows.append((f"{label} at {rate:,.0f} events/s",
                             f"p50 {lat.p50:.1f} ms, p99 {lat.p99:.1f} ms ({lat.received}/{lat.sent} answers, the "
                             f"first {args.warmup_seconds:g} s not counted); CPU meanwhile, in cores: {answerer} "
                             f"{own + children:.2f}{split}, the broker {broker:.2f}, the benchmark's own sending "
                             f"and receiving {lat.harness_cpu:.2f}", "p50 ≤ 10 ms, p99 ≤ 50 ms at 5k/s"))
                print(rows[-1], flush=True)
                for name, (part50, part99) in zip(LATENCY_PARTS, lat.parts):
                    if name in parts:
                        rows.append((f"  … {name}", f"p50 {part50:.1f} ms, p99 {part99:.1f} ms", "-"))
                rows.append(("  … p99 of each counted second", " / ".join(f"{p:.0f}" for p in lat.p99_by_second) + " ms",
                             f"worst {max(lat.p99_by_second):.1f} ms" if lat.p99_by_second else "-"))
                if lat.warmup is not None:
                    rows.append((f"  … the first {args.warmup_seconds:g} s (not counted)",
                                 "p50 {:.1f} ms, p99 {:.1f} ms, max {:.1f} ms".format(*lat.warmup), "-"))
                return lat

            if args.bare_latency:
                ensure_topics(bs, {"bare-clicks": PARTITIONS, "bare-answers": PARTITIONS})
            for rate in map(float, args.rates.split(",")):
                if args.bare_latency:  # the floor first, on topics of its own, while the worker idles
                    echo = start_echo(bs, "bare-clicks", "bare-answers")
                    try:
                        measure_latency("(a) bare loop: click → answer latency", "the loop", echo.pid,
                                        "bare-clicks", "bare-answers", rate, (LATENCY_PARTS[0], LATENCY_PARTS[3]))
                    finally:
                        echo.kill()
                        echo.wait()
                lat = measure_latency("latency", "the worker with its core processes", worker.pid, "clicks",
                                      "intents", rate, LATENCY_PARTS)
                timelines[rate] = lat.timeline
            if args.plot is not None and timelines:
                plot_timelines(args.plot, timelines, args.warmup_seconds)
                print(f"latency over time: {args.plot}", flush=True)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        local_broker.stop(cfg)

    print("\n| case | figure | target / ratio |\n|---|---|---|")
    for case, figure, target in rows:
        print(f"| {case} | {figure} | {target} |")
    print(f"\nworker log: {work / 'worker.log'}")


if __name__ == "__main__":
    main()
