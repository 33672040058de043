"""Baselines to beat: logistic regression and gradient boosting on per-prefix aggregate features.

Each row is one session prefix, described by `SessionDataset.agg` (counts, cart value, time in session,
rolling-window features, ...); no sequence model. Usage::

    from models.baselines import fit_baselines, predict_dataset
    models = fit_baselines(train_ds, seed=0)                 # {"logistic": ..., "gbm": ...}
    scores = {name: predict_dataset(m, test_ds) for name, m in models.items()}   # flat per-prefix arrays

Class imbalance: positives are up-weighted so that both classes carry equal total weight while fitting
(the minority class shapes the model, which matters most for the boosted trees), then the prior shift
this causes is undone on the logit: a model fitted with class weights w1, w0 estimates odds multiplied
by w1/w0, so the reported probability uses logit - log(w1/w0). Scores stay calibrated probabilities.

Speed: training uses at most `max_rows` prefix rows (default 500k), sampled uniformly at random with
the seed, which keeps fitting to about a minute on 2 cores for ~1-2M rows; prediction uses all rows.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

log = logging.getLogger(__name__)

MAX_TRAIN_ROWS = 500_000


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))      # overflow-free logistic


def balance_weights(y: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-row weights giving both classes equal total weight, and log(w1/w0) to undo the prior shift."""
    y = np.asarray(y).astype(np.int8)
    n, pos = len(y), int(y.sum())
    if pos == 0 or pos == n:
        return np.ones(n), 0.0
    w1, w0 = n / (2 * pos), n / (2 * (n - pos))
    return np.where(y == 1, w1, w0), math.log(w1 / w0)


def _subsample(X: np.ndarray, y: np.ndarray, max_rows: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if max_rows is None or len(y) <= max_rows:
        return X, y
    idx = np.sort(np.random.default_rng(seed).choice(len(y), size=max_rows, replace=False))
    log.info("baseline: training on %d of %d prefix rows (random subsample)", max_rows, len(y))
    return X[idx], y[idx]


class _Baseline:
    name = "baseline"

    def __init__(self, balance: bool = True, max_rows: int | None = MAX_TRAIN_ROWS, seed: int = 0):
        self.balance = balance
        self.max_rows = max_rows
        self.seed = seed
        self.logit_shift = 0.0      # subtracted from the fitted logit (prior-shift correction)
        self.n_train = 0

    def fit(self, X: np.ndarray, y: np.ndarray) -> "_Baseline":
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y).astype(np.int8)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X {X.shape} and y {y.shape} do not match")
        if len(np.unique(y)) < 2:
            raise ValueError("need both classes to fit a baseline")
        X, y = _subsample(X, y, self.max_rows, self.seed)
        w, shift = balance_weights(y) if self.balance else (np.ones(len(y)), 0.0)
        self.logit_shift = shift
        self.n_train = len(y)
        self._fit(X, y, w)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(purchase later in the session) per row, shape (N,), float64."""
        X = np.asarray(X, dtype=np.float32)
        if len(X) == 0:
            return np.zeros(0)
        return _sigmoid(self._raw_logit(X) - self.logit_shift)

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        raise NotImplementedError

    def _raw_logit(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def signed_log1p(X: np.ndarray) -> np.ndarray:
    """sign(x)*log(1+|x|): tames heavy-tailed counts and amounts for a linear model (monotone)."""
    return np.sign(X) * np.log1p(np.abs(X))


class LogisticBaseline(_Baseline):
    """Standardized logistic regression (L2, lbfgs) on signed-log1p aggregate features."""
    name = "logistic"

    def __init__(self, C: float = 1.0, log_transform: bool = True, max_iter: int = 300, **kw: Any):
        super().__init__(**kw)
        self.C = C
        self.log_transform = log_transform
        self.max_iter = max_iter

    def _prep(self, X: np.ndarray) -> np.ndarray:
        X = signed_log1p(X) if self.log_transform else X
        return self.scaler.transform(X)

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        Xt = signed_log1p(X) if self.log_transform else X
        self.scaler = StandardScaler().fit(Xt)
        self.model = LogisticRegression(C=self.C, max_iter=self.max_iter)
        self.model.fit(self.scaler.transform(Xt), y, sample_weight=w)

    def _raw_logit(self, X: np.ndarray) -> np.ndarray:
        return self.model.decision_function(self._prep(X)).astype(np.float64)


class GBMBaseline(_Baseline):
    """sklearn HistGradientBoostingClassifier with early stopping on a 10% validation slice."""
    name = "gbm"

    def __init__(self, max_iter: int = 300, learning_rate: float = 0.1, max_leaf_nodes: int = 31,
                 **kw: Any):
        super().__init__(**kw)
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        self.model = HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
            early_stopping=True, validation_fraction=0.1, n_iter_no_change=10, random_state=self.seed)
        self.model.fit(X, y, sample_weight=w)
        log.info("gbm: %d iterations", self.model.n_iter_)

    def _raw_logit(self, X: np.ndarray) -> np.ndarray:
        return self.model.decision_function(X).astype(np.float64)


BASELINES = {"logistic": LogisticBaseline, "gbm": GBMBaseline}


# ---------------------------------------------------------------------------------------------------
# SessionDataset glue

def stack_prefixes(dataset: Any, sessions: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(X, y): all prefix rows of the selected sessions (session-major) and their session labels."""
    sel = np.arange(len(dataset.label)) if sessions is None else np.asarray(sessions, dtype=np.int64)
    aggs = [np.asarray(dataset.agg[i], dtype=np.float32) for i in sel]
    if not aggs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int8)
    X = np.concatenate(aggs, axis=0)
    y = np.repeat(np.asarray(dataset.label)[sel], [len(a) for a in aggs]).astype(np.int8)
    return X, y


def fit_baselines(dataset: Any, sessions: Sequence[int] | np.ndarray | None = None, *, seed: int = 0,
                  max_rows: int | None = MAX_TRAIN_ROWS, balance: bool = True,
                  names: Sequence[str] = ("logistic", "gbm")) -> dict[str, _Baseline]:
    """Fit each named baseline on the prefix rows of the (selected) training sessions."""
    X, y = stack_prefixes(dataset, sessions)
    return {name: BASELINES[name](seed=seed, max_rows=max_rows, balance=balance).fit(X, y) for name in names}


def predict_dataset(model: _Baseline, dataset: Any,
                    sessions: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Flat per-prefix scores in the order `models.evaluation.prefix_scores_from_dataset` expects."""
    X, _ = stack_prefixes(dataset, sessions)
    return model.predict_proba(X)
