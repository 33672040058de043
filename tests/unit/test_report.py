"""The report writes markdown tables and real PNG plots, for one dataset or several side by side."""
from __future__ import annotations

import numpy as np

from models.evaluation import PrefixScores, evaluate
from models.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _result(seed: int, with_optimal: bool = True):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 12, 800)
    session = np.repeat(np.arange(len(lengths)), lengths)
    prefix_len = np.concatenate([np.arange(1, t + 1) for t in lengths])
    logit = rng.normal(size=len(session)) - 2
    p = 1 / (1 + np.exp(-logit))
    label = (rng.random(len(p)) < p).astype(int)
    scores = {"gru": 1 / (1 + np.exp(-(logit + rng.normal(0, 0.5, len(p))))),
              "gbm": 1 / (1 + np.exp(-(logit + rng.normal(0, 1.0, len(p)))))}
    if with_optimal:
        scores["optimal"] = p
    return evaluate(PrefixScores(session, prefix_len, label, scores), {"gru": 0.3}, max_prefix=5, n_splits=5)


def _check_pngs(out, prefix):
    for kind in ("roc", "pr", "calibration", "auc_by_prefix"):
        data = (out / f"{prefix}_{kind}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_single_result_report(tmp_path):
    path = write_report(_result(0), tmp_path / "rep", title="Sim eval", notes="a note")
    text = path.read_text()
    assert path.name == "report.md"
    assert text.startswith("# Sim eval") and "a note" in text
    assert "### Gap to optimal" in text and "### gru against the other scorers" in text
    assert "### ROC AUC by prefix length" in text
    for k in range(1, 6):
        assert f"\n| {k} |" in text
    for kind in ("roc", "pr", "calibration", "auc_by_prefix"):
        assert f"(results_{kind}.png)" in text
    _check_pngs(tmp_path / "rep", "results")


def test_two_datasets_side_by_side(tmp_path):
    path = write_report({"simulated": _result(1), "Taobao sample": _result(2, with_optimal=False)}, tmp_path)
    text = path.read_text()
    assert "## Summary" in text and "## simulated" in text and "## Taobao sample" in text
    # No reference scorer on the real data, so only one gap section.
    assert text.count("### Gap to optimal (") == 1
    _check_pngs(tmp_path, "simulated")
    _check_pngs(tmp_path, "taobao_sample")
