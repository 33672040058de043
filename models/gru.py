"""IntentGRU: P(this session reaches a purchase after this event), one score per event.

Per event: embeddings of (type, item bucket, category bucket) + normalized numerics -> GRU.
Head: MLP on [GRU hidden, normalized rolling-window features] -> logit, then a fitted affine
calibration (Platt scaling, identity until `train` fits it on validation data).

Paths over the same weights:
- `forward(cat, num, roll, lengths)`: the whole padded batch of sequences, for training/evaluation.
- `step(cat, num, roll, h)`: one event per row given the previous hidden state (export, tests);
  `step_fused` is the same through one GRU-cell kernel (the worker's one-click micro-batches).
- `run_packed(...)`: the worker's micro-batch, many sessions continued from their stored states by
  different numbers of events, without padding.
The GRU is causal, so the output at t never depends on padding after t; `lengths` is accepted for
callers' clarity and used only to zero padded positions.
Normalization statistics are buffers, so they are saved with the weights and featurization stays stateless.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence


@dataclass(frozen=True)
class GRUConfig:
    n_types: int
    n_item_buckets: int
    n_category_buckets: int
    n_numeric: int
    n_rolling: int
    hidden_size: int = 64
    type_dim: int = 8
    item_dim: int = 16
    category_dim: int = 8
    head_hidden: int = 64
    dropout: float = 0.0  # on the embeddings during training only (eval/step paths are unaffected)
    head_dropout: float = 0.0  # on the head's input [h, roll] during training only

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_spec(cls, spec, **overrides) -> "GRUConfig":
        return cls(
            n_types=spec.n_types,
            n_item_buckets=spec.n_item_buckets,
            n_category_buckets=spec.n_category_buckets,
            n_numeric=spec.n_numeric,
            n_rolling=spec.n_rolling,
            **overrides,
        )


class IntentGRU(nn.Module):
    def __init__(self, config: GRUConfig):
        super().__init__()
        self.config = config
        c = config
        self.hidden_size = c.hidden_size
        self.type_emb = nn.Embedding(c.n_types, c.type_dim)
        self.item_emb = nn.Embedding(c.n_item_buckets, c.item_dim)
        self.category_emb = nn.Embedding(c.n_category_buckets, c.category_dim)
        self.emb_dropout = nn.Dropout(c.dropout)
        in_dim = c.type_dim + c.item_dim + c.category_dim + c.n_numeric
        self.gru = nn.GRU(in_dim, c.hidden_size, batch_first=True)
        self.head = nn.Sequential(
            nn.Dropout(c.head_dropout),
            nn.Linear(c.hidden_size + c.n_rolling, c.head_hidden),
            nn.ReLU(),
            nn.Linear(c.head_hidden, 1),
        )
        # Fitted on training data (set_normalization); identity until then.
        self.register_buffer("num_mean", torch.zeros(c.n_numeric))
        self.register_buffer("num_std", torch.ones(c.n_numeric))
        self.register_buffer("roll_mean", torch.zeros(c.n_rolling))
        self.register_buffer("roll_std", torch.ones(c.n_rolling))
        # Platt calibration of the head's logit: calibrated = scale * raw + bias.
        self.register_buffer("calib_scale", torch.ones(()))
        self.register_buffer("calib_bias", torch.zeros(()))

    # -- helpers -------------------------------------------------------------------------------------
    def set_normalization(self, num_mean, num_std, roll_mean, roll_std) -> None:
        """Copy training-set statistics into the buffers; tiny stds are floored to avoid blow-ups."""
        with torch.no_grad():
            self.num_mean.copy_(torch.as_tensor(num_mean, dtype=torch.float32))
            self.num_std.copy_(torch.as_tensor(num_std, dtype=torch.float32).clamp_min(1e-3))
            self.roll_mean.copy_(torch.as_tensor(roll_mean, dtype=torch.float32))
            self.roll_std.copy_(torch.as_tensor(roll_std, dtype=torch.float32).clamp_min(1e-3))

    def set_calibration(self, scale: float, bias: float) -> None:
        with torch.no_grad():
            self.calib_scale.fill_(float(scale))
            self.calib_bias.fill_(float(bias))

    def init_hidden(self, batch: int = 1) -> torch.Tensor:
        """The hidden state before a session's first event."""
        return torch.zeros(batch, self.hidden_size, device=self.num_mean.device)

    def _gru_input(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        # cat (..., 3) int64, num (..., Fn) -> (..., in_dim)
        emb = torch.cat((self.type_emb(cat[..., 0]), self.item_emb(cat[..., 1]), self.category_emb(cat[..., 2])),
                        dim=-1)
        return torch.cat((self.emb_dropout(emb), (num - self.num_mean) / self.num_std), dim=-1)

    def _head(self, h: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
        # h (..., H), roll (..., Fr) -> calibrated logits (...)
        z = torch.cat((h, (roll - self.roll_mean) / self.roll_std), dim=-1)
        raw = self.head(z).squeeze(-1)
        return raw * self.calib_scale + self.calib_bias

    # -- the two paths -------------------------------------------------------------------------------
    def forward(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        roll: torch.Tensor,
        lengths: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """cat (B,T,3) int64, num (B,T,Fn), roll (B,T,Fr) -> logits (B,T); padded positions are 0.
        With return_hidden, also the GRU outputs (B,T,H)."""
        x = self._gru_input(cat, num)                   # (B, T, in_dim)
        out, _ = self.gru(x)                            # (B, T, H), causal
        logits = self._head(out, roll)                  # (B, T)
        if lengths is not None:
            t = torch.arange(cat.shape[1], device=cat.device)
            logits = logits.masked_fill(t[None, :] >= lengths.to(cat.device)[:, None], 0.0)
        if return_hidden:  # training's auxiliary heads read the hidden states (models.train)
            return logits, out
        return logits

    def step(
        self, cat: torch.Tensor, num: torch.Tensor, roll: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One event per row: cat (B,3), num (B,Fn), roll (B,Fr), h (B,H) -> p (B,), h_new (B,H)."""
        x = self._gru_input(cat, num).unsqueeze(1)      # (B, 1, in_dim)
        out, _ = self.gru(x, h.unsqueeze(0).contiguous())
        h_new = out[:, 0]                               # (B, H)
        return torch.sigmoid(self._head(h_new, roll)), h_new

    def step_fused(
        self, cat: torch.Tensor, num: torch.Tensor, roll: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`step` through one fused GRU-cell kernel instead of cuDNN's RNN call: the worker's path when every
        session of a micro-batch has one new click. cuDNN sets its RNN up on every call, which cost ~0.7 ms
        on an H200 even for one row (bench/bench_scorer.py); same weights, same math (tested equal)."""
        g = self.gru
        h_new = torch.gru_cell(self._gru_input(cat, num), h, g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0,
                               g.bias_hh_l0)
        return torch.sigmoid(self._head(h_new, roll)), h_new

    def run_packed(
        self, cat: torch.Tensor, num: torch.Tensor, roll: torch.Tensor, h0: torch.Tensor,
        batch_sizes: torch.Tensor, sorted_indices: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Continue B sessions from their states h0 (B,H) by different numbers of events, without padding
        (the worker's micro-batch path; streams.scorer.packed_order lays the rows out): N rows in
        PackedSequence order (time-major, sessions by decreasing length; `batch_sizes` (T,) on the cpu)
        -> p (N,) in that row order, h_last (B,H) after each session's last event, in the sessions' order."""
        packed = PackedSequence(self._gru_input(cat, num), batch_sizes, sorted_indices,
                                torch.argsort(sorted_indices))
        out, h_n = self.gru(packed, h0.unsqueeze(0).contiguous())
        return torch.sigmoid(self._head(out.data, roll)), h_n[0]

    def hidden_from_inputs(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        """Hidden state after a run of events, cat (B,T,3), num (B,T,Fn) -> (B,H); rebuilds a
        session's state from its recent events without touching the head or rolling features."""
        out, _ = self.gru(self._gru_input(cat, num))
        return out[:, -1]
