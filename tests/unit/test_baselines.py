"""Baselines on aggregate prefix features: they learn, stay calibrated under imbalance, and glue to datasets."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from models.baselines import (
    GBMBaseline, LogisticBaseline, balance_weights, fit_baselines, group_holdout, predict_dataset, stack_prefixes,
)
from models.evaluation import metrics


def _imbalanced(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.gamma(1.0, 2.0, (n, 6)).astype(np.float32)            # count-like, heavy-tailed
    z = 1.2 * np.log1p(X[:, 0]) - 0.8 * np.log1p(X[:, 1]) - 3.0  # ~6% positives
    p = 1 / (1 + np.exp(-z))
    y = (rng.random(n) < p).astype(np.int8)
    return X, y, p


def test_balance_weights_equalise_classes():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    w, shift = balance_weights(y)
    assert w[y == 1].sum() == pytest.approx(w[y == 0].sum())
    assert shift == pytest.approx(np.log(9))


@pytest.mark.parametrize("cls", [LogisticBaseline, GBMBaseline])
def test_baseline_learns_and_stays_calibrated(cls):
    X, y, _ = _imbalanced(30_000, seed=0)
    Xt, yt, pt = _imbalanced(30_000, seed=1)
    assert yt.mean() < 0.12
    model = cls(seed=0).fit(X, y)
    s = model.predict_proba(Xt)
    assert s.shape == (len(yt),) and (s >= 0).all() and (s <= 1).all()
    m = metrics(yt, s)
    assert m["roc_auc"] > 0.70
    assert m["ece"] < 0.02                              # class weights did not distort the probabilities
    assert abs(s.mean() - yt.mean()) < 0.01
    # Without the prior-shift correction the balanced fit would be badly miscalibrated.
    model.logit_shift = 0.0
    assert metrics(yt, model.predict_proba(Xt))["ece"] > 0.1


def test_group_holdout_keeps_sessions_whole():
    groups = np.repeat(np.arange(2000), 4)
    held = group_holdout(groups, 0.1, seed=0)
    assert 0.05 < held.mean() < 0.15
    assert all(len(set(held[groups == g])) == 1 for g in range(0, 2000, 37))


def test_gbm_early_stopping_is_not_fooled_by_duplicate_prefixes():
    # Sessions of 20 near-identical prefix rows whose label is pure noise: nothing generalises across
    # sessions. A row-random validation split would share sessions with training and keep "improving";
    # the session-grouped one stops early.
    rng = np.random.default_rng(5)
    n_sessions, t = 1500, 20
    base = rng.normal(size=(n_sessions, 4))
    X = np.repeat(base, t, axis=0) + rng.normal(0, 0.01, (n_sessions * t, 4))
    y = np.repeat((rng.random(n_sessions) < 0.3).astype(np.int8), t)
    groups = np.repeat(np.arange(n_sessions), t)
    model = GBMBaseline(seed=0, max_iter=200).fit(X, y, groups)
    assert model.model.n_iter_ < 60


def test_subsampling_caps_training_rows():
    X, y, _ = _imbalanced(5000, seed=2)
    model = LogisticBaseline(max_rows=1000, seed=0).fit(X, y)
    assert model.n_train == 1000
    with pytest.raises(ValueError):
        LogisticBaseline().fit(X, np.zeros(len(X)))


@dataclass
class _FakeDataset:
    label: np.ndarray
    agg: list


def test_dataset_glue_orders_rows_session_major():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 6, 600)
    label = (rng.random(600) < 0.3).astype(int)
    agg = [np.column_stack([np.full(t, l + rng.normal(0, 0.3)), np.arange(t)]).astype(np.float32)
           for t, l in zip(lengths, label)]
    ds = _FakeDataset(label=label, agg=agg)
    X, y, groups = stack_prefixes(ds, sessions=[5, 2])
    assert np.array_equal(X, np.concatenate([agg[5], agg[2]]))
    assert groups.tolist() == [5] * lengths[5] + [2] * lengths[2]
    assert y.tolist() == [label[5]] * lengths[5] + [label[2]] * lengths[2]
    models = fit_baselines(ds, seed=0, names=("logistic",))
    scores = predict_dataset(models["logistic"], ds)
    assert scores.shape == (lengths.sum(),)
    _, yall, _ = stack_prefixes(ds)
    assert metrics(yall, scores)["roc_auc"] > 0.8
