"""Training benchmark: `intentstream train` on ~100k simulated sessions, then the AUC gap to Bayes-optimal
on a separate simulated test population (an unseen seed, every session, >= 100k sessions).

Training runs exactly what `intentstream train --simulate USERS` runs (models.model_cli.load_source ->
dataset.build_dataset -> train.fit with the CLI's defaults plus the flags below), timed in wall-clock and
process CPU seconds (user+sys, all threads), so a run on a busy machine still shows its own cost.
The test population is simulated with another seed and scored step by step like serving; the simulator's
Bayes-optimal score of the same prefixes gives the best achievable ROC AUC. Sessions are also split into
each user's first session and returning sessions.

    .venv/bin/python bench/bench_train.py                    # defaults below (~10 min on 2 idle cores, ~4 GB)
    .venv/bin/python bench/bench_train.py --users 4000 --test-users 4000   # quick look
    .venv/bin/python bench/bench_train.py --model models/default           # score the shipped model only
"""
from __future__ import annotations

import argparse
import logging
import os
import time

USERS = 21_000            # ~4.8 sessions per user over 14 days -> ~101k sessions (the CLI splits 70/15/15)
TEST_USERS = 22_000       # unseen seed, every session is a test session -> ~106k sessions
DAYS = 14
SEED = 0
TEST_SEED = 101
THREADS = 2
ITEM_DIM = 0              # the shipped default's flags (docs/model.md)
WEIGHT_DECAY = 1e-4


def _clock() -> tuple[float, float]:
    t = os.times()
    return time.perf_counter(), t.user + t.system


def _since(c: tuple[float, float]) -> tuple[float, float]:
    w, u = _clock()
    return w - c[0], u - c[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=USERS)
    ap.add_argument("--test-users", type=int, default=TEST_USERS)
    ap.add_argument("--days", type=int, default=DAYS)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--test-seed", type=int, default=TEST_SEED)
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--item-dim", type=int, default=ITEM_DIM)
    ap.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY)
    ap.add_argument("--epochs", type=int, default=None, help="max epochs (TrainConfig default)")
    ap.add_argument("--out", default=None, help="also save the trained artifact here")
    ap.add_argument("--model", default=None, help="skip training: score this artifact on the test population")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from models.dataset import build_dataset
    from models.evaluation import metrics
    from models.features import FeatureSpec
    from models.model_cli import load_source
    from models.train import TrainConfig, fit, predict

    torch.set_num_threads(args.threads)
    spec = FeatureSpec()
    load0 = os.getloadavg()[0]

    if args.model:  # an existing artifact (e.g. models/default) on the same unseen test population
        from models import artifacts

        art = artifacts.load(args.model)
        res = argparse.Namespace(model=art.model, meta=art.meta)
        prep = train = (0.0, 0.0)  # not timed here; the rows show the artifact's own split
        n = art.meta["training"]["n_sessions"]
        tr, va, te = range(n["train"]), range(n["validation"]), range(n["test"])
    else:
        # -- train: what `intentstream train --simulate USERS --item-dim .. --weight-decay ..` does
        c = _clock()
        src = load_source(argparse.Namespace(simulate=args.users, sim_days=args.days, seed=args.seed, events=None,
                                             fmt=None, path=None))
        ds = build_dataset(src.events, spec)
        prep = _since(c)
        del src
        extra = {} if args.epochs is None else {"max_epochs": args.epochs}
        cfg = TrainConfig(item_dim=args.item_dim, weight_decay=args.weight_decay, seed=args.seed,
                          threads=args.threads, progress=False, **extra)
        c = _clock()
        res = fit(ds, spec, cfg)
        train = _since(c)
        tr, va, te = res.split
        if args.out:
            from models import artifacts

            artifacts.save(res.model, {**res.meta, "data": {"source": f"bench_train: {args.users} users, seed "
                                                                      f"{args.seed}"}}, args.out, spec=spec)
        del ds

    training = res.meta["training"]

    # -- test: an unseen seed, every session
    c = _clock()
    tsrc = load_source(argparse.Namespace(simulate=args.test_users, sim_days=args.days, seed=args.test_seed,
                                          events=None, fmt=None, path=None))
    first_session = {}
    for ev in tsrc.events:  # events are in time order: a user's first session id is the first one seen
        first_session.setdefault(ev.user_id, ev.session_id)
    test = build_dataset(tsrc.events, spec)
    y = test.step_labels()
    p = predict(res.model, test)
    po = np.array([tsrc.p_optimal[e] for e in test.flat_event_ids()])
    first = np.repeat([first_session[u] == s for u, s in zip(test.user_id, test.session_id)], test.lengths)
    k = np.concatenate([np.arange(1, n + 1) for n in test.lengths])
    evaluate_s = _since(c)
    m = metrics(y, p, res.meta["threshold"])

    def gap(sel=slice(None)) -> str:
        a, b = roc_auc_score(y[sel], p[sel]), roc_auc_score(y[sel], po[sel])
        return f"{a:.4f} / {b:.4f} / {b - a:.4f}"

    rows = [
        ("load average (1 min) at start", f"{load0:.1f}", "2 cores; > 2 means contended"),
        ("training data: sessions (train / val / test split)",
         f"{len(tr) + len(va) + len(te)} ({len(tr)} / {len(va)} / {len(te)})", "~100k"),
        ("prepare: simulate + featurize (wall / CPU s)", f"{prep[0]:.0f} / {prep[1]:.0f}", ""),
        (f"fit, {args.threads} threads (wall / CPU s)", f"{train[0]:.0f} / {train[1]:.0f}", ""),
        ("epochs run (best)", f"{training['epochs_run']} ({training['best_epoch']})", ""),
        ("train command total (wall / CPU s)", f"{prep[0] + train[0]:.0f} / {prep[1] + train[1]:.0f}", "<= 600"),
        ("test: sessions / prefixes (unseen seed, all sessions)", f"{len(test)} / {len(y)}", ">= 100k sessions"),
        ("ROC AUC GRU / optimal / gap, all prefixes", gap(), "gap <= 0.01"),
        ("  users' first sessions", gap(first), ""),
        ("  returning sessions", gap(~first), ""),
    ] + [
        (f"  after {kk} events", gap(k == kk), "") for kk in (1, 3, 5, 10)
    ] + [
        ("ECE (15 equal-mass bins)", f"{m['ece']:.4f}", "<= 0.02"),
        ("Brier / PR AUC", f"{m['brier']:.4f} / {m['pr_auc']:.4f}", ""),
        ("test simulate + featurize + score (wall / CPU s)", f"{evaluate_s[0]:.0f} / {evaluate_s[1]:.0f}", ""),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"\n{'case':{w}s}  {'figure':28s}  target")
    for case, fig, target in rows:
        print(f"{case:{w}s}  {fig:28s}  {target}")


if __name__ == "__main__":
    main()
