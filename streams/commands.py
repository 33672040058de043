"""Stream-side commands: worker, load, tail, demo."""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

import orjson

from .settings import REPO_ROOT, add_worker_args, settings_from_args

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ worker
def run_worker(args: argparse.Namespace) -> int:
    import faust
    import torch

    from .app import create_app
    from .topics import ensure_topics, internal_topics, pipeline_topics

    settings = settings_from_args(args)
    torch.set_num_threads(settings.torch_threads)
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    changelogs = internal_topics(settings)
    ensure_topics(settings.bootstrap, changelogs, compacted=frozenset(n for n in changelogs if n.endswith("-changelog")))
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=args.loglevel, quiet=True)
    worker.execute_from_commandline()  # runs until SIGTERM/SIGINT
    return 0


# ------------------------------------------------------------------------------------------ load
def iter_source_events(args: argparse.Namespace) -> Iterator:
    """ClickEvents from the simulator or a file in any supported format, in file/time order."""
    if args.simulate:
        from models.simulator import SimConfig, simulate

        start_ms = int(time.time() * 1000) - args.days * 86_400_000 if args.recent else SimConfig.start_ms
        config = SimConfig(n_users=args.simulate, n_days=args.days, seed=args.seed, start_ms=start_ms)
        return (event for event, _p in simulate(config))
    from models.loaders import load

    return iter(load(args.file, args.format).events)


def produce_events(events: Iterable, bootstrap: str, topic: str, rate: float = 0.0, limit: int | None = None,
                   extra_bad_every: int = 0) -> int:
    """Send ClickEvents keyed by user id with their event time as record timestamp; paced when rate > 0."""
    from kafka import KafkaProducer

    from schemas.codec import encode_click

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024, acks=1)
    sent = 0
    t0 = time.monotonic()
    try:
        for event in itertools.islice(events, limit):
            producer.send(topic, key=event.user_id.encode(), value=encode_click(event), timestamp_ms=event.ts)
            sent += 1
            if extra_bad_every and sent % extra_bad_every == 0:  # the demo shows the DLQ at work
                producer.send(topic, key=event.user_id.encode(), value=b'{"event_id": "broken", "type": "teleport"}')
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
    finally:
        producer.flush()
        producer.close()
    return sent


def run_load(args: argparse.Namespace) -> int:
    if not args.simulate and not args.file:
        raise SystemExit("load: give --simulate N or --file PATH --format FMT")
    from .topics import ensure_topics

    events = iter_source_events(args)  # first: a missing or unreadable file fails before Kafka is touched
    ensure_topics(args.bootstrap, {args.topic: args.partitions})
    t0 = time.monotonic()
    n = produce_events(events, args.bootstrap, args.topic, args.rate, args.limit)
    dt = time.monotonic() - t0
    print(f"sent {n} events to {args.topic} in {dt:.1f}s ({n / max(dt, 1e-9):,.0f}/s)")
    return 0


# ------------------------------------------------------------------------------------------ tail
LEVEL_COLOR = {"low": "\033[2m", "medium": "\033[33m", "high": "\033[1;32m"}
# Short labels for the recent counts, one per event type: cutting the names short made add_to_cart and
# add_to_wishlist both "add_". A type added later shows under its own name until it gets a label here.
COUNT_LABELS = {"page_view": "page", "product_view": "prod", "search": "srch", "add_to_cart": "cart+",
                "remove_from_cart": "cart-", "add_to_wishlist": "wish", "begin_checkout": "chkout",
                "purchase": "buy"}


def format_intent(intent: dict, color: bool = True) -> str:
    p = intent["p_purchase"]
    bar = "█" * round(p * 10) + "·" * (10 - round(p * 10))
    level = intent["intent"]
    counts = " ".join(f"{COUNT_LABELS.get(k, k)}:{v}" for k, v in intent.get("recent_counts", {}).items())
    line = (f"{time.strftime('%H:%M:%S')}  user {intent['user_id']:<10.10} #{intent['session_events']:<3} "
            f"p={p:5.3f} {bar} {level:<6}  cart {intent['cart_value']:8.2f}  "
            f"{intent['latency_ms']:5.1f} ms  [{counts}]")
    return f"{LEVEL_COLOR.get(level, '')}{line}\033[0m" if color else line


def tail_intents(bootstrap: str, topic: str, from_beginning: bool = False, limit: int | None = None,
                 timeout_s: float | None = None, color: bool = True, out=sys.stdout) -> int:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest" if from_beginning else "latest")
    shown = 0
    deadline = time.monotonic() + timeout_s if timeout_s else None
    try:
        while (limit is None or shown < limit) and (deadline is None or time.monotonic() < deadline):
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    print(format_intent(orjson.loads(r.value), color), file=out, flush=True)
                    shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return shown


def run_tail(args: argparse.Namespace) -> int:
    tail_intents(args.bootstrap, args.topic, args.from_beginning, args.limit, args.seconds,
                 color=sys.stdout.isatty())
    return 0


# ------------------------------------------------------------------------------------------ demo
def run_demo(args: argparse.Namespace) -> int:
    """Broker, worker, simulated shoppers, live intents; Ctrl-C (or --seconds) stops it all."""
    import threading

    from deploy.kafka import local_broker

    from .topics import ensure_topics, pipeline_topics

    cfg = local_broker.BrokerConfig()
    _, ready_s = local_broker.start(cfg)
    print(f"[demo] Kafka ready on {cfg.bootstrap} ({ready_s:.1f}s)")
    settings = settings_from_args(argparse.Namespace(bootstrap=cfg.bootstrap))
    ensure_topics(cfg.bootstrap, pipeline_topics(settings))

    log_path = REPO_ROOT / "var" / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "--bootstrap", cfg.bootstrap, "--app-id", "intentstream-demo",
         "--data-dir", str(REPO_ROOT / "var" / "demo-worker")],
        cwd=REPO_ROOT, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    print(f"[demo] worker pid {worker.pid} (log {log_path}); shoppers arriving at {args.rate:.0f} events/s")
    print(f"[demo] dashboard: http://127.0.0.1:{settings.web_port}/dashboard   metrics: "
          f"http://127.0.0.1:{settings.web_port}/metrics")

    load_args = argparse.Namespace(simulate=args.users, days=2, seed=args.seed, recent=True, file=None, format=None)
    stop = threading.Event()

    def shoppers() -> None:
        produce_events(itertools.takewhile(lambda _e: not stop.is_set(), iter_source_events(load_args)),
                       cfg.bootstrap, settings.source_topics[0], rate=args.rate, extra_bad_every=500)

    threading.Thread(target=shoppers, daemon=True).start()
    print("[demo] live intents (Ctrl-C to stop):")
    try:
        shown = tail_intents(cfg.bootstrap, settings.intents_topic, limit=None, timeout_s=args.seconds,
                             color=sys.stdout.isatty())
    finally:
        stop.set()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        if not args.keep_kafka:
            local_broker.stop(cfg)
    print(f"[demo] {shown} intents shown; worker exit code {worker.returncode}")
    return 0 if shown > 0 else 1


# ------------------------------------------------------------------------------------------ wiring
def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--simulate", type=int, metavar="USERS", help="generate this many simulated users")
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recent", action="store_true", help="simulated time ends now instead of 2024")
    p.add_argument("--file", type=Path)
    p.add_argument("--format", default="jsonl", help="jsonl, taobao, rees46, retailrocket, yoochoose, coveo")


def register(sub: argparse._SubParsersAction) -> None:
    bootstrap = os.environ.get("INTENTSTREAM_BOOTSTRAP", "127.0.0.1:9092")

    p = sub.add_parser("worker", help="run a scoring worker (Faust)")
    add_worker_args(p)
    p.add_argument("--loglevel", default="info")
    p.set_defaults(func=run_worker)

    p = sub.add_parser("load", help="send simulated or file events to the clickstream topic")
    _add_source_args(p)
    p.add_argument("--bootstrap", default=bootstrap)
    p.add_argument("--topic", default="clickstream")
    p.add_argument("--partitions", type=int, default=6, help="if the topic must be created")
    p.add_argument("--rate", type=float, default=0.0, help="events/s (0 = as fast as possible)")
    p.add_argument("--limit", type=int)
    p.set_defaults(func=run_load)

    p = sub.add_parser("tail", help="pretty-print intents as they arrive")
    p.add_argument("--bootstrap", default=bootstrap)
    p.add_argument("--topic", default="intents")
    p.add_argument("--from-beginning", action="store_true", help="from the topic's start, not only new intents")
    p.add_argument("--limit", type=int, help="stop after this many intents")
    p.add_argument("--seconds", type=float, help="stop after this long")
    p.set_defaults(func=run_tail)

    p = sub.add_parser("demo", help="local demo: broker, worker, simulated shoppers, live intents")
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--rate", type=float, default=50.0, help="events/s sent by the simulated shoppers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    p.add_argument("--keep-kafka", action="store_true", help="leave the broker running afterwards")
    p.set_defaults(func=run_demo)
