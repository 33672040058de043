"""Replay against live, and failover, on one broker in one run.

Cases (same events, same model, same machine):
  live      one worker (`intentstream worker`) scores the topic from the start
  replay    `intentstream replay` over the same topic into a backfill topic
  failover  two workers under a paced load, one SIGKILLed: time until its partitions produce intents
            again, time until every event sent so far has its intent, exact duplicates per 10k events

Throughput = events / (last - first output record time), so process start-up is not counted.
Usage:  .venv/bin/python bench/bench_replay.py [--users N] [--days D] [--bootstrap HOST:PORT] ...
"""
from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

USERS = 3000  # simulated users (about 7 events per user-day)
DAYS = 3
PARTITIONS = 6
FAILOVER_USERS = 800
FAILOVER_RATE = 300.0  # events/s offered during the failover case
SESSION_TIMEOUT = 6.0  # worker --session-timeout for the failover case

log = logging.getLogger("bench_replay")


def output_span(bootstrap: str, topic: str, n_ids: int, timeout_s: float) -> tuple[list, float]:
    """Read `topic` until n distinct event ids are in; returns (records, first-to-last record time in s)."""
    from tests.integration.helpers import collect

    records = collect(bootstrap, topic, lambda rs: len({orjson.loads(r.value)["event_id"] for r in rs}) >= n_ids,
                      timeout_s=timeout_s)
    times = [r.timestamp for r in records]
    return records, (max(times) - min(times)) / 1000.0 if times else float("nan")


def model_dir(tmp: Path) -> tuple[Path, str]:
    from models import artifacts
    from tests.integration.helpers import make_model

    if (artifacts.DEFAULT_MODEL_DIR / artifacts.META_FILE).exists():
        return artifacts.DEFAULT_MODEL_DIR, "shipped model"
    return make_model(tmp / "model", hidden_size=64), "random-weight model, hidden 64 (no shipped model yet)"


def run_live_and_replay(args, bootstrap: str, tmp: Path, model: Path) -> list[tuple[str, str, str]]:
    from models.simulator import SimConfig, simulate
    from streams.replay import ReplayConfig, run_replay
    from streams.topics import ensure_topics
    from tests.integration.helpers import Pipeline, private_ops_env, produce, start_worker, stop_worker

    suffix = uuid.uuid4().hex[:8]
    pipe = Pipeline.unique(bootstrap, suffix, partitions=PARTITIONS)
    ensure_topics(bootstrap, {pipe.clicks: PARTITIONS, pipe.intents: PARTITIONS, pipe.dlq: 1})
    events = [e for e, _p in simulate(SimConfig(n_users=args.users, n_days=args.days, seed=1))]
    produce(bootstrap, pipe.clicks, events)
    n = len(events)
    log.info("%d events in %s", n, pipe.clicks)

    worker = start_worker(pipe, tmp / "live", tmp / "live.log", ["--model", str(model)], env=private_ops_env(suffix))
    try:
        _, live_s = output_span(bootstrap, pipe.intents, n, timeout_s=600)
    finally:
        stop_worker(worker)

    config = ReplayConfig(name=f"bench-{suffix}", bootstrap=bootstrap, source_topics=(pipe.clicks,),
                          data_dir=tmp / "replay", model_dir=model, progress="off", max_batch=args.replay_batch)
    result = run_replay(config)
    _, replay_s = output_span(bootstrap, config.output, n, timeout_s=120)
    live_rate, replay_rate = n / live_s, n / replay_s
    return [
        ("live worker, events/s", f"{live_rate:,.0f}", "-"),
        ("replay, events/s", f"{replay_rate:,.0f}", "-"),
        ("replay / live", f"{replay_rate / live_rate:.2f}x", ">= 1.0x (DESIGN §7)"),
        ("replay loop only (ReplayResult.rate), events/s", f"{result.rate:,.0f}", "-"),
    ]


def run_failover(args, bootstrap: str, tmp: Path, model: Path) -> list[tuple[str, str, str]]:
    from models.simulator import SimConfig, simulate
    from streams.topics import ensure_topics
    from tests.integration.helpers import (
        Pipeline, group_members, intents_by_event, private_ops_env, produce, rescored_events, spread, start_worker,
        stop_worker, wait_for,
    )

    suffix = uuid.uuid4().hex[:8]
    pipe = Pipeline.unique(bootstrap, suffix, partitions=PARTITIONS)
    ensure_topics(bootstrap, {pipe.clicks: PARTITIONS, pipe.intents: PARTITIONS, pipe.dlq: 1})
    events = [e for e, _p in simulate(SimConfig(n_users=args.failover_users, n_days=2, seed=2))]
    env = private_ops_env(suffix)
    flags = ["--model", str(model), "--session-timeout", str(args.session_timeout),
             "--standby-replicas", str(args.standby)]
    workers = [start_worker(pipe, tmp / f"f{i}", tmp / f"f{i}.log", flags, env=env) for i in range(2)]

    def owners(n):
        members = group_members(bootstrap, pipe.app_id)
        parts = spread(members, pipe.clicks)
        return members if len(members) == n and all(parts) and sum(map(len, parts)) == PARTITIONS else None

    try:
        before = wait_for(lambda: owners(2), 180, what="two members")
        sent = [0]

        def counted():
            for ev in events:
                yield ev
                sent[0] += 1

        loader = threading.Thread(target=produce, args=(bootstrap, pipe.clicks, counted(), args.failover_rate),
                                  daemon=True)
        loader.start()
        wait_for(lambda: sent[0] >= len(events) // 3, 120, what="a third of the load")
        workers[0].send_signal(signal.SIGKILL)
        killed_at = time.time()
        sent_at_kill = sent[0]
        after = wait_for(lambda: owners(1), 120, what="failover")
        moved = set().union(*(t.get(pipe.clicks, set()) for m, t in before.items() if m not in after))
        loader.join()
        records, _ = output_span(bootstrap, pipe.intents, len(events), timeout_s=300)
    finally:
        for w in workers:
            stop_worker(w)
    by_id, duplicates = intents_by_event([orjson.loads(r.value) for r in records], strict=False)
    rescored = len(rescored_events(by_id))
    lost = len({e.event_id for e in events} - set(by_id))
    first_moved = min(r.timestamp / 1000.0 for r in records if r.partition in moved and r.timestamp / 1000.0 > killed_at)
    # Caught up: every event sent before the kill has its intent (record time of the last one needed).
    needed = {e.event_id for e in events[:sent_at_kill]}
    caught_up = max(r.timestamp / 1000.0 for r in records if orjson.loads(r.value)["event_id"] in needed)
    return [
        (f"failover: SIGKILL -> first intent on moved partitions (session timeout {args.session_timeout:.0f}s, "
         f"standby {args.standby})", f"{first_moved - killed_at:.1f} s", "-"),
        ("failover: SIGKILL -> every event sent before the kill answered", f"{max(caught_up - killed_at, 0):.1f} s", "-"),
        ("failover: duplicate intents per 10k events", f"{10_000 * duplicates / len(events):.0f}",
         f"lost: {lost}, re-scored (not exact copies): {rescored}; both must be 0"),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=USERS)
    p.add_argument("--days", type=int, default=DAYS)
    p.add_argument("--replay-batch", type=int, default=4096)
    p.add_argument("--failover-users", type=int, default=FAILOVER_USERS)
    p.add_argument("--failover-rate", type=float, default=FAILOVER_RATE)
    p.add_argument("--session-timeout", type=float, default=SESSION_TIMEOUT)
    p.add_argument("--standby", type=int, default=1)
    p.add_argument("--skip-failover", action="store_true")
    p.add_argument("--bootstrap", help="use this broker instead of starting one")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)

    from deploy.kafka import local_broker

    tmp = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    cfg = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        cfg = local_broker.BrokerConfig(data_dir=tmp / "kafka", port=local_broker.free_port_pair())
        local_broker.start(cfg)
        bootstrap = cfg.bootstrap
    try:
        model, model_note = model_dir(tmp)
        rows = run_live_and_replay(args, bootstrap, tmp, model)
        if not args.skip_failover:
            rows += run_failover(args, bootstrap, tmp, model)
    finally:
        if cfg is not None:
            local_broker.stop(cfg)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nmodel: {model_note}; {args.users} users x {args.days} days; {PARTITIONS} partitions")
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'figure':>12}  target")
    for case, figure, target in rows:
        print(f"{case:<{width}}  {figure:>12}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
