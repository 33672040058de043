"""Batched incremental GRU scoring on cpu or cuda (no Faust here).

One call scores a whole micro-batch: each row is one session's new clicks, continued from that session's
stored hidden state in one padded GRU pass (equal to stepping the clicks one by one, tested).
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


def _padded(rows: np.ndarray, seq: np.ndarray, pos: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(B, T, F) zeros with rows[r] at [seq[r], pos[r]]."""
    out = np.zeros(shape + rows.shape[1:], dtype=rows.dtype)
    out[seq, pos] = rows
    return out


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA device is available")
    return torch.device(requested)


class Scorer:
    def __init__(self, artifact: artifacts.Artifact, device: str = "auto"):
        self.device = pick_device(device)
        self.artifact = artifact
        self.model = artifact.model.to(self.device).eval()
        self.spec: FeatureSpec = artifact.spec
        self.version: str = artifact.version
        self.threshold: float = artifact.threshold
        self.hidden_size: int = self.model.hidden_size
        log.info("scorer: model %s on %s", self.version, self.device)

    @classmethod
    def load(cls, model_dir: Path | None = None, device: str = "auto") -> "Scorer":
        return cls(artifacts.load(model_dir or artifacts.DEFAULT_MODEL_DIR), device)

    @torch.inference_mode()
    def run(self, cat: np.ndarray, num: np.ndarray, roll: np.ndarray, lengths: Sequence[int],
            h0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score B sequences of different lengths in one padded GRU pass.

        cat (N,3), num (N,Fn), roll (N,Fr): the sequences' events one after another (sequence i is the
        next lengths[i] rows), h0 (B,H) -> p (N,) float64 per row, h_last (B,H) float32 = the hidden
        state after each sequence's last event. Padding sits after the last event and the GRU is causal,
        so it never changes a real position's output.
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        b, t = len(lengths), int(lengths.max())
        if t == 1:  # the common case at low load: one click per user, no padding needed
            cat, num, roll = cat.reshape(b, 1, -1), num.reshape(b, 1, -1), roll.reshape(b, 1, -1)
        else:  # row r of the input is step pos[r] of sequence seq[r]
            seq = np.repeat(np.arange(b), lengths)
            pos = np.arange(len(seq)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            cat, num, roll = (_padded(x, seq, pos, (b, t)) for x in (cat, num, roll))
        dev = self.device
        p, out = self.model.run(torch.from_numpy(cat).to(dev), torch.from_numpy(num).to(dev),
                                torch.from_numpy(roll).to(dev), torch.from_numpy(h0).to(dev))
        p = p.double().cpu().numpy()
        out = out.float().cpu().numpy()
        h_last = out[np.arange(b), lengths - 1]
        return (p[:, 0] if t == 1 else p[seq, pos]), h_last

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
