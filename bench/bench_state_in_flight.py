"""Size of the state records a saturated worker writes, while intents are still in delivery.

A state keeps every intent not yet known delivered (DESIGN §4: a crash must be answered by re-emitting
them byte for byte). A saturated worker knows a batch delivered only once its intents are acknowledged,
with up to two batches before it in delivery (streams/app.py MAX_IN_FLIGHT - 1), so while batch N is scored, the
intents of batches N-2 and N-1 are still kept: lag 3. Lag 1 is the floor (only the batch's own intents).
This replays the benchmark's stream through Pipeline.process with that lag, no Kafka, and reports the
sizes of the records written (what the changelog receives), against the 2 KiB per-user budget.

    .venv/bin/python bench/bench_state_in_flight.py [--events 100000] [--batches 512,2048] [--lags 1,3]
"""
from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_pipeline import PARTITIONS, make_events  # noqa: E402
from models.state import UserState  # noqa: E402
from schemas.codec import encode_click  # noqa: E402
from streams.pipeline import Pipeline, Record  # noqa: E402
from streams.scorer import Scorer  # noqa: E402


def record_sizes(pipeline: Pipeline, records: list[Record], max_batch: int, lag: int) -> np.ndarray:
    table: dict[str, bytes] = {}
    ends: list[dict[str, int]] = []  # per batch: the last offset of each source after it
    sizes = []
    for i in range(0, len(records), max_batch):
        batch = records[i:i + max_batch]
        delivered = dict(ends[-lag]) if len(ends) >= lag else {}
        for r in batch:
            delivered.setdefault(r.source, -1)
        out = pipeline.process(batch, lambda u, _r: UserState.from_bytes(table[u]) if u in table else None, delivered)
        end = dict(ends[-1]) if ends else {}
        for r in batch:
            end[r.source] = max(end.get(r.source, -1), r.offset)
        ends.append(end)
        for user_id, state in out.states.items():
            table[user_id] = state.to_bytes()
            sizes.append(len(table[user_id]))
    return np.array(sizes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batches", default="512,2048")
    ap.add_argument("--lags", default="1,3")
    args = ap.parse_args()
    offsets = [0] * PARTITIONS
    records = []
    for event in make_events(args.events, seed=1):
        p = zlib.crc32(event.user_id.encode()) % PARTITIONS
        records.append(Record(event.user_id.encode(), encode_click(event), "clicks", p, offsets[p], 0.0))
        offsets[p] += 1
    pipeline = Pipeline(Scorer.load(device="cpu"))
    print("| max_batch | delivered lag (batches) | records written | median | p99 | max | over 2 KiB |")
    print("|---|---|---|---|---|---|---|")
    for max_batch in map(int, args.batches.split(",")):
        for lag in map(int, args.lags.split(",")):
            a = record_sizes(pipeline, records, max_batch, lag)
            print(f"| {max_batch} | {lag} | {len(a):,} | {np.median(a):,.0f} B | {np.percentile(a, 99):,.0f} B | "
                  f"{a.max():,} B | {np.mean(a > 2048):.1%} |", flush=True)


if __name__ == "__main__":
    main()
