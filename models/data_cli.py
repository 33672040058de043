"""`intentstream simulate`: write simulated clicks as ClickEvent JSON lines.

Each line is the wire form of a ClickEvent (schemas.codec.click_to_dict) plus "_p_optimal", the simulator's
Bayes-optimal P(purchase later in this session | events so far); decoders ignore the extra field.

    intentstream simulate --users 20000 --days 14 --seed 1 --out events.jsonl
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
    with open(args.out, "wb") as f, tqdm(total=sim.n_sessions, desc="simulate", unit="session",
                                         mininterval=0.5) as bar:
        for ev, p in sim.events():
            d = click_to_dict(ev)
            d["_p_optimal"] = p
            f.write(orjson.dumps(d) + b"\n")
            n_events += 1
            n_purchases += ev.type == "purchase"
            if ev.event_id.endswith("-0"):  # the first event of a session
                bar.update(1)
    dt = time.perf_counter() - t0
    print(f"{n_events} events, {sim.n_sessions} sessions, {n_purchases} purchases "
          f"({n_purchases / max(sim.n_sessions, 1):.1%} of sessions) -> {args.out} "
          f"in {dt:.1f}s ({n_events / max(dt, 1e-9):,.0f} events/s)")
    return 0
