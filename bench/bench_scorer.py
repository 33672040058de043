"""Batched GRU scoring alone: session-steps/s by batch size, on cpu (and cuda when present).

One "session-step" = one click of one session through the worker's scoring call (Scorer.run with T=1,
the shape of a micro-batch where every user has one new click). DESIGN §7 asks ≥ 50M/s on an H200.

    .venv/bin/python bench/bench_scorer.py                       # cpu, and cuda if available
    .venv/bin/python bench/bench_scorer.py --device cuda --batches 1024,16384,131072
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from streams.scorer import Scorer  # noqa: E402

BATCHES = (1, 16, 128, 512, 2048, 8192)


def measure(scorer: Scorer, batch: int, min_seconds: float = 1.0) -> float:
    rng = np.random.default_rng(0)
    spec = scorer.spec
    cat = np.stack([rng.integers(0, 8, batch), rng.integers(0, spec.n_item_buckets, batch),
                    rng.integers(0, spec.n_category_buckets, batch)], axis=1)
    num = rng.standard_normal((batch, spec.n_numeric)).astype(np.float32)
    roll = rng.standard_normal((batch, spec.n_rolling)).astype(np.float32)
    lengths = [1] * batch
    h0 = np.zeros((batch, scorer.hidden_size), dtype=np.float32)
    scorer.run(cat, num, roll, lengths, h0)  # warm-up (and CUDA context)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds:
        scorer.run(cat, num, roll, lengths, h0)
        n += 1
    if scorer.device.type == "cuda":
        torch.cuda.synchronize()
    return n * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cpu, plus cuda when available)")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the worker uses 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print("| device | batch | session-steps/s | µs per step |\n|---|---|---|---|")
    for device in devices:
        scorer = Scorer.load(device=device)
        for b in map(int, args.batches.split(",")):
            rate = measure(scorer, b)
            print(f"| {device} | {b} | {rate:,.0f} | {1e6 / rate:.2f} |", flush=True)


if __name__ == "__main__":
    main()
