"""`intentstream train | evaluate | export`: the model's command line.

Data sources (train and evaluate take the same flags):
    --events FILE            ClickEvent JSON lines (simulator output keeps its "_p_optimal" field)
    --format FMT --path FILE a public dataset through models.loaders (rees46, retailrocket, ...)
    --simulate N             N simulated users generated on the fly (--sim-days, --seed)

Examples:
    intentstream train --simulate 20000 --out models/default
    intentstream evaluate models/default --simulate 20000 --out docs/report
    intentstream export models/default --format onnx --out step.onnx
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


# -- data sources -------------------------------------------------------------------------------------

@dataclass
class Source:
    events: list                      # ClickEvents
    p_optimal: dict[str, float] | None  # event id -> Bayes-optimal score (simulated data only)
    data_hash: str                    # sha256 of the file, or over (event_id, ts) of generated events
    description: str
    bad_rows: int = 0


def add_source_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--events", metavar="FILE", help="ClickEvent JSONL file")
    g.add_argument("--format", dest="fmt", metavar="FMT",
                   help="public dataset format (rees46, retailrocket, yoochoose, coveo, taobao, jsonl); needs --path")
    g.add_argument("--simulate", type=int, metavar="N_USERS", help="simulate this many users")
    p.add_argument("--path", help="input file for --format")
    p.add_argument("--sim-days", type=int, default=14, help="days simulated (--simulate)")
    p.add_argument("--seed", type=int, default=0, help="seed for the simulator and for training")


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_events_jsonl(path: str) -> tuple[list, dict[str, float], int]:
    """ClickEvents from JSON lines plus the optional "_p_optimal" field; bad lines are counted, not fatal."""
    import orjson

    from schemas.codec import DecodeError, decode_click

    events, optimal, bad = [], {}, 0
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            ev = decode_click(line)
            if isinstance(ev, DecodeError):
                bad += 1
                continue
            events.append(ev)
            if b"_p_optimal" in line:
                p = orjson.loads(line).get("_p_optimal")
                if isinstance(p, (int, float)):
                    optimal[ev.event_id] = float(p)
    return events, optimal, bad


def load_source(args: argparse.Namespace) -> Source:
    if args.simulate is not None:
        from tqdm import tqdm

        from models.simulator import SimConfig, simulate

        cfg = SimConfig(n_users=args.simulate, n_days=args.sim_days, seed=args.seed)
        events, optimal = [], {}
        h = hashlib.sha256()
        for ev, p in tqdm(simulate(cfg), desc="simulate", unit="ev", mininterval=1.0):
            events.append(ev)
            optimal[ev.event_id] = p
            h.update(f"{ev.event_id}\t{ev.ts}\n".encode())
        return Source(events, optimal, h.hexdigest(),
                      f"simulated: {args.simulate} users, {args.sim_days} days, seed {args.seed}")
    if args.events:
        events, optimal, bad = read_events_jsonl(args.events)
        return Source(events, optimal or None, _sha256_file(args.events), f"events file {args.events}", bad)
    if not args.path:
        raise SystemExit("--format needs --path FILE")
    from models.loaders import load

    res = load(args.path, args.fmt)
    events = list(res.events)
    if res.bad_rows:
        log.warning("%s: %d bad rows skipped (%s)", args.path, res.bad_rows, dict(res.reasons))
    return Source(events, None, _sha256_file(args.path), f"{args.fmt} file {args.path}", res.bad_rows)


# -- train --------------------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from models import artifacts
    from models.dataset import build_dataset
    from models.features import FeatureSpec
    from models.train import TrainConfig, fit

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    src = load_source(args)
    log.info("%s: %d events", src.description, len(src.events))
    spec = FeatureSpec()
    ds = build_dataset(src.events, spec)
    n_events, src.events = len(src.events), []  # the clicks are in `ds` now; free them before training
    prep_s = time.perf_counter() - t0
    given = {"hidden_size": args.hidden, "item_dim": args.item_dim, "dropout": args.dropout,
             "batch_size": args.batch_size, "lr": args.lr, "max_epochs": args.epochs, "patience": args.patience,
             "weight_decay": args.weight_decay, "head_dropout": args.head_dropout, "ema": args.ema,
             "aux_weight": args.aux_weight, "val_frac": args.val_frac, "test_frac": args.test_frac}
    cfg = TrainConfig(**{k: v for k, v in given.items() if v is not None}, seed=args.seed, threads=args.threads,
                      max_minutes=args.max_minutes)
    res = fit(ds, spec, cfg, p_optimal=src.p_optimal)
    meta = {**res.meta, "data": {"source": src.description, "sha256": src.data_hash, "n_events": n_events,
                                 "bad_rows": src.bad_rows, "n_sessions": len(ds), "n_prefixes": ds.n_steps,
                                 "prepare_seconds": round(prep_s, 1)}}
    version = artifacts.save(res.model, meta, args.out, spec=spec)
    test = res.meta["metrics"].get("test", {})
    print(f"model {version} -> {args.out}")
    print(f"  sessions {len(ds)}  prefixes {ds.n_steps}  epochs {len(res.history)}  "
          f"prepare {prep_s:.0f}s  train {res.meta['training']['train_seconds']:.0f}s")
    for k in ("roc_auc", "optimal_roc_auc", "pr_auc", "brier", "ece", "f1"):
        if k in test:
            print(f"  test {k:16s} {test[k]:.4f}")
    print(f"  threshold (max F1 on validation) {res.meta['threshold']:.4f}")
    return 0


# -- evaluate -----------------------------------------------------------------------------------------

def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from models import artifacts
    from models.dataset import build_dataset, time_split
    from models.train import predict

    art = artifacts.load(args.model)
    src = load_source(args)
    ds = build_dataset(src.events, art.spec)
    training = art.meta.get("training", {})
    tr, va, te = time_split(ds, training.get("val_frac", 0.15), training.get("test_frac", 0.15))
    if args.split == "all":
        tr, te = tr, np.arange(len(ds))
    elif args.split == "users":
        # Data the model never saw (another seed or period): every session is a test session, except those
        # of a fixed 20% of users (stable hash), which only train the baselines, so no scorer is in-sample.
        from models.ids import stable_hash

        base = np.array([stable_hash(u) % 5 == 0 for u in ds.user_id])
        tr, te = np.flatnonzero(base), np.flatnonzero(~base)
    test_ds = ds.subset(te)
    scores = {"gru": predict(art.model, test_ds)}
    thresholds = {"gru": art.threshold}
    if not args.no_baselines:
        from models.baselines import fit_baselines, predict_dataset

        train_ds = ds.subset(tr)
        for name, m in fit_baselines(train_ds, seed=args.seed).items():
            scores[name] = predict_dataset(m, test_ds)
    from models.evaluation import evaluate_model

    result = evaluate_model(test_ds, scores, thresholds=thresholds, optimal=src.p_optimal,
                            reference="optimal" if src.p_optimal else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.save_json(out / "metrics.json")
    try:
        from models.report import write_report
    except ImportError:
        log.warning("models.report not available; wrote metrics.json only")
    else:
        write_report({args.name or src.description: result}, out,
                     title=f"intentstream evaluation: {art.version}")
    print(f"evaluated {art.version} on {len(test_ds)} test sessions ({test_ds.n_steps} prefixes) -> {out}")
    _print_first_vs_returning(src.events, test_ds, scores, src.p_optimal)
    (out / "model.json").write_text(json.dumps({"model": art.version, "data": src.description,
                                                "data_sha256": src.data_hash}, indent=2) + "\n")
    return 0


def _print_first_vs_returning(events, test_ds, scores: dict, p_optimal: dict | None) -> None:
    """ROC AUC on users' first sessions vs returning sessions (first = the user's first session in the data)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    first_ts: dict[str, int] = {}
    for ev in events:
        if ev.ts < first_ts.get(ev.user_id, 1 << 62):
            first_ts[ev.user_id] = ev.ts
    first = np.repeat([first_ts[u] == s for u, s in zip(test_ds.user_id, test_ds.start_ms)], test_ds.lengths)
    y = test_ds.step_labels()
    all_scores = dict(scores)
    if p_optimal:
        all_scores["optimal"] = np.array([p_optimal.get(e, np.nan) for e in test_ds.flat_event_ids()])
    for name, sel in (("first sessions", first), ("returning sessions", ~first)):
        if 0 < y[sel].sum() < sel.sum():
            aucs = "  ".join(f"{k} {roc_auc_score(y[sel], v[sel]):.4f}" for k, v in all_scores.items()
                             if not np.isnan(v[sel]).any())
            print(f"  ROC AUC, {name} ({int(sel.sum())} prefixes): {aucs}")


# -- export -------------------------------------------------------------------------------------------

def cmd_export(args: argparse.Namespace) -> int:
    from models import artifacts
    from models.export import export

    art = artifacts.load(args.model)
    path = export(art.model, args.format, args.out)
    print(f"exported {art.version} step function as {args.format} -> {path}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the intent GRU and save an artifact",
                              description=cmd_train.__doc__ or "Train the intent GRU.")
    add_source_args(p)
    p.add_argument("--out", required=True, help="artifact directory to write")
    # Defaults (None) come from models.train.TrainConfig; torch is not imported just to show --help.
    p.add_argument("--hidden", type=int, help="GRU hidden size (64)")
    p.add_argument("--item-dim", type=int, help="item embedding size, 0 for none (8)")
    p.add_argument("--dropout", type=float, help="embedding dropout while training (0.2)")
    p.add_argument("--batch-size", type=int, help="sessions per batch (512)")
    p.add_argument("--lr", type=float, help="Adam learning rate (3e-3)")
    p.add_argument("--epochs", type=int, help="maximum epochs; early stopping may end sooner (20)")
    p.add_argument("--patience", type=int, help="epochs without validation improvement before stopping (4)")
    p.add_argument("--weight-decay", type=float, help="Adam L2 weight decay")
    p.add_argument("--head-dropout", type=float, help="dropout on the head input while training")
    p.add_argument("--ema", type=float, help="per-step EMA decay of the weights, 0 = off")
    p.add_argument("--aux-weight", type=float, help="weight of the next-event auxiliary loss, 0 = off")
    p.add_argument("--val-frac", type=float, help="share of sessions, just before the test split, for validation (0.15)")
    p.add_argument("--test-frac", type=float,
                   help="newest share of sessions held out as the test split (0.15); smaller when the model is "
                        "judged on other data, e.g. an unseen simulator seed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-minutes", type=float, default=None, help="training time budget")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("evaluate", help="evaluate a model (and baselines) and write a report")
    p.add_argument("model", help="artifact directory")
    add_source_args(p)
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--split", choices=("test", "all", "users"), default="test",
                   help="test: the time-based test split (default); all: every session (baselines then train on "
                        "the time-based training split, in-sample); users: every session of 80%% of the users, "
                        "the other 20%% train the baselines (for data the model never saw)")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--name", help="dataset name in the report")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("export", help="export a model's step function (TorchScript or ONNX)")
    p.add_argument("model", help="artifact directory")
    p.add_argument("--format", choices=("torchscript", "onnx"), required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)
