"""Training: time-based split, GRU fit with early stopping, calibration, threshold, test metrics.

Flow (top to bottom, like nanoGPT's train.py): split sessions by start time -> fit normalization on the
training prefixes -> minibatch Adam on per-prefix BCE (unweighted: the class balance of the data is what
the probabilities must reflect) -> keep the weights with the best validation loss, stop after `patience`
epochs without improvement -> Platt-calibrate the logit on validation -> pick the max-F1 threshold on
validation -> report metrics on the test split (and the simulator's Bayes-optimal AUC when known).
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from models.dataset import Packed, SessionDataset, time_split
from models.evaluation import choose_threshold
from models.evaluation import metrics as eval_metrics
from models.features import FeatureSpec
from models.gru import GRUConfig, IntentGRU
from schemas.events import EVENT_TYPE_INDEX

_PURCHASE_INDEX = EVENT_TYPE_INDEX["purchase"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    hidden_size: int = 64
    item_dim: int = 8
    dropout: float = 0.2      # on the embeddings: item/category ids overfit first
    head_dropout: float = 0.0  # on the head's input [h, roll]
    lr_decay: float = 0.85    # multiply the learning rate by this after every epoch
    batch_size: int = 512     # large batches: a CPU GRU step costs about the same for 256 or 512 rows
    lr: float = 3e-3
    weight_decay: float = 1e-4  # Adam L2: the simulated test AUC gap fell 0.020 -> 0.016 with it
    max_epochs: int = 20
    patience: int = 4         # validation loss is noisy epoch to epoch
    seed: int = 0
    threads: int = 2
    val_frac: float = 0.15
    test_frac: float = 0.15
    max_minutes: float | None = None  # stop starting new epochs after this much training time
    # Auxiliary next-event loss (training only, see _AuxHeads): weight of (next-type CE + next-gap MSE).
    aux_weight: float = 0.0
    # Exponential moving average of the weights (per step; 0 = off): validation, early stopping and the
    # saved model use the averaged weights, which generalize better than the last noisy step's.
    ema: float = 0.0
    progress: bool = True


@dataclass
class TrainResult:
    model: IntentGRU
    meta: dict                       # what artifacts.save writes into meta.json (metrics, threshold, ...)
    split: tuple[np.ndarray, np.ndarray, np.ndarray]   # session indices: train, val, test
    history: list[dict] = field(default_factory=list)


# -- metrics ------------------------------------------------------------------------------------------

def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Step-level metrics (every prefix counts once), computed exactly as `intentstream evaluate` does."""
    out = dict(eval_metrics(y, p, threshold))
    y = np.asarray(y, dtype=np.float64)
    out["log_loss"] = float(-np.mean(y * np.log(np.clip(p, 1e-7, 1)) + (1 - y) * np.log(np.clip(1 - p, 1e-7, 1))))
    out["positive_rate"] = float(y.mean()) if len(y) else float("nan")
    return out


# -- batching and prediction --------------------------------------------------------------------------

def _batches(packed: Packed, idx: np.ndarray, batch_size: int, rng: np.random.Generator | None):
    """Length-bucketed batches: shuffle, sort chunks of 50 batches by length (less padding), shuffle batches."""
    idx = np.asarray(idx)
    if rng is not None:
        idx = rng.permutation(idx)
    chunk = batch_size * 50
    out = []
    for s in range(0, len(idx), chunk):
        part = idx[s:s + chunk]
        part = part[np.argsort(packed.lengths[part], kind="stable")]
        out.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    if rng is not None:
        out = [out[i] for i in rng.permutation(len(out))]
    return out


def _tensors(packed: Packed, b: np.ndarray):
    cat, num, roll, lengths, y = packed.batch(b)
    return (torch.from_numpy(cat), torch.from_numpy(num), torch.from_numpy(roll),
            torch.from_numpy(lengths), torch.from_numpy(y))


@torch.no_grad()
def predict_logits(model: IntentGRU, packed: Packed, idx: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Flat (sum of lengths,) logits for sessions `idx`, session order then step order."""
    model.eval()
    out = []
    for b in _batches(packed, np.asarray(idx), batch_size, None):
        cat, num, roll, lengths, _ = _tensors(packed, b)
        logits = model(cat, num, roll, lengths).numpy()
        out.append((b, [logits[i, :n] for i, n in enumerate(lengths.tolist())]))
    # restore the order of idx
    pos = {int(s): k for k, s in enumerate(np.asarray(idx))}
    per = [None] * len(idx)
    for b, rows in out:
        for s, r in zip(b, rows):
            per[pos[int(s)]] = r
    return np.concatenate(per) if per else np.zeros(0, np.float32)


def predict(model: IntentGRU, ds: SessionDataset, idx: np.ndarray | None = None) -> np.ndarray:
    """Flat (n_steps,) probabilities for sessions `idx` (all by default), in session then step order."""
    packed = Packed.from_dataset(ds)
    idx = np.arange(len(ds)) if idx is None else np.asarray(idx)
    return 1.0 / (1.0 + np.exp(-predict_logits(model, packed, idx).astype(np.float64)))


def _column_stats(a: np.ndarray, rows: np.ndarray, chunk: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of a[rows] per column, in float64, a chunk of rows at a time: a float64 copy of all
    training rows' inputs would take 5 GB at 200k simulated users."""
    total = np.zeros(a.shape[1])
    squares = np.zeros(a.shape[1])
    for i in range(0, len(rows), chunk):
        x = a[rows[i:i + chunk]].astype(np.float64)
        total += x.sum(0)
        squares += (x * x).sum(0)
    mean = total / max(len(rows), 1)
    return mean, np.sqrt(np.maximum(squares / max(len(rows), 1) - mean * mean, 0.0))


def _masked_bce(logits, y, lengths, prefixes_per_batch: float) -> torch.Tensor:
    """Summed BCE over the batch's prefixes, divided by a constant: the mean number of prefixes per batch.

    Not by this batch's own count: batches are bucketed by session length, so that would give each prefix
    of a batch of 1-click sessions ~50x the weight of a prefix in a batch of long sessions, and the model
    would learn the short sessions' low purchase rate for first clicks (first clicks scored at ~0.65x their
    rate, long sessions' late clicks above it: a bias by position that costs ranking across positions).
    """
    T = logits.shape[1]
    mask = torch.arange(T)[None, :] < lengths[:, None]
    target = y[:, None].expand_as(logits)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (loss * mask).sum() / prefixes_per_batch


class _AuxHeads(nn.Module):
    """Training-only heads on the GRU state: the next event's type (or "purchase"/"end" after the last
    kept event) and the log gap before it.

    Only ~6% of sessions buy, so the purchase label alone gives few positive examples; every click, though,
    says something about the shopper's intent through what comes next. Predicting the next event makes the
    hidden state carry that evidence (the posterior over intents that drives the purchase probability).
    Not part of the served model: the artifact holds IntentGRU only.
    """

    def __init__(self, hidden: int, n_types: int):
        super().__init__()
        self.n_types = n_types
        self.next_type = nn.Linear(hidden, n_types + 1)   # event types + "end"
        self.next_gap = nn.Linear(hidden, 1)

    def loss(self, out: torch.Tensor, cat: torch.Tensor, num: torch.Tensor, y: torch.Tensor,
             lengths: torch.Tensor, prefixes_per_batch: float) -> torch.Tensor:
        """out (B,T,H) GRU outputs, cat/num the (unnormalized) batch inputs, y (B,) labels."""
        B, T = cat.shape[:2]
        t = torch.arange(T)[None, :]
        valid = t < lengths[:, None]
        last = t == (lengths[:, None] - 1)
        nxt = torch.zeros(B, T, dtype=torch.long)
        nxt[:, :-1] = cat[:, 1:, 0]
        # after the last kept event: a purchase (label 1, the session was cut there) or the end
        end = torch.where(y > 0.5, torch.tensor(_PURCHASE_INDEX), torch.tensor(self.n_types))
        nxt = torch.where(last, end[:, None].expand(B, T), nxt)
        ce = nn.functional.cross_entropy(self.next_type(out).reshape(B * T, -1), nxt.reshape(-1),
                                         reduction="none").reshape(B, T)
        gap_mask = valid & ~last
        gap = torch.zeros(B, T)
        gap[:, :-1] = num[:, 1:, 0]  # log1p(seconds) before the next event (features.NUMERIC_NAMES[0])
        se = (self.next_gap(out).squeeze(-1) - gap) ** 2
        return ((ce * valid).sum() + (se * gap_mask).sum()) / prefixes_per_batch  # per prefix, like _masked_bce


def fit_platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Scale and bias minimizing validation log-loss of sigmoid(scale * logit + bias)."""
    z = torch.from_numpy(logits.astype(np.float64))
    t = torch.from_numpy(y.astype(np.float64))
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(params[0] * z + params[1], t)
        loss.backward()
        return loss

    opt.step(closure)
    a, b = params.detach().tolist()
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0:
        return 1.0, 0.0
    return float(a), float(b)


# -- the training run ---------------------------------------------------------------------------------

def fit(
    ds: SessionDataset,
    spec: FeatureSpec,
    config: TrainConfig = TrainConfig(),
    p_optimal: dict[str, float] | None = None,
) -> TrainResult:
    """Train on `ds` (all of it, split by time inside). `p_optimal`: event id -> Bayes-optimal score."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    t0 = time.perf_counter()

    tr, va, te = time_split(ds, config.val_frac, config.test_frac)
    if len(tr) == 0 or len(va) == 0:
        raise ValueError(f"not enough sessions to split ({len(ds)})")
    packed = Packed.from_dataset(ds)
    tr_rows = np.concatenate([np.arange(packed.offsets[i], packed.offsets[i] + packed.lengths[i]) for i in tr])

    model = IntentGRU(GRUConfig.from_spec(spec, hidden_size=config.hidden_size, item_dim=config.item_dim,
                                          dropout=config.dropout, head_dropout=config.head_dropout))
    model.set_normalization(*_column_stats(packed.num, tr_rows), *_column_stats(packed.roll, tr_rows))
    # Start the output bias at the training base rate: faster and calmer first epoch.
    base = float(np.clip(np.repeat(packed.label[tr], packed.lengths[tr]).mean(), 1e-4, 1 - 1e-4))
    with torch.no_grad():
        model.head[-1].bias.fill_(math.log(base / (1 - base)))
    aux = _AuxHeads(config.hidden_size, spec.n_types) if config.aux_weight > 0 else None
    params = list(model.parameters()) + (list(aux.parameters()) if aux is not None else [])
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    prefixes_per_batch = config.batch_size * float(packed.lengths[tr].mean())  # every prefix weighs the same
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=config.lr_decay)

    # The model that is validated and kept: an EMA copy of the trained weights, or the model itself.
    ema_model = copy.deepcopy(model) if config.ema > 0 else model
    ema_pairs = list(zip(ema_model.parameters(), model.parameters())) if config.ema > 0 else []

    def val_loss() -> tuple[float, float]:
        logits = predict_logits(ema_model, packed, va)
        y = np.repeat(packed.label[va], packed.lengths[va])
        z = torch.from_numpy(logits.astype(np.float64))
        loss = float(nn.functional.binary_cross_entropy_with_logits(z, torch.from_numpy(y.astype(np.float64))))
        auc = float(roc_auc_score(y, logits)) if 0 < y.sum() < len(y) else float("nan")
        return loss, auc

    best = (float("inf"), None, -1)
    history: list[dict] = []
    bad = 0
    for epoch in range(config.max_epochs):
        if config.max_minutes is not None and (time.perf_counter() - t0) / 60 > config.max_minutes:
            log.info("time budget reached after %d epochs", epoch)
            break
        model.train()
        batches = _batches(packed, tr, config.batch_size, rng)
        total, n = 0.0, 0
        bar = tqdm(batches, desc=f"epoch {epoch + 1}", unit="batch", disable=not config.progress,
                   mininterval=1.0, leave=False)
        for b in bar:
            cat, num, roll, lengths, y = _tensors(packed, b)
            if aux is None:
                loss = main = _masked_bce(model(cat, num, roll), y, lengths, prefixes_per_batch)
            else:
                logits, out = model(cat, num, roll, return_hidden=True)
                main = _masked_bce(logits, y, lengths, prefixes_per_batch)
                loss = main + config.aux_weight * aux.loss(out, cat, num, y, lengths, prefixes_per_batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            if ema_pairs:
                with torch.no_grad():
                    for pe, pm in ema_pairs:
                        pe.lerp_(pm, 1.0 - config.ema)
            total += main.item() * prefixes_per_batch  # summed BCE: train_loss is per prefix, like val_loss
            n += int(lengths.sum())
        sched.step()
        vl, vauc = val_loss()
        history.append({"epoch": epoch + 1, "train_loss": total / max(n, 1), "val_loss": vl, "val_auc": vauc,
                        "elapsed_s": round(time.perf_counter() - t0, 1)})
        log.info("epoch %d: train loss %.4f, val loss %.4f, val AUC %.4f (%.0fs)", epoch + 1,
                 total / max(n, 1), vl, vauc, time.perf_counter() - t0)
        if vl < best[0] - 1e-5:
            best, bad = (vl, copy.deepcopy(ema_model.state_dict()), epoch + 1), 0
        else:
            bad += 1
            if bad >= config.patience:
                log.info("early stop: no validation improvement for %d epochs", bad)
                break
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()

    # Calibrate on validation (Platt on the logit), then choose the threshold on calibrated scores.
    y_va = np.repeat(packed.label[va], packed.lengths[va])
    scale, bias = fit_platt(predict_logits(model, packed, va), y_va)
    model.set_calibration(scale, bias)
    p_va = 1 / (1 + np.exp(-predict_logits(model, packed, va).astype(np.float64)))
    threshold = choose_threshold(y_va, p_va, "f1")
    train_s = time.perf_counter() - t0

    metrics = {"validation": binary_metrics(y_va, p_va, threshold)}
    if len(te):
        y_te = np.repeat(packed.label[te], packed.lengths[te])
        p_te = 1 / (1 + np.exp(-predict_logits(model, packed, te).astype(np.float64)))
        metrics["test"] = binary_metrics(y_te, p_te, threshold)
        if p_optimal:
            ids = [e for i in te for e in ds.event_ids[i]]
            po = np.array([p_optimal.get(e, np.nan) for e in ids])
            ok = ~np.isnan(po)
            if ok.any() and 0 < y_te[ok].sum() < ok.sum():
                metrics["test"]["optimal_roc_auc"] = float(roc_auc_score(y_te[ok], po[ok]))
                metrics["test"]["optimal_coverage"] = float(ok.mean())
                metrics["test"]["roc_auc_on_covered"] = float(roc_auc_score(y_te[ok], p_te[ok]))

    meta = {
        "threshold": threshold,
        "calibration": {"method": "platt", "scale": scale, "bias": bias},
        "metrics": metrics,
        "training": {
            **{k: v for k, v in asdict(config).items() if k != "progress"},
            "best_epoch": best[2],
            "epochs_run": len(history),
            "train_seconds": round(train_s, 1),
            "n_sessions": {"train": int(len(tr)), "validation": int(len(va)), "test": int(len(te))},
            "n_steps": {"train": int(packed.lengths[tr].sum()), "validation": int(packed.lengths[va].sum()),
                        "test": int(packed.lengths[te].sum()) if len(te) else 0},
            "split_start_ms": {
                "validation": int(ds.start_ms[va].min()),
                "test": int(ds.start_ms[te].min()) if len(te) else None,
            },
            "history": history,
        },
        "normalization": {
            "num_mean": model.num_mean.tolist(), "num_std": model.num_std.tolist(),
            "roll_mean": model.roll_mean.tolist(), "roll_std": model.roll_std.tolist(),
        },
    }
    return TrainResult(model=model, meta=meta, split=(tr, va, te), history=history)
