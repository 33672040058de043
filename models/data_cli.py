"""`intentstream simulate`: write simulated clicks as ClickEvent JSON lines.

Each line is the wire form of a ClickEvent (schemas.codec.click_to_dict) plus "_p_optimal", the simulator's
Bayes-optimal P(purchase later in this session | events so far); decoders ignore the extra field.

    intentstream simulate --users 20000 --days 14 --seed 1 --out events.jsonl
    intentstream simulate --users 30000 --seed 1 --out /tmp/sim.jsonl --stats   # + optimal ROC AUC

--stats also reports the ROC AUC of the optimal score over all pre-purchase prefixes (the label of a prefix is
1 when its session reaches a purchase later), overall and after 1..10 events.
"""
from __future__ import annotations

import argparse
import logging
import time

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("simulate", help="generate simulated clicks (JSONL) with Bayes-optimal scores",
                              description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=10_000, help="number of users (default 10000)")
    p.add_argument("--days", type=int, default=14, help="days of activity (default 14)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same file")
    p.add_argument("--user-effect", type=float, default=1.0,
                   help="how much a user's hidden propensity class shifts their intents (0 = none)")
    p.add_argument("--device-effect", type=float, default=1.0,
                   help="how much the device depends on the intent (0 = not at all)")
    p.add_argument("--out", required=True, help="output file (.jsonl)")
    p.add_argument("--stats", action="store_true", help="also print the optimal score's ROC AUC on prefixes")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    import orjson
    from tqdm import tqdm

    from models.simulator import SimConfig, Simulator
    from schemas.codec import click_to_dict

    cfg = SimConfig(n_users=args.users, n_days=args.days, seed=args.seed,
                    user_effect=args.user_effect, device_effect=args.device_effect)
    sim = Simulator(cfg)
    t0 = time.perf_counter()
    n_events = n_purchases = 0
    seen: list[tuple[str, str, float]] = []  # (session, type, p) for --stats
    with open(args.out, "wb") as f, tqdm(total=sim.n_sessions, desc="simulate", unit="session",
                                         mininterval=0.5) as bar:
        for ev, p in sim.events():
            d = click_to_dict(ev)
            d["_p_optimal"] = p
            f.write(orjson.dumps(d) + b"\n")
            n_events += 1
            n_purchases += ev.type == "purchase"
            if args.stats:
                seen.append((ev.session_id, ev.type, p))
            if ev.event_id.endswith("-0"):  # the first event of a session
                bar.update(1)
    dt = time.perf_counter() - t0
    print(f"{n_events} events, {sim.n_sessions} sessions, {n_purchases} purchases "
          f"({n_purchases / max(sim.n_sessions, 1):.1%} of sessions) -> {args.out} "
          f"in {dt:.1f}s ({n_events / max(dt, 1e-9):,.0f} events/s)")
    if args.stats:
        print_optimal_stats(seen)
    return 0


def prefix_labels(seen: list[tuple[str, str, float]]):
    """Pre-purchase prefixes of each session: (p, label, position), label 1 when a purchase follows."""
    import numpy as np

    sessions: dict[str, list[tuple[str, float]]] = {}
    for sid, etype, p in seen:
        sessions.setdefault(sid, []).append((etype, p))
    ps, ys, pos = [], [], []
    for evs in sessions.values():
        types = [t for t, _ in evs]
        label = "purchase" in types
        cut = types.index("purchase") if label else len(types)
        ps.extend(p for _, p in evs[:cut])
        ys.extend([int(label)] * cut)
        pos.extend(range(cut))
    return np.array(ps), np.array(ys), np.array(pos)


def print_optimal_stats(seen: list[tuple[str, str, float]]) -> None:
    from sklearn.metrics import roc_auc_score

    p, y, pos = prefix_labels(seen)
    print(f"prefixes {len(p)}  positive rate {y.mean():.4f}  mean optimal p {p.mean():.4f}")
    if not 0 < y.sum() < len(y):
        print("optimal ROC AUC: n/a (needs prefixes with and without a later purchase)")
        return
    print(f"optimal ROC AUC (all pre-purchase prefixes): {roc_auc_score(y, p):.4f}")
    for k in range(10):
        m = pos == k
        if m.any() and 0 < y[m].mean() < 1:
            print(f"  after {k + 1:2d} events: n {int(m.sum()):7d}  AUC {roc_auc_score(y[m], p[m]):.4f}")
