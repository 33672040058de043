"""Batched incremental GRU scoring on cpu or cuda (no Faust here).

One call scores a whole micro-batch: each row is one session's new clicks, continued from that session's
stored hidden state in one padded GRU pass (equal to stepping the clicks one by one, tested).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from models import artifacts
from models.features import FeatureSpec, session_event_inputs

log = logging.getLogger(__name__)


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
    def run(self, cats: list[np.ndarray], nums: list[np.ndarray], rolls: list[np.ndarray],
            h0: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Score B sequences of different lengths in one padded GRU pass.

        cats[i] (T_i,3), nums[i] (T_i,Fn), rolls[i] (T_i,Fr), h0 (B,H) -> p: B arrays (T_i,) float64,
        h_last (B,H) float32 = the hidden state after each sequence's last event. Padding sits after the
        last event and the GRU is causal, so it never changes a real position's output.
        """
        lengths = np.fromiter((len(c) for c in cats), dtype=np.int64, count=len(cats))
        b, t = len(cats), int(lengths.max())
        if t == 1:  # the common case at low load: one click per user, no padding needed
            cat, num, roll = np.stack(cats), np.stack(nums), np.stack(rolls)
        else:
            cat = np.zeros((b, t, 3), dtype=np.int64)
            num = np.zeros((b, t, nums[0].shape[1]), dtype=np.float32)
            roll = np.zeros((b, t, rolls[0].shape[1]), dtype=np.float32)
            for i, n in enumerate(lengths):
                cat[i, :n], num[i, :n], roll[i, :n] = cats[i], nums[i], rolls[i]
        dev = self.device
        p, out = self.model.run(torch.from_numpy(cat).to(dev), torch.from_numpy(num).to(dev),
                                torch.from_numpy(roll).to(dev), torch.from_numpy(h0).to(dev))
        p = p.double().cpu().numpy()
        out = out.float().cpu().numpy()
        h_last = out[np.arange(b), lengths - 1]
        return [p[i, :n] for i, n in enumerate(lengths)], h_last

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
