"""Batched GRU scoring alone: session-steps/s by batch size, on cpu (and cuda when present).

One "session-step" = one click of one session through the worker's scoring call (T=1, the shape of a
micro-batch where every user has one new click). DESIGN §7 asks ≥ 50M/s on an H200, with the CPU's share
of a batch kept small. Three rates:
- end to end: `Scorer.run` from numpy arrays to numpy results, copies to and from the device included
  (what one worker process gets; one-click sessions take the fused GRU cell);
- on the GPU, inputs already there, timed with CUDA events (what the GPU itself does):
  `IntentGRU.step_fused` (the fused GRU cell) and `IntentGRU.run_packed` (cuDNN's RNN, the path of
  micro-batches where some session has several clicks), with TF32 off (the worker's setting).
On cuda it also prints how far TF32 would move the scores against the cpu's, one-click and mixed batches.

    .venv/bin/python bench/bench_scorer.py                       # cpu, and cuda if available
    .venv/bin/python bench/bench_scorer.py --device cuda --cuda-batches 1024,16384,131072
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from streams.scorer import Scorer, available_devices  # noqa: E402

CPU_BATCHES = (1, 16, 128, 512, 2048, 8192)
CUDA_BATCHES = CPU_BATCHES + (32768, 131072, 524288)


def make_inputs(scorer: Scorer, batch: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random clicks in the model's input ranges, and hidden states like a running session's (in (-1, 1))."""
    rng = np.random.default_rng(seed)
    spec = scorer.spec
    cat = np.stack([rng.integers(0, spec.n_types, batch), rng.integers(0, spec.n_item_buckets, batch),
                    rng.integers(0, spec.n_category_buckets, batch)], axis=1)
    num = rng.standard_normal((batch, spec.n_numeric)).astype(np.float32)
    roll = rng.standard_normal((batch, spec.n_rolling)).astype(np.float32)
    h0 = np.tanh(rng.standard_normal((batch, scorer.hidden_size))).astype(np.float32)
    return cat, num, roll, h0


def end_to_end_rate(scorer: Scorer, batch: int, min_seconds: float) -> float:
    cat, num, roll, h0 = make_inputs(scorer, batch)
    lengths = [1] * batch
    scorer.run(cat, num, roll, lengths, h0)  # warm-up (and CUDA context); results come back as numpy
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds:
        scorer.run(cat, num, roll, lengths, h0)
        n += 1
    return n * batch / (time.perf_counter() - t0)


@torch.inference_mode()
def on_gpu_rate(scorer: Scorer, batch: int, min_seconds: float, packed: bool) -> float:
    dev = scorer.device
    cat, num, roll, h0 = (torch.from_numpy(x).to(dev) for x in make_inputs(scorer, batch))
    batch_sizes, order = torch.tensor([batch]), torch.arange(batch, device=dev)

    def call() -> None:
        if packed:
            scorer.model.run_packed(cat, num, roll, h0, batch_sizes, order)
        else:
            scorer.model.step_fused(cat, num, roll, h0)

    for _ in range(3):
        call()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        call()
    torch.cuda.synchronize()
    calls = max(10, int(min_seconds / max((time.perf_counter() - t0) / 10, 1e-7)))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        call()
    end.record()
    torch.cuda.synchronize()
    return calls * batch / (start.elapsed_time(end) / 1e3)


def tf32_drift(cuda: Scorer, cpu: Scorer, batch: int = 65536) -> dict[str, float]:
    """max |p_cuda - p_cpu| over one batch of one-click sessions and one of 1-4 clicks, TF32 off and on."""
    cat, num, roll, h0 = make_inputs(cpu, batch, seed=1)
    mixed = np.random.default_rng(2).integers(1, 5, batch)
    mixed = mixed[: int(np.searchsorted(np.cumsum(mixed), batch, side="right"))]
    drift = {}
    for name, lengths, h in (("one-click", [1] * batch, h0), ("1-4 clicks", mixed.tolist(), h0[:len(mixed)])):
        rows = int(sum(lengths))
        p_cpu, _ = cpu.run(cat[:rows], num[:rows], roll[:rows], lengths, h)
        for tf32 in (False, True):
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
            p, _ = cuda.run(cat[:rows], num[:rows], roll[:rows], lengths, h)
            drift[f"{name}, TF32 {'on' if tf32 else 'off'}"] = float(np.abs(p - p_cpu).max())
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    return drift


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cpu, plus cuda when available)")
    ap.add_argument("--cpu-batches", default=",".join(map(str, CPU_BATCHES)))
    ap.add_argument("--cuda-batches", default=",".join(map(str, CUDA_BATCHES)))
    ap.add_argument("--seconds", type=float, default=1.0, help="minimum time per measurement")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the worker uses 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    devices = [args.device] if args.device else available_devices()
    if "cuda" in devices:
        print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    print(f"# torch CPU threads: {args.threads}")
    print("| device | batch | end to end: session-steps/s | µs per call | on the GPU: fused cell | cuDNN packed |")
    print("|---|---|---|---|---|---|")
    for device in devices:
        scorer = Scorer.load(device=device)
        batches = args.cuda_batches if device == "cuda" else args.cpu_batches
        for b in map(int, batches.split(",")):
            rate = end_to_end_rate(scorer, b, args.seconds)
            row = f"| {device} | {b:,} | {rate:,.0f} | {1e6 * b / rate:,.1f} |"
            if device == "cuda":
                row += "".join(f" {on_gpu_rate(scorer, b, args.seconds, packed):,.0f} |" for packed in (False, True))
            else:
                row += " - | - |"
            print(row, flush=True)
    if "cuda" in devices:
        drift = tf32_drift(Scorer.load(device="cuda"), Scorer.load(device="cpu"))
        print("# max |p_cuda - p_cpu| over 65,536 clicks: "
              + ", ".join(f"{k} {v:.2e}" for k, v in drift.items()))


if __name__ == "__main__":
    main()
