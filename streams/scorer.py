"""Batched incremental GRU scoring on cpu or cuda (no Faust here).

One call scores a whole micro-batch: each sequence is one session's new clicks, continued from that session's
stored hidden state, all in one packed GRU pass (equal to stepping the clicks one by one, tested).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from models import artifacts
from models.features import FeatureSpec, session_event_inputs

log = logging.getLogger(__name__)


def packed_order(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where B back-to-back sequences' rows go in a PackedSequence (time-major, longest sequence first).

    -> order (N,): packed position -> row index; batch_sizes (T,): sequences still running at each step;
    sorted_idx (B,): the sequences by decreasing length (ties keep their order).
    """
    sorted_idx = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[sorted_idx]
    starts = (np.cumsum(lengths) - lengths)[sorted_idx]
    steps = np.arange(int(sorted_lengths[0]))[:, None]
    running = steps < sorted_lengths[None, :]  # (T, B): step t of the i-th longest sequence exists
    order = (starts[None, :] + steps)[running]  # row-major: step 0 of every sequence, then step 1, ...
    return order, running.sum(axis=1), sorted_idx


def available_devices() -> list[str]:
    """The devices this machine can score on: cpu, and cuda when there is a GPU."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA device is available")
    return torch.device(requested)


def keep_full_fp32() -> None:
    """No TF32 on CUDA: cuDNN's GRU uses it by default (10-bit mantissa), and a live score must equal the
    offline one within 1e-5 (DESIGN §5). bench/bench_scorer.py measures how far TF32 moves scores and what
    turning it off costs. The flags are process-wide; the worker process scores and nothing else."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


class Scorer:
    def __init__(self, artifact: artifacts.Artifact, device: str = "auto"):
        self.device = pick_device(device)
        if self.device.type == "cuda":
            keep_full_fp32()
        self.artifact = artifact
        self.model = artifact.model.to(self.device).eval()
        self.spec: FeatureSpec = artifact.spec
        self.version: str = artifact.version
        self.threshold: float = artifact.threshold
        self.hidden_size: int = self.model.hidden_size
        self._buffers: dict[str, torch.Tensor] = {}  # pinned host buffers for cuda transfers (_pinned)
        log.info("scorer: model %s on %s", self.version, self.device)

    @classmethod
    def load(cls, model_dir: Path | None = None, device: str = "auto") -> "Scorer":
        return cls(artifacts.load(model_dir or artifacts.DEFAULT_MODEL_DIR), device)

    @torch.inference_mode()
    def run(self, cat: np.ndarray, num: np.ndarray, roll: np.ndarray, lengths: Sequence[int],
            h0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score B sequences of different lengths in one GRU pass over their real steps only.

        cat (N,3), num (N,Fn), roll (N,Fr): the sequences' events one after another (sequence i is the
        next lengths[i] rows), h0 (B,H) -> p (N,) float64 per row, h_last (B,H) float32 = the hidden
        state after each sequence's last event.

        The rows go to the GRU as a PackedSequence, not padded to the longest: a micro-batch mixes many
        one-click users with a few long sessions, and padding them all to the longest made the GRU do
        about 4x the steps (bench/bench_core.py's stream: 510 real rows per batch of 512, 1,950 padded).
        When every sequence is one click, the rows need no packing and go through one fused GRU cell.
        """
        if len(lengths) == len(cat):
            p, h_last = self.model.step_fused(self._to_device("cat", cat), self._to_device("num", num),
                                              self._to_device("roll", roll), self._to_device("h0", h0))
            return self._to_host(p, h_last)
        order, batch_sizes, sorted_idx = packed_order(np.asarray(lengths, dtype=np.int64))
        p, h_last = self.model.run_packed(
            self._to_device("cat", cat, order), self._to_device("num", num, order),
            self._to_device("roll", roll, order), self._to_device("h0", h0),
            torch.from_numpy(batch_sizes), torch.from_numpy(sorted_idx).to(self.device))
        p_packed, h_last = self._to_host(p, h_last)
        p_rows = np.empty(len(order), dtype=np.float64)
        p_rows[order] = p_packed
        return p_rows, h_last

    def _to_device(self, name: str, array: np.ndarray, rows: np.ndarray | None = None) -> torch.Tensor:
        """`array` (or its `rows`, in that order) as a tensor on the scorer's device.

        On cuda it goes through a pinned host buffer kept per input: the driver copies pageable memory
        through its own staging buffers at a fraction of the bus's speed, and gathering straight into the
        pinned buffer makes the packed order cost no extra pass."""
        if self.device.type == "cpu":
            return torch.from_numpy(array if rows is None else array[rows])
        staged = self._pinned(name, array.shape if rows is None else (len(rows), *array.shape[1:]), array.dtype)
        if rows is None:
            np.copyto(staged.numpy(), array)
        else:
            np.take(array, rows, axis=0, out=staged.numpy())
        # Asynchronous: the buffer is reused by the next call only after _to_host waited for the stream.
        return staged.to(self.device, non_blocking=True)

    def _to_host(self, p: torch.Tensor, h_last: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """-> p float64, h_last float32 as numpy arrays the caller may keep."""
        if self.device.type == "cpu":
            return p.double().numpy(), h_last.float().numpy()
        p_host = self._pinned("p", tuple(p.shape), np.float32)
        h_host = self._pinned("h", tuple(h_last.shape), np.float32)
        p_host.copy_(p, non_blocking=True)
        h_host.copy_(h_last, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return p_host.numpy().astype(np.float64), h_host.numpy().copy()  # copies: the buffers are reused

    def _pinned(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
        """A page-locked host tensor of `shape` for `name`, grown (doubling) and reused across calls."""
        size = int(np.prod(shape))
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size or buffer.numpy().dtype != dtype:
            dtype_t = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
            grown = max(size, 2 * buffer.numel()) if buffer is not None else size
            buffer = self._buffers[name] = torch.empty(grown, dtype=dtype_t, pin_memory=True)
        return buffer[:size].view(shape)

    @torch.inference_mode()
    def rebuild_hidden(self, recent: list, first_position: int, first_prev_ts_ms: int | None) -> np.ndarray:
        """Hidden state after `recent` events (a session's stored tail), for a model that never saw them.

        Exact when the session has at most RECENT_K events; otherwise it starts from the stored tail only.
        """
        if not recent:
            return np.zeros(self.hidden_size, dtype=np.float32)
        cat, num = session_event_inputs(recent, first_position, first_prev_ts_ms, self.spec)
        h = self.model.hidden_from_inputs(torch.from_numpy(cat)[None].to(self.device),
                                          torch.from_numpy(num)[None].to(self.device))
        return h[0].float().cpu().numpy()
