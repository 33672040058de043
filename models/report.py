"""Markdown report with PNG plots from one or more EvalResults (models.evaluation).

    from models.report import write_report
    write_report({"simulated": sim_result, "taobao": taobao_result}, "docs/eval", title="intentstream model")

One section per dataset (a single EvalResult gets one section named "results"), plus a summary table
across datasets when there are several. Each section: counts, overall metrics with 95% intervals, gap
to the reference scorer ("optimal") with paired intervals, the primary scorer ("gru") against each
baseline, ROC AUC by prefix length, every metric by prefix length per scorer, and four plots (ROC, PR,
reliability diagram, ROC AUC by prefix length with interval bands). See docs/evaluation.md for how to
read them. Plots use matplotlib's Figure directly (Agg rendering, no pyplot global state).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.figure import Figure

from models.evaluation import METRICS, EvalResult, Estimate

METRIC_LABELS = {"roc_auc": "ROC AUC", "pr_auc": "PR AUC", "accuracy": "accuracy", "precision": "precision",
                 "recall": "recall", "f1": "F1", "brier": "Brier", "ece": "ECE"}
DPI = 110


def write_report(results: EvalResult | Mapping[str, EvalResult], out_dir: str | Path,
                 title: str = "intentstream evaluation", notes: str | Sequence[str] | None = None,
                 primary: str = "gru") -> Path:
    """Write out_dir/report.md and its PNGs; return the path of report.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = {"results": results} if isinstance(results, EvalResult) else dict(results)
    if not sections:
        raise ValueError("no results to report")
    lines = [f"# {title}", ""]
    for note in ([notes] if isinstance(notes, str) else list(notes or [])):
        lines += [note, ""]
    first = next(iter(sections.values()))
    cfg = first.config
    lines += [
        f"Intervals: 95% from {cfg['n_splits']} random {cfg.get('ci_unit', 'session')}-disjoint parts of the test set "
        f"(value ± t·sd/√parts; differences between scorers are paired on the same parts). ECE uses "
        f"{cfg.get('ece_bins', 15)} equal-mass bins. Thresholds apply to accuracy, precision, recall and F1. "
        "See docs/evaluation.md.", ""]
    if len(sections) > 1:
        lines += _summary(sections)
    for name, res in sections.items():
        lines += _section(name, res, out, primary)
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


# ---------------------------------------------------------------------------------------------------
# markdown

def _fmt(x: float, digits: int = 3, sign: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _ci(e: Estimate, digits: int = 3, sign: bool = False) -> str:
    if not math.isfinite(e.low):
        return _fmt(e.value, digits, sign)
    return f"{_fmt(e.value, digits, sign)} ({_fmt(e.low, digits, sign)}, {_fmt(e.high, digits, sign)})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "results"


def _summary(sections: Mapping[str, EvalResult]) -> list[str]:
    rows = []
    for name, res in sections.items():
        n = res.counts["overall"]
        for scorer in res.scorers:
            rows.append([name, scorer, f"{n['sessions']:,}", *(_ci(res.get(scorer, m)) for m in
                                                               ("roc_auc", "pr_auc", "brier", "ece"))])
    return ["## Summary", "", *_table(["dataset", "scorer", "test sessions", "ROC AUC", "PR AUC", "Brier", "ECE"], rows)]


def _section(name: str, res: EvalResult, out: Path, primary: str) -> list[str]:
    slug = _slug(name)
    n = res.counts["overall"]
    rate = n["positives"] / n["n"] if n["n"] else math.nan
    lines = [f"## {name}", "",
             f"{n['sessions']:,} test sessions, {n['n']:,} prefixes, {n['positives']:,} positive prefixes "
             f"(base rate {_fmt(rate)}).", ""]
    lines += ["### Overall (all prefixes)", ""]
    lines += _table(["scorer", "threshold", *(METRIC_LABELS[m] for m in METRICS)],
                    [[s, _fmt(r.threshold), *(_ci(r.overall[m]) for m in METRICS)] for s, r in res.scorers.items()])

    ref = res.reference
    if ref is not None and len(res.scorers) > 1:
        lines += [f"### Gap to {ref} (scorer − {ref}, paired interval)", "",
                  "Positive is better for ROC AUC, PR AUC, accuracy, precision, recall and F1; negative is "
                  "better for Brier and ECE.", ""]
        lines += _table(["scorer", *(METRIC_LABELS[m] for m in METRICS)],
                        [[s, *(_ci(res.difference(s, ref, m), 4, sign=True) for m in METRICS)]
                         for s in res.scorers if s != ref])
    others = [s for s in res.scorers if s not in (primary, ref)]
    if primary in res.scorers and others:
        lines += [f"### {primary} against the other scorers ({primary} − other, paired interval)", ""]
        lines += _table(["other", *(METRIC_LABELS[m] for m in METRICS)],
                        [[s, *(_ci(res.difference(primary, s, m), 4, sign=True) for m in METRICS)] for s in others])

    ks = sorted(res.counts["by_prefix"])
    lines += ["### ROC AUC by prefix length (after k events)", "",
              "Prefixes of exactly k events, from the sessions that had at least k events before their purchase "
              "(or end); later rows hold fewer, different sessions.", ""]
    lines += _table(["k", "prefixes", "positives", *res.scorers],
                    [[str(k), f"{res.counts['by_prefix'][k]['n']:,}", f"{res.counts['by_prefix'][k]['positives']:,}",
                      *(_ci(r.by_prefix[k]["roc_auc"]) for r in res.scorers.values())] for k in ks])
    if ref is not None and len(res.scorers) > 1:
        lines += [f"### ROC AUC gap to {ref} by prefix length", ""]
        lines += _table(["k", *(s for s in res.scorers if s != ref)],
                        [[str(k), *(_ci(res.difference(s, ref, "roc_auc", k), 4, sign=True)
                                    for s in res.scorers if s != ref)] for k in ks])
    for scorer, r in res.scorers.items():
        lines += [f"### {scorer}: all metrics by prefix length", ""]
        lines += _table(["k", *(METRIC_LABELS[m] for m in METRICS)],
                        [[str(k), *(_fmt(r.by_prefix[k][m].value) for m in METRICS)] for k in ks])

    lines += ["### Plots", ""]
    for kind, caption in (("roc", "ROC curves"), ("pr", "precision-recall curves"),
                          ("calibration", "reliability diagram"), ("auc_by_prefix", "ROC AUC by prefix length")):
        file = f"{slug}_{kind}.png"
        _PLOTS[kind](res, out / file, name)
        lines += [f"![{name}: {caption}]({file})", ""]
    for note in res.notes:
        lines += [f"- {note}"]
    return lines + [""]


# ---------------------------------------------------------------------------------------------------
# plots

def _title(what: str, name: str) -> str:
    return f"{what} ({name})" if name else what


def _fig() -> tuple[Figure, object]:
    fig = Figure(figsize=(5.2, 4.4), layout="constrained")
    return fig, fig.add_subplot()


def plot_roc(res: EvalResult, path: Path, name: str = "") -> Path:
    fig, ax = _fig()
    for scorer, r in res.scorers.items():
        if "roc" in r.curves:
            ax.plot(r.curves["roc"]["fpr"], r.curves["roc"]["tpr"],
                    label=f"{scorer} (AUC {_fmt(r.overall['roc_auc'].value)})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=_title("ROC", name),
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=DPI)
    return path


def plot_pr(res: EvalResult, path: Path, name: str = "") -> Path:
    fig, ax = _fig()
    base = math.nan
    for scorer, r in res.scorers.items():
        base = r.curves.get("base_rate", base)
        if "pr" in r.curves:
            ax.plot(r.curves["pr"]["recall"], r.curves["pr"]["precision"],
                    label=f"{scorer} (AP {_fmt(r.overall['pr_auc'].value)})")
    if math.isfinite(base):
        ax.axhline(base, color="grey", lw=0.8, ls="--", label=f"base rate {_fmt(base)}")
    ax.set(xlabel="recall", ylabel="precision", title=_title("Precision-recall", name), xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper right", fontsize=8)
    fig.savefig(path, dpi=DPI)
    return path


def plot_calibration(res: EvalResult, path: Path, name: str = "") -> Path:
    fig, ax = _fig()
    top = 0.0
    for scorer, r in res.scorers.items():
        rel = r.curves["reliability"]
        if rel["mean_score"]:
            ax.plot(rel["mean_score"], rel["frac_pos"], marker="o", ms=3,
                    label=f"{scorer} (ECE {_fmt(r.overall['ece'].value)})")
            top = max(top, max(rel["mean_score"]), max(rel["frac_pos"]))
    top = min(1.0, top * 1.05) if top > 0 else 1.0      # zoom: skewed scores crowd the low corner
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--", label="perfect calibration")
    ax.set(xlabel="mean predicted probability (equal-mass bins)", ylabel="observed purchase rate",
           title=_title("Calibration", name), xlim=(0, top), ylim=(0, top))
    ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path, dpi=DPI)
    return path


def plot_auc_by_prefix(res: EvalResult, path: Path, name: str = "") -> Path:
    fig, ax = _fig()
    ks = sorted(res.counts["by_prefix"])
    for scorer, r in res.scorers.items():
        est = [r.by_prefix[k]["roc_auc"] for k in ks]
        line, = ax.plot(ks, [e.value for e in est], marker="o", ms=3, label=scorer)
        ax.fill_between(ks, [e.low for e in est], [e.high for e in est], color=line.get_color(), alpha=0.2, lw=0)
    ax.set(xlabel="events seen (prefix length k)", ylabel="ROC AUC", title=_title("ROC AUC by prefix length", name))
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=DPI)
    return path


_PLOTS = {"roc": plot_roc, "pr": plot_pr, "calibration": plot_calibration, "auc_by_prefix": plot_auc_by_prefix}
