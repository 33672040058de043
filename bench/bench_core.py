"""The worker's pure core alone (streams.core_process.BatchCore, no Kafka, no Faust): simulated clicks in
micro-batches, exactly what the worker's core process runs per batch: decoded states cached between batches
(those not cached are decoded from the stored bytes), every touched state encoded for the table, and the
garbage collector tuned as in the worker (streams.pipeline.settle_gc).

    .venv/bin/python bench/bench_core.py                      # 60k clicks, batches of 2000
    .venv/bin/python bench/bench_core.py --code /tmp/old      # the same benchmark on another checkout's code
    .venv/bin/python bench/bench_core.py --device cuda        # scoring on the GPU (the rest is the same)

`--code` puts another checkout (e.g. `git worktree add /tmp/old <commit>`) first on the import path, so
two versions are compared with one benchmark; run them back to back, the machine is noisy.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="the scorer's device: cpu, cuda or auto")
    ap.add_argument("--code", type=Path, default=REPO, help="checkout whose models/, schemas/, streams/ to time")
    args = ap.parse_args()
    sys.path.insert(0, str(args.code.resolve()))

    import torch

    from models.simulator import SimConfig, simulate
    from schemas.codec import encode_click
    from streams.core_process import BatchCore
    from streams.pipeline import Pipeline, Record, settle_gc
    from streams.settings import Settings
    from streams.scorer import Scorer

    torch.set_num_threads(1)
    clicks = []
    for ev, _p in simulate(SimConfig(n_users=max(100, args.events // 9), n_days=4, seed=3)):
        clicks.append(ev)
        if len(clicks) == args.events:
            break
    records = [Record(e.user_id.encode(), encode_click(e), "clickstream", hash(e.user_id) % 6, i, 0.0)
               for i, e in enumerate(clicks)]
    pipeline = Pipeline(Scorer.load(device=args.device))
    settle_gc()
    rates = []
    for _ in range(args.repeat):
        table: dict[str, bytes] = {}
        core = BatchCore(pipeline, Settings().state_cache_users)  # a fresh cache and table per repeat
        started = time.perf_counter()
        for i in range(0, len(records), args.batch):
            batch = records[i:i + args.batch]
            delivered: dict[str, int] = {}  # as if every earlier batch's intents were delivered by now
            for rec in batch:
                delivered[rec.source] = min(delivered.get(rec.source, rec.offset), rec.offset - 1)
            result = core.process(batch, lambda missing: {u: table.get(u) for u, _i in missing}, delivered, 0, [])
            table.update(result.states)
        rates.append(len(records) / (time.perf_counter() - started))
    print(f"code {args.code}, scoring on {pipeline.scorer.device}: {len(records):,} clicks in batches of {args.batch}: "
          + ", ".join(f"{r:,.0f}" for r in rates) + " events/s (best %s)" % f"{max(rates):,.0f}")


if __name__ == "__main__":
    main()
