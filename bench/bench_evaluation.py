"""Evaluation and baseline cost at the issue's scale (~1-2M test prefixes), on synthetic arrays.

    .venv/bin/python bench/bench_evaluation.py [--sessions 200000] [--features 40] [--seed 0]

Cases: `evaluate` on four scorers (overall + by prefix 1..10, 10 session-disjoint parts, curves),
logistic and GBM baseline fit (default 500k-row subsample cap) and predict, writing the report.
Synthetic sessions have geometric lengths (mean ~6.7 events, like short shopping sessions).
"""

import argparse
import logging
import tempfile
import time

import numpy as np

from models.baselines import GBMBaseline, LogisticBaseline
from models.evaluation import PrefixScores, evaluate
from models.report import write_report

SESSIONS = 200_000
FEATURES = 40
SEED = 0


def make(n_sessions: int, n_features: int, seed: int):
    rng = np.random.default_rng(seed)
    lengths = rng.geometric(0.15, n_sessions)
    session = np.repeat(np.arange(n_sessions), lengths)
    prefix_len = np.concatenate([np.arange(1, t + 1) for t in lengths])
    X = rng.gamma(1.0, 2.0, (len(session), n_features)).astype(np.float32)
    z = 0.6 * np.log1p(X[:, 0]) + 0.3 * X[:, 1] - 0.05 * X[:, 2] * X[:, 3] + 0.1 * np.minimum(prefix_len, 10) - 3.5
    p = 1 / (1 + np.exp(-z))
    label = (rng.random(len(p)) < p).astype(np.int8)
    return session, prefix_len, X, label, p


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=SESSIONS)
    ap.add_argument("--features", type=int, default=FEATURES)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    session, prefix_len, X, label, p = make(args.sessions, args.features, args.seed)
    half = len(label) // 2
    rows = [("prefix rows (test half)", f"{len(label) - half:,}", "")]
    scores = {"optimal": p[half:]}
    for cls in (LogisticBaseline, GBMBaseline):
        model, fit_s = timed(lambda: cls(seed=args.seed).fit(X[:half], label[:half]))
        s, pred_s = timed(lambda: model.predict_proba(X[half:]))
        scores[cls.name] = s
        rows.append((f"{cls.name} fit ({model.n_train:,} rows)", f"{fit_s:.1f} s", "~1 min"))
        rows.append((f"{cls.name} predict", f"{pred_s:.1f} s", ""))
    rng = np.random.default_rng(args.seed + 1)
    logit = np.log(p[half:] / (1 - p[half:]))
    scores["gru"] = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.3, len(logit)))))
    ps = PrefixScores(session[half:], prefix_len[half:], label[half:], scores)
    res, eval_s = timed(lambda: evaluate(ps))
    rows.append(("evaluate, 4 scorers", f"{eval_s:.1f} s", ""))
    with tempfile.TemporaryDirectory() as tmp:
        _, rep_s = timed(lambda: write_report({"bench": res}, tmp))
    rows.append(("write_report (md + 4 PNGs)", f"{rep_s:.1f} s", ""))
    for name in scores:
        e = res.get(name, "roc_auc")
        rows.append((f"{name} ROC AUC", f"{e.value:.4f} ({e.low:.4f}, {e.high:.4f})", ""))

    w = max(len(r[0]) for r in rows)
    print(f"{'case':<{w}}  {'figure':>28}  target")
    for case, fig, target in rows:
        print(f"{case:<{w}}  {fig:>28}  {target}")


if __name__ == "__main__":
    main()
