"""Evaluation metrics, prefix grouping, intervals and the SessionDataset glue, on synthetic arrays."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, f1_score, roc_auc_score

from models.evaluation import (
    METRICS, EvalResult, PrefixScores, choose_threshold, ece, estimate, evaluate, evaluate_model, metrics,
    prefix_scores_from_dataset, reliability, session_parts,
)


def _sessions(n_sessions: int, seed: int, signal: float = 1.5):
    """Synthetic prefixes with a calibrated score p and labels drawn from it."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 15, n_sessions)
    session = np.repeat(np.arange(n_sessions), lengths)
    prefix_len = np.concatenate([np.arange(1, t + 1) for t in lengths])
    z = rng.normal(size=len(session)) * signal - 2.0
    p = 1 / (1 + np.exp(-z))
    label = (rng.random(len(p)) < p).astype(np.int8)
    return session, prefix_len, label, p, rng


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    y = (rng.random(n) < 0.2).astype(int)
    # Rounded scores create many ties, which AUC and AP must handle like sklearn.
    s = np.round(np.clip(0.2 + 0.3 * y + rng.normal(0, 0.25, n), 0, 1), 2)
    m = metrics(y, s, threshold=0.4)
    pred = (s >= 0.4).astype(int)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["brier"] == pytest.approx(brier_score_loss(y, s))
    assert m["n"] == n and m["positives"] == y.sum()


def test_metrics_hand_computed_small_case():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.6, 0.7, 0.4, 0.2, 0.9])
    m = metrics(y, s, threshold=0.5)
    # predicted positive: 0.6 (fp), 0.7 (tp), 0.9 (tp); 0.4 is a missed positive.
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 / 3)
    # Pairs (pos, neg) ranked correctly: 0.7>{0.1,0.6,0.2}, 0.4>{0.1,0.2}, 0.9>all -> 8 of 9.
    assert m["roc_auc"] == pytest.approx(8 / 9)


def test_metrics_one_class_and_no_predicted_positives():
    m = metrics(np.zeros(10), np.full(10, 0.1), threshold=0.5)
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    assert math.isnan(m["precision"]) and math.isnan(m["recall"]) and math.isnan(m["f1"])
    assert m["accuracy"] == 1.0
    assert m["brier"] == pytest.approx(0.01)


def test_ece_small_when_calibrated_large_when_not():
    rng = np.random.default_rng(0)
    p = rng.beta(1, 8, 200_000)
    y = (rng.random(len(p)) < p).astype(int)
    assert ece(y, p) < 0.005
    assert ece(y, p, strategy="width") < 0.005
    over = np.clip(p * 2.0, 0, 1)               # confidently overestimates
    assert ece(y, over) > 0.05
    assert ece(y, over) == pytest.approx(metrics(y, over)["ece"])
    # A constant score equal to the base rate is calibrated in aggregate: ECE is ~0.
    assert ece(y, np.full(len(y), y.mean())) < 1e-9


def test_ece_hand_computed_equal_mass():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.3, 0.6, 0.8])
    # Two bins of two: |0 - 0.2| and |1 - 0.7|, each with weight 1/2.
    assert ece(y, s, n_bins=2) == pytest.approx(0.5 * 0.2 + 0.5 * 0.3)
    # Tied scores stay in one bin even when that makes the bins unequal.
    y2 = np.array([0, 1, 0, 0, 1, 1])
    s2 = np.array([0.2, 0.2, 0.2, 0.2, 0.9, 0.9])
    assert ece(y2, s2, n_bins=3) == pytest.approx(4 / 6 * abs(0.25 - 0.2) + 2 / 6 * abs(1 - 0.9))
    assert reliability(y2, s2, n_bins=3)["count"] == [4, 2]
    rel = reliability(y, s, n_bins=2)
    assert rel["mean_score"] == pytest.approx([0.2, 0.7])
    assert rel["frac_pos"] == pytest.approx([0.0, 1.0])


def test_choose_threshold_maximises_criterion():
    rng = np.random.default_rng(3)
    y = (rng.random(5000) < 0.15).astype(int)
    s = np.clip(0.15 + 0.3 * y + rng.normal(0, 0.2, len(y)), 0, 1)
    t = choose_threshold(y, s, "f1")
    best = metrics(y, s, t)["f1"]
    for other in np.linspace(0.05, 0.95, 19):
        assert metrics(y, s, other)["f1"] <= best + 1e-12
    ta = choose_threshold(y, s, "accuracy")
    best_acc = metrics(y, s, ta)["accuracy"]
    for other in np.linspace(0.05, 0.95, 19):
        assert metrics(y, s, other)["accuracy"] <= best_acc + 1e-12


def test_session_parts_keep_sessions_together_and_balance():
    session = np.repeat(np.arange(1000), 3)
    part = session_parts(session, 10, seed=1)
    for s in range(0, 1000, 97):
        assert len(set(part[session == s])) == 1
    counts = np.bincount(part, minlength=10)
    assert counts.min() == counts.max() == 300
    assert not np.array_equal(part, session_parts(session, 10, seed=2))


def test_by_prefix_groups_exactly_k_events():
    session, prefix_len, label, p, rng = _sessions(3000, seed=4)
    noisy = np.clip(p + rng.normal(0, 0.05, len(p)), 0, 1)
    ps = PrefixScores(session, prefix_len, label, {"optimal": p, "noisy": noisy})
    res = evaluate(ps, {"noisy": 0.3}, max_prefix=5, n_splits=5, seed=0)
    assert sorted(res.counts["by_prefix"]) == [1, 2, 3, 4, 5]
    for k in (1, 3, 5):
        mask = prefix_len == k
        assert res.counts["by_prefix"][k]["n"] == mask.sum()
        assert res.counts["by_prefix"][k]["sessions"] == len(np.unique(session[mask]))
        direct = metrics(label[mask], noisy[mask], 0.3)
        for m in METRICS:
            assert res.get("noisy", m, k).value == pytest.approx(direct[m], nan_ok=True)
    overall = metrics(label, noisy, 0.3)
    for m in METRICS:
        assert res.get("noisy", m).value == pytest.approx(overall[m])
    assert res.scorers["noisy"].threshold == 0.3 and res.scorers["optimal"].threshold == 0.5


def test_intervals_contain_point_and_cover_truth():
    # Each run: a calibrated scorer on fresh data; its CI for Brier should cover the true expected Brier
    # E[p(1-p)] most of the time (nominal 95%).
    covered = 0
    runs = 20
    for seed in range(runs):
        session, prefix_len, label, p, _ = _sessions(600, seed=100 + seed)
        res = evaluate(PrefixScores(session, prefix_len, label, {"optimal": p}), max_prefix=3, n_splits=10, seed=seed)
        for m in METRICS:
            e = res.get("optimal", m)
            if math.isfinite(e.low):
                assert e.low <= e.value <= e.high
                assert len(e.parts) == 10
        truth = float(np.mean(p * (1 - p)))
        covered += res.get("optimal", "brier").contains(truth)
    assert covered >= 0.8 * runs


def test_difference_is_paired_and_tighter():
    session, prefix_len, label, p, rng = _sessions(4000, seed=5)
    worse = 1 / (1 + np.exp(-(np.log(p / (1 - p)) + rng.normal(0, 0.8, len(p)))))
    res = evaluate(PrefixScores(session, prefix_len, label, {"optimal": p, "gru": worse}), n_splits=10)
    d = res.difference("gru", "optimal", "roc_auc")
    assert d.value == pytest.approx(res.get("gru", "roc_auc").value - res.get("optimal", "roc_auc").value)
    assert d.high < 0                                   # clearly worse than optimal
    width_single = res.get("gru", "roc_auc").high - res.get("gru", "roc_auc").low
    assert d.high - d.low < width_single                # pairing removes the shared sampling noise


def test_estimate_undefined():
    e = estimate(0.7, [0.7, math.nan])
    assert e.value == 0.7 and math.isnan(e.low)
    assert math.isnan(estimate(math.nan, [0.1, 0.2, 0.3]).low)


def test_result_json_round_trip(tmp_path):
    session, prefix_len, label, p, _ = _sessions(500, seed=6)
    res = evaluate(PrefixScores(session, prefix_len, label, {"optimal": p}), max_prefix=4, n_splits=4)
    back = EvalResult.load_json(res.save_json(tmp_path / "m.json"))
    assert back.get("optimal", "roc_auc", 2).value == res.get("optimal", "roc_auc", 2).value
    assert back.counts["by_prefix"][3] == res.counts["by_prefix"][3]
    assert back.reference == "optimal"


def test_prefix_scores_validation():
    with pytest.raises(ValueError):
        PrefixScores([0, 0], [1, 2], [0, 1], {"a": np.array([0.1, 1.5])})
    with pytest.raises(ValueError):
        PrefixScores([0, 0], [0, 1], [0, 1], {"a": np.array([0.1, 0.5])})
    with pytest.raises(ValueError):
        PrefixScores([0, 0], [1, 2], [0, 1], {"a": np.array([0.1])})


@dataclass
class _FakeDataset:
    label: np.ndarray
    start_ms: np.ndarray
    event_ids: list
    cat: list
    user_id: list | None = None


def _fake_dataset():
    lengths = [3, 1, 2]
    ids = [[f"s{i}e{j}" for j in range(t)] for i, t in enumerate(lengths)]
    return _FakeDataset(label=np.array([1, 0, 0]), start_ms=np.array([10, 20, 30]), event_ids=ids,
                        cat=[np.zeros((t, 3), np.int64) for t in lengths])


def test_prefix_scores_from_dataset_flat_list_and_optimal():
    ds = _fake_dataset()
    per_session = [np.array([0.1, 0.2, 0.3]), np.array([0.4]), np.array([0.5, 0.6])]
    optimal = {eid: 0.01 * (i + 1) for i, eid in enumerate(e for ids in ds.event_ids for e in ids)}
    ps = prefix_scores_from_dataset(ds, {"gru": per_session, "gbm": np.linspace(0, 1, 6)}, optimal=optimal)
    assert ps.session.tolist() == [0, 0, 0, 1, 2, 2]
    assert ps.prefix_len.tolist() == [1, 2, 3, 1, 1, 2]
    assert ps.label.tolist() == [1, 1, 1, 0, 0, 0]
    assert ps.start_ms.tolist() == [10, 10, 10, 20, 30, 30]
    assert ps.scores["gru"].tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert ps.scores["optimal"].tolist() == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    # Selecting sessions: scores follow the selection order.
    sub = prefix_scores_from_dataset(ds, {"gru": [np.array([0.5, 0.6]), np.array([0.9, 0.8, 0.7])]},
                                     sessions=[2, 0])
    assert sub.session.tolist() == [2, 2, 0, 0, 0]
    assert sub.label.tolist() == [0, 0, 1, 1, 1]


def test_prefix_scores_from_dataset_errors():
    ds = _fake_dataset()
    with pytest.raises(ValueError, match="expected"):
        prefix_scores_from_dataset(ds, {"gru": [np.zeros(3), np.zeros(2), np.zeros(2)]})
    with pytest.raises(ValueError, match="prefixes"):
        prefix_scores_from_dataset(ds, {"gru": np.zeros(5)})
    with pytest.raises(ValueError, match="no optimal score"):
        prefix_scores_from_dataset(ds, {"gru": np.zeros(6)}, optimal={"s0e0": 0.1})


def test_evaluate_model_runs_end_to_end():
    rng = np.random.default_rng(7)
    n = 400
    lengths = rng.integers(1, 8, n)
    label = (rng.random(n) < 0.3).astype(int)
    ds = _FakeDataset(label=label, start_ms=np.arange(n), cat=[np.zeros((t, 3)) for t in lengths],
                      event_ids=[[f"{i}:{j}" for j in range(t)] for i, t in enumerate(lengths)],
                      user_id=[f"u{i % 150}" for i in range(n)])
    gru = [np.clip(0.3 + 0.4 * label[i] + rng.normal(0, 0.2, t), 0, 1) for i, t in enumerate(lengths)]
    res = evaluate_model(ds, {"gru": gru}, {"gru": 0.5}, max_prefix=3, n_splits=5)
    assert res.counts["overall"]["sessions"] == n
    assert res.counts["overall"]["n"] == lengths.sum()
    assert res.get("gru", "roc_auc").value > 0.8
    assert res.reference is None
    assert res.config["ci_unit"] == "user"


def test_parts_keep_users_together():
    ds = _fake_dataset()
    ds.user_id = ["u1", "u2", "u1"]
    ps = prefix_scores_from_dataset(ds, {"gru": np.full(6, 0.5)})
    assert ps.group.tolist() == [0, 0, 0, 1, 0, 0]
    part = session_parts(ps.group, 2, seed=0)
    assert len(set(part[[0, 4]])) == 1          # sessions 0 and 2 (both u1) share a part
