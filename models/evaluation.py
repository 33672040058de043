"""Evaluation of per-prefix purchase-intent scores: metrics, metrics by prefix length, confidence intervals.

A pure library over numpy arrays: it does not care how the scores were produced (GRU, baselines, the
simulator's Bayes-optimal probability). Every row is one *prefix* of a session, i.e. the state "after k
events"; its label is 1 when the session reaches a purchase after those events.

Wiring `intentstream evaluate` (model side)::

    from models.evaluation import evaluate_model, choose_threshold
    from models.report import write_report

    # test_ds: a SessionDataset (models/dataset.py), already restricted to the test sessions,
    #          or the full dataset plus `sessions=test_idx` (indices into it).
    # scores:  one entry per scorer; each either a list of per-session (T,) arrays in the same order
    #          as the sessions evaluated, or one flat array of all prefixes in that order (session-major,
    #          prefix order within a session), e.g. the output of `models.baselines.predict_dataset`.
    # optimal: optional {event_id: p} from the simulator; joined through dataset.event_ids and added
    #          as scorer "optimal" (the reference for "gap to optimal").
    result = evaluate_model(test_ds, {"gru": gru_scores, "logistic": lr, "gbm": gbm},
                            thresholds={"gru": model_threshold}, optimal=optimal_by_event_id)
    result.save_json(out_dir / "metrics.json")
    write_report({"simulated": result}, out_dir, title="intentstream evaluation")

Thresholds default to 0.5 for scorers not in `thresholds` (0.5 is the accuracy-optimal threshold for a
calibrated score; pick the GRU's on validation data with `choose_threshold`).

Confidence intervals ("repeated splits"): the test *sessions* are split at random into `n_splits`
disjoint parts (all prefixes of a session go to the same part, so correlated rows never straddle parts;
`evaluate_model` goes further and keeps all sessions of a *user* together, since a user's sessions share
habits and rolling-window history; with PrefixScores set `group`).
Each metric is computed on every part; the spread of the part values estimates the sampling error of
the full-test-set figure: SE = sd(parts) / sqrt(n_splits) and the 95% interval is
value ± t(0.975, n_splits-1) · SE, centred on the metric computed on all test prefixes. Because the parts
are the same for every scorer, differences between scorers (gap to optimal, GRU vs baseline) get paired
intervals from the per-part differences: see `EvalResult.difference`.

ECE uses 15 equal-mass bins (each bin holds ~1/15 of the prefixes, sorted by score): with skewed scores
(most prefixes near the base rate) equal-width bins would put nearly everything in one bin.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import precision_recall_curve, roc_curve

log = logging.getLogger(__name__)

ECE_BINS = 15
DEFAULT_THRESHOLD = 0.5
METRICS = ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "brier", "ece")
# Higher is better for these; lower is better for brier and ece (used by the report to word gaps).
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "accuracy": True, "precision": True,
                    "recall": True, "f1": True, "brier": False, "ece": False}
CURVE_POINTS = 200   # stored points per ROC/PR curve: enough for a plot, small in JSON


# ---------------------------------------------------------------------------------------------------
# inputs

@dataclass
class PrefixScores:
    """One row per session prefix ("after k events"), with one score array per scorer."""
    session: np.ndarray                  # (N,) int session index (any ints; equal = same session)
    prefix_len: np.ndarray               # (N,) int, 1-based number of events seen
    label: np.ndarray                    # (N,) {0,1}: the session purchases after this prefix
    scores: dict[str, np.ndarray]        # scorer -> (N,) probability in [0, 1]
    start_ms: np.ndarray | None = None   # (N,) session start, informational
    group: np.ndarray | None = None      # (N,) int unit of the random parts (e.g. user); default session

    def __post_init__(self) -> None:
        self.session = np.asarray(self.session, dtype=np.int64)
        self.prefix_len = np.asarray(self.prefix_len, dtype=np.int64)
        self.label = np.asarray(self.label).astype(np.int8)
        n = len(self.label)
        for name, arr in (("session", self.session), ("prefix_len", self.prefix_len)):
            if arr.shape != (n,):
                raise ValueError(f"{name} has shape {arr.shape}, expected ({n},)")
        if not np.isin(self.label, (0, 1)).all():
            raise ValueError("label must be 0/1")
        if n and self.prefix_len.min() < 1:
            raise ValueError("prefix_len is 1-based (number of events seen)")
        if self.start_ms is not None:
            self.start_ms = np.asarray(self.start_ms, dtype=np.int64)
        if self.group is not None:
            self.group = np.asarray(self.group, dtype=np.int64)
            if self.group.shape != (n,):
                raise ValueError(f"group has shape {self.group.shape}, expected ({n},)")
        if not self.scores:
            raise ValueError("no scores")
        clean = {}
        for name, s in self.scores.items():
            s = np.asarray(s, dtype=np.float64)
            if s.shape != (n,):
                raise ValueError(f"scores[{name!r}] has shape {s.shape}, expected ({n},)")
            if not np.isfinite(s).all() or (n and (s.min() < 0 or s.max() > 1)):
                raise ValueError(f"scores[{name!r}] must be finite probabilities in [0, 1]")
            clean[name] = s
        self.scores = clean

    def __len__(self) -> int:
        return len(self.label)


# ---------------------------------------------------------------------------------------------------
# metrics on one set of rows

def ece(label: np.ndarray, score: np.ndarray, n_bins: int = ECE_BINS, strategy: str = "mass") -> float:
    """Expected calibration error: sum over bins of (bin share) * |mean label - mean score|.

    strategy "mass": equal-count bins over the sorted scores (the default everywhere here);
    "width": equal-width bins on [0, 1].
    """
    label = np.asarray(label, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    n = len(label)
    if n == 0:
        return math.nan
    if strategy == "mass":
        order = np.argsort(-score, kind="stable")[::-1]
        return _ece_ordered(label[order], score[order], n_bins)
    total = 0.0
    for idx in _bins(score, n_bins, strategy):
        if len(idx):
            total += len(idx) / n * abs(label[idx].mean() - score[idx].mean())
    return float(total)


def reliability(label: np.ndarray, score: np.ndarray, n_bins: int = ECE_BINS,
                strategy: str = "mass") -> dict[str, list[float]]:
    """Per-bin mean score, observed positive rate and count: the points of a reliability diagram."""
    label = np.asarray(label, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    out: dict[str, list[float]] = {"mean_score": [], "frac_pos": [], "count": []}
    for idx in _bins(score, n_bins, strategy):
        if len(idx):
            out["mean_score"].append(float(score[idx].mean()))
            out["frac_pos"].append(float(label[idx].mean()))
            out["count"].append(float(len(idx)))
    return out


def _bins(score: np.ndarray, n_bins: int, strategy: str) -> list[np.ndarray]:
    if strategy == "mass":
        # Same order and edges as metrics(): ascending = reversed stable descending sort.
        order = np.argsort(-score, kind="stable")[::-1]
        edges = _mass_edges(score[order], n_bins)
        return [order[a:b] for a, b in zip(edges[:-1], edges[1:])]
    if strategy == "width":
        which = np.minimum((score * n_bins).astype(np.int64), n_bins - 1)
        return [np.flatnonzero(which == b) for b in range(n_bins)]
    raise ValueError(f"unknown ECE bin strategy {strategy!r}")


def metrics(label: np.ndarray, score: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> dict[str, float]:
    """All metrics for one set of prefixes.

    Ranking metrics (roc_auc, pr_auc) are nan when only one class is present; precision is nan with
    no predicted positives, recall nan with no positives, f1 nan when both are absent. A prefix is
    predicted positive when score >= threshold. pr_auc is average precision (sklearn's definition:
    sum over thresholds of precision * recall increment, no interpolation).
    """
    y = np.asarray(label).astype(np.int8)
    s = np.asarray(score, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    return _metrics_sorted(y[order], s[order], threshold)


def _metrics_sorted(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float]:
    """metrics() on rows already sorted by descending score (one sort serves every subset)."""
    n = len(y)
    pos = int(y.sum())
    out: dict[str, float] = {"n": n, "positives": pos}
    if n == 0:
        out.update({m: math.nan for m in METRICS})
        return out
    out["roc_auc"], out["pr_auc"] = _ranking(y, s, pos) if 0 < pos < n else (math.nan, math.nan)
    # Predicted positives are a prefix of the descending order.
    k = int(np.searchsorted(-s, -threshold, side="right"))
    tp = int(y[:k].sum())
    fp = k - tp
    fn = pos - tp
    out["accuracy"] = (n - fp - fn) / n
    out["precision"] = tp / (tp + fp) if tp + fp else math.nan
    out["recall"] = tp / pos if pos else math.nan
    out["f1"] = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else math.nan
    out["brier"] = float(np.mean((s - y) ** 2))
    # Equal-mass bins over the ascending order = the reversed descending order.
    out["ece"] = _ece_ordered(y[::-1].astype(np.float64), s[::-1], ECE_BINS)
    return out


def _ranking(y: np.ndarray, s: np.ndarray, pos: int) -> tuple[float, float]:
    """ROC AUC (trapezoid over distinct thresholds, ties count half) and average precision."""
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]     # last row of each tied run
    tps = np.cumsum(y, dtype=np.int64)[last].astype(np.float64)
    fps = (last + 1) - tps
    neg = len(s) - pos
    tpr = np.r_[0.0, tps / pos]
    fpr = np.r_[0.0, fps / neg]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    precision = tps / (tps + fps)
    ap = float(np.sum(np.diff(tpr) * precision))
    return auc, ap


def _mass_edges(s_ascending: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin edges (row positions) of ~equal-count bins that never split a run of tied scores.

    Splitting ties would make bins differ only by label noise (a constant score would get a positive
    ECE), so each edge moves to the end of the tied run it falls in; bins can then be fewer or unequal.
    """
    n = len(s_ascending)
    edges = np.linspace(0, n, min(n_bins, n) + 1).round().astype(np.int64)
    inner = edges[1:-1]
    inner = np.searchsorted(s_ascending, s_ascending[inner - 1], side="right")
    return np.unique(np.r_[0, inner, n])


def _ece_ordered(y: np.ndarray, s: np.ndarray, n_bins: int) -> float:
    n = len(y)
    edges = _mass_edges(s, n_bins)
    cy = np.r_[0.0, np.cumsum(y)]
    cs = np.r_[0.0, np.cumsum(s)]
    gap = np.abs(np.diff(cy[edges]) - np.diff(cs[edges]))      # |sum y - sum s| per bin
    return float(gap.sum() / n)


def choose_threshold(label: np.ndarray, score: np.ndarray, criterion: str = "f1") -> float:
    """The score threshold maximising F1 (criterion "f1") or accuracy ("accuracy") on these rows.

    Meant for validation data; evaluate with the chosen threshold on test data.
    """
    y = np.asarray(label).astype(np.int8)
    s = np.asarray(score, dtype=np.float64)
    if criterion == "accuracy":
        order = np.argsort(-s, kind="stable")
        ys, ss = y[order], s[order]
        # Predicting the top i as positive: correct = tp(i) + (negatives - fp(i)).
        tp = np.cumsum(ys)
        fp = np.cumsum(1 - ys)
        correct = tp + (len(y) - y.sum() - fp)
        last = np.r_[ss[1:] != ss[:-1], True]          # only cut between distinct scores
        i = int(np.argmax(np.where(last, correct, -1)))
        if len(y) - y.sum() >= correct[i]:            # flagging nothing is at least as accurate
            return float(np.nextafter(ss[0], np.inf))
        return float(ss[i])
    if criterion != "f1":
        raise ValueError(f"unknown criterion {criterion!r}")
    precision, recall, thresholds = precision_recall_curve(y, s)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return float(thresholds[int(np.argmax(f1[:-1]))])


# ---------------------------------------------------------------------------------------------------
# results

@dataclass
class Estimate:
    """A metric on the full test set with a 95% interval from the session-disjoint parts."""
    value: float
    low: float
    high: float
    parts: list[float]          # the metric on each part (nan where undefined, e.g. one class only)

    @property
    def mean(self) -> float:
        finite = [p for p in self.parts if math.isfinite(p)]
        return float(np.mean(finite)) if finite else math.nan

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


def estimate(value: float, parts: Sequence[float], level: float = 0.95) -> Estimate:
    """value ± t · sd(parts)/sqrt(#parts), over the parts where the metric is defined."""
    finite = np.array([p for p in parts if math.isfinite(p)], dtype=np.float64)
    if not math.isfinite(value) or len(finite) < 2:
        return Estimate(float(value), math.nan, math.nan, [float(p) for p in parts])
    se = finite.std(ddof=1) / math.sqrt(len(finite))
    half = float(stats.t.ppf(0.5 + level / 2, len(finite) - 1)) * se
    return Estimate(float(value), float(value - half), float(value + half), [float(p) for p in parts])


@dataclass
class ScorerResult:
    threshold: float
    overall: dict[str, Estimate]
    by_prefix: dict[int, dict[str, Estimate]]      # k -> metric -> estimate, for prefixes of exactly k events
    curves: dict[str, Any]                          # roc {fpr,tpr}, pr {recall,precision}, reliability {...}


@dataclass
class EvalResult:
    scorers: dict[str, ScorerResult]
    counts: dict[str, Any]          # {"overall": {n, positives, sessions}, "by_prefix": {k: {...}}}
    config: dict[str, Any]          # n_splits, seed, max_prefix, reference, ece_bins, ci method
    notes: list[str] = field(default_factory=list)

    @property
    def reference(self) -> str | None:
        ref = self.config.get("reference")
        return ref if ref in self.scorers else None

    def get(self, scorer: str, metric: str, prefix: int | None = None) -> Estimate:
        res = self.scorers[scorer]
        return (res.overall if prefix is None else res.by_prefix[prefix])[metric]

    def difference(self, a: str, b: str, metric: str, prefix: int | None = None) -> Estimate:
        """metric(a) - metric(b) with a paired interval (same session parts for every scorer)."""
        ea, eb = self.get(a, metric, prefix), self.get(b, metric, prefix)
        return estimate(ea.value - eb.value, [x - y for x, y in zip(ea.parts, eb.parts)],
                        self.config.get("level", 0.95))

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=True))
        return path

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvalResult":
        def est_map(m):
            return {k: Estimate(**v) for k, v in m.items()}
        scorers = {
            name: ScorerResult(
                threshold=r["threshold"], overall=est_map(r["overall"]),
                by_prefix={int(k): est_map(v) for k, v in r["by_prefix"].items()}, curves=r["curves"])
            for name, r in d["scorers"].items()
        }
        counts = dict(d["counts"])
        counts["by_prefix"] = {int(k): v for k, v in counts.get("by_prefix", {}).items()}
        return cls(scorers=scorers, counts=counts, config=dict(d["config"]), notes=list(d.get("notes", [])))

    @classmethod
    def load_json(cls, path: str | Path) -> "EvalResult":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x


# ---------------------------------------------------------------------------------------------------
# evaluate

def session_parts(session: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Assign every row a part in [0, n_splits) so that all rows of a session share a part."""
    uniq, inverse = np.unique(session, return_inverse=True)
    rng = np.random.default_rng(seed)
    part_of_session = rng.permutation(len(uniq)) % n_splits
    return part_of_session[inverse]


def evaluate(ps: PrefixScores, thresholds: Mapping[str, float] | None = None, max_prefix: int = 10,
             n_splits: int = 10, seed: int = 0, reference: str | None = "optimal",
             level: float = 0.95) -> EvalResult:
    """Metrics for every scorer overall and by prefix length 1..max_prefix, with interval estimates."""
    if n_splits < 2:
        raise ValueError("n_splits must be >= 2 to estimate an interval")
    thresholds = dict(thresholds or {})
    unit = ps.session if ps.group is None else ps.group
    part = session_parts(unit, n_splits, seed)
    groups: dict[int | None, np.ndarray] = {None: np.arange(len(ps))}
    for k in range(1, max_prefix + 1):
        groups[k] = np.flatnonzero(ps.prefix_len == k)

    counts: dict[str, Any] = {"overall": _counts(ps, groups[None]), "by_prefix": {}}
    for k in range(1, max_prefix + 1):
        counts["by_prefix"][k] = _counts(ps, groups[k])

    scorers: dict[str, ScorerResult] = {}
    for name, score in ps.scores.items():
        thr = float(thresholds.get(name, DEFAULT_THRESHOLD))
        # One sort per scorer: every group and part below is a subsequence, so it stays sorted.
        order = np.argsort(-score, kind="stable")
        y_o, s_o, part_o, len_o = ps.label[order], score[order], part[order], ps.prefix_len[order]
        per_group: dict[int | None, dict[str, Estimate]] = {}
        for key in groups:
            m = slice(None) if key is None else (len_o == key)
            per_group[key] = _group_estimates(y_o[m], s_o[m], part_o[m], thr, n_splits, level)
        scorers[name] = ScorerResult(
            threshold=thr, overall=per_group.pop(None), by_prefix=per_group,
            curves=_curves(ps.label, score))
        log.info("evaluated %s: roc_auc %.4f", name, scorers[name].overall["roc_auc"].value)

    config = {"n_splits": n_splits, "seed": seed, "max_prefix": max_prefix, "reference": reference,
              "level": level, "ece_bins": ECE_BINS, "ece_strategy": "mass",
              "ci_unit": "session" if ps.group is None else "group",
              "ci": "disjoint random parts of the test set; value ± t*sd(parts)/sqrt(n_parts)"}
    return EvalResult(scorers=scorers, counts=counts, config=config)


def _counts(ps: PrefixScores, idx: np.ndarray) -> dict[str, int]:
    return {"n": int(len(idx)), "positives": int(ps.label[idx].sum()),
            "sessions": int(len(np.unique(ps.session[idx])))}


def _group_estimates(y: np.ndarray, s: np.ndarray, part: np.ndarray, thr: float, n_splits: int,
                     level: float) -> dict[str, Estimate]:
    full = _metrics_sorted(y, s, thr)
    per_part = [_metrics_sorted(y[part == j], s[part == j], thr) for j in range(n_splits)]
    return {m: estimate(full[m], [p[m] for p in per_part], level) for m in METRICS}


def _curves(y: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"reliability": reliability(y, s), "base_rate": float(np.mean(y)) if len(y) else math.nan}
    if 0 < y.sum() < len(y):
        fpr, tpr, _ = roc_curve(y, s)
        precision, recall, _ = precision_recall_curve(y, s)
        out["roc"] = {"fpr": _thin(fpr), "tpr": _thin(tpr)}
        # precision_recall_curve returns recall decreasing; keep its order, thin for plotting.
        out["pr"] = {"recall": _thin(recall), "precision": _thin(precision)}
    return out


def _thin(a: np.ndarray, k: int = CURVE_POINTS) -> list[float]:
    """Keep ~k evenly spaced points including both ends (curves with ~1M steps do not belong in JSON)."""
    if len(a) <= k:
        return [float(x) for x in a]
    idx = np.unique(np.linspace(0, len(a) - 1, k).round().astype(np.int64))
    return [float(x) for x in a[idx]]


# ---------------------------------------------------------------------------------------------------
# from a SessionDataset

ScoreInput = np.ndarray | Sequence[np.ndarray]


def prefix_scores_from_dataset(dataset: Any, scores: Mapping[str, ScoreInput], *,
                               optimal: Mapping[str, float] | None = None,
                               sessions: Sequence[int] | np.ndarray | None = None,
                               optimal_name: str = "optimal") -> PrefixScores:
    """Build PrefixScores from a SessionDataset-like object (per-session `cat` or `event_ids`, `label`).

    `sessions` (optional) selects and orders the dataset's sessions to evaluate; scores then follow that
    order. Each score is a list of per-session (T,) arrays or one flat array of all prefixes. Labels of
    every prefix are the session label (sessions are cut at their first purchase). `optimal` maps
    event_id -> Bayes-optimal probability; every evaluated event must be present. When the dataset has
    `user_id`, the interval parts keep each user's sessions together (`group`).
    """
    sel = np.arange(len(dataset.label)) if sessions is None else np.asarray(sessions, dtype=np.int64)
    lengths = np.array([_session_len(dataset, i) for i in sel], dtype=np.int64)
    total = int(lengths.sum())
    session = np.repeat(sel, lengths)
    prefix_len = np.concatenate([np.arange(1, t + 1) for t in lengths]) if total else np.zeros(0, np.int64)
    label = np.repeat(np.asarray(dataset.label)[sel], lengths)
    start_ms = np.repeat(np.asarray(dataset.start_ms)[sel], lengths) if getattr(dataset, "start_ms", None) is not None else None

    flat: dict[str, np.ndarray] = {}
    for name, sc in scores.items():
        flat[name] = _flatten(name, sc, lengths)
    if optimal is not None:
        ids = [eid for i in sel for eid in dataset.event_ids[i]]
        missing = [eid for eid in ids if eid not in optimal]
        if missing:
            raise ValueError(f"{len(missing)} of {len(ids)} events have no optimal score (e.g. {missing[0]!r})")
        flat[optimal_name] = np.fromiter((optimal[eid] for eid in ids), dtype=np.float64, count=len(ids))
    group = None
    users = getattr(dataset, "user_id", None)
    if users is not None and len(users) == len(dataset.label):
        _, user_code = np.unique(np.asarray([users[i] for i in sel], dtype=object).astype(str), return_inverse=True)
        group = np.repeat(user_code.reshape(-1), lengths)
    return PrefixScores(session=session, prefix_len=prefix_len, label=label, scores=flat, start_ms=start_ms,
                        group=group)


def _session_len(dataset: Any, i: int) -> int:
    if getattr(dataset, "event_ids", None) is not None:
        return len(dataset.event_ids[i])
    return len(dataset.cat[i])


def _flatten(name: str, sc: ScoreInput, lengths: np.ndarray) -> np.ndarray:
    if isinstance(sc, np.ndarray) and sc.ndim == 1 and sc.dtype != object:
        arr = sc
    else:
        parts = list(sc)
        if len(parts) != len(lengths):
            raise ValueError(f"scores[{name!r}]: {len(parts)} sessions, expected {len(lengths)}")
        bad = [i for i, (p, t) in enumerate(zip(parts, lengths)) if len(p) != t]
        if bad:
            raise ValueError(f"scores[{name!r}]: session {bad[0]} has {len(parts[bad[0]])} scores, expected {lengths[bad[0]]}")
        arr = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parts]) if parts else np.zeros(0)
    if arr.shape != (int(lengths.sum()),):
        raise ValueError(f"scores[{name!r}] has {arr.shape[0]} prefixes, expected {int(lengths.sum())}")
    return np.asarray(arr, dtype=np.float64)


def evaluate_model(dataset: Any, scores: Mapping[str, ScoreInput],
                   thresholds: Mapping[str, float] | None = None, *,
                   optimal: Mapping[str, float] | None = None,
                   sessions: Sequence[int] | np.ndarray | None = None,
                   max_prefix: int = 10, n_splits: int = 10, seed: int = 0,
                   reference: str | None = "optimal") -> EvalResult:
    """prefix_scores_from_dataset + evaluate, in one call (see the module docstring)."""
    ps = prefix_scores_from_dataset(dataset, scores, optimal=optimal, sessions=sessions)
    result = evaluate(ps, thresholds, max_prefix=max_prefix, n_splits=n_splits, seed=seed, reference=reference)
    if ps.group is not None:
        result.config["ci_unit"] = "user"
    return result
