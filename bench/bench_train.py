"""Training benchmark: train the GRU on ~100k simulated sessions on 2 CPU threads, compare with Bayes-optimal.

One simulated population is split by session start time into train (the first TRAIN_SESSIONS sessions),
validation (the next VAL_SESSIONS) and test (all later sessions, >= 100k with the defaults), so the test set
is both large and strictly later than anything the model saw. The simulator's Bayes-optimal score of every
test prefix (joined by event id) gives the best achievable ROC AUC on exactly the same prefixes.

    .venv/bin/python bench/bench_train.py                 # defaults below (~15 min on 2 cores, ~4 GB RAM)
    .venv/bin/python bench/bench_train.py --users 5000    # quick look
"""
from __future__ import annotations

import argparse
import logging
import time

USERS = 45_000            # ~4.8 sessions per user over 14 days -> ~215k sessions
DAYS = 14
SEED = 0
TRAIN_SESSIONS = 100_000
VAL_SESSIONS = 15_000
THREADS = 2
MAX_EPOCHS = 14


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=USERS)
    ap.add_argument("--days", type=int, default=DAYS)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--train-sessions", type=int, default=TRAIN_SESSIONS)
    ap.add_argument("--val-sessions", type=int, default=VAL_SESSIONS)
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--epochs", type=int, default=MAX_EPOCHS)
    ap.add_argument("--out", default=None, help="also save the trained artifact here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from models.dataset import build_dataset
    from models.evaluation import metrics
    from models.features import FeatureSpec
    from models.simulator import SimConfig, simulate
    from models.train import TrainConfig, fit, predict

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    events, optimal = [], {}
    for ev, p in simulate(SimConfig(n_users=args.users, n_days=args.days, seed=args.seed)):
        events.append(ev)
        optimal[ev.event_id] = p
    sim_s = time.perf_counter() - t

    t = time.perf_counter()
    spec = FeatureSpec()
    ds = build_dataset(events, spec)
    feat_s = time.perf_counter() - t
    del events

    n = len(ds)
    n_train = min(args.train_sessions, n - 2)
    n_val = min(args.val_sessions, max(1, (n - n_train) // 2))
    cfg = TrainConfig(item_dim=0, batch_size=512, lr=3e-3, lr_decay=0.85, patience=4, max_epochs=args.epochs,
                      seed=args.seed, threads=args.threads, val_frac=n_val / n, test_frac=(n - n_train - n_val) / n)
    t = time.perf_counter()
    res = fit(ds, spec, cfg)
    train_s = time.perf_counter() - t
    tr, va, te = res.split

    t = time.perf_counter()
    test = ds.subset(te)
    y = test.step_labels()
    p = predict(res.model, test)
    po = np.array([optimal[e] for e in test.flat_event_ids()])
    m = metrics(y, p, res.meta["threshold"])
    auc_opt = float(roc_auc_score(y, po))
    eval_s = time.perf_counter() - t
    if args.out:
        from models import artifacts

        artifacts.save(res.model, {**res.meta, "data": {"source": f"bench_train: {args.users} users, seed {args.seed}"}},
                       args.out, spec=spec)

    rows = [
        ("sessions train / val / test", f"{len(tr)} / {len(va)} / {len(te)}", "test >= 100k"),
        ("prefixes train / test", f"{int(ds.lengths[tr].sum())} / {len(y)}", ""),
        ("simulate (s)", f"{sim_s:.0f}", ""),
        ("featurize all sessions (s)", f"{feat_s:.0f}", ""),
        (f"train on {len(tr)} sessions, {args.threads} threads (s)",
         f"{train_s:.0f} ({res.meta['training']['epochs_run']} epochs, best {res.meta['training']['best_epoch']})",
         "<= 600"),
        ("featurize train share + train (s)", f"{feat_s * len(tr) / n + train_s:.0f}", "<= 600"),
        ("test ROC AUC: GRU", f"{m['roc_auc']:.4f}", ""),
        ("test ROC AUC: Bayes-optimal", f"{auc_opt:.4f}", ""),
        ("AUC gap to optimal", f"{auc_opt - m['roc_auc']:.4f}", "<= 0.01"),
        ("test calibration error (ECE, 15 equal-mass bins)", f"{m['ece']:.4f}", "<= 0.02"),
        ("test Brier / PR AUC", f"{m['brier']:.4f} / {m['pr_auc']:.4f}", ""),
        ("test F1 at validation threshold", f"{m['f1']:.4f} (thr {res.meta['threshold']:.3f})", ""),
        ("evaluate (s)", f"{eval_s:.0f}", ""),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"\n{'case':{w}s}  {'figure':32s}  target")
    for case, fig, target in rows:
        print(f"{case:{w}s}  {fig:32s}  {target}")


if __name__ == "__main__":
    main()
