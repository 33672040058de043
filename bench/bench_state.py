"""Per-user state cost in pure Python: updates/s, encode/decode µs per record, bytes per user.

    .venv/bin/python bench/bench_state.py [--users 2000] [--days 14] [--rounds 3] [--hidden 64]

The stream comes from the simulator (events of all users in time order). Every user's state is brought to
what a worker holds: a GRU hidden state of --hidden floats on its session and the last 4 intents (as if each
click had been scored). Times are process CPU time, best of --rounds, so other load on a shared machine
inflates them less. "worst" records are synthetic: every ring bucket non-empty, K=32 recent clicks with all
fields, 4 intents with distinct strings, an explicit 36-char session id.
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from tqdm import tqdm

from models.ids import stable_hash
from models.session import RecentEvent, Session
from models.simulator import SimConfig, simulate
from models.state import RecentIntent, UserState
from models.windows import RollingWindows
from schemas.events import EVENT_TYPES, N_EVENT_TYPES

USERS = 2_000
DAYS = 14
ROUNDS = 3
HIDDEN = 64
PARTITIONS = 12
TARGET_BYTES = 2048

log = logging.getLogger("bench_state")


def cpu_best(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def run_stream(events, sources) -> dict[str, UserState]:
    states: dict[str, UserState] = {}
    for i, ev in enumerate(events):
        st = states.get(ev.user_id)
        if st is None:
            st = states[ev.user_id] = UserState.new(ev.user_id)
        st.apply(ev, sources[i], i)
    return states


def dress_like_worker(states: dict[str, UserState], hidden: int) -> None:
    """Add what scoring would have stored: hidden state and the last 4 intents (realistic strings)."""
    rng = np.random.default_rng(0)
    for st in states.values():
        st.session.hidden = rng.standard_normal(hidden).astype(np.float32)
        st.session.hidden_version = "gru-20240101-abcdef12"
        src = next(iter(st.applied))
        for k in range(4):
            st.remember_intent(RecentIntent(src, st.applied[src] - 3 + k, float(rng.random()), 1_704_067_200_000 + k,
                                            float(rng.random() * 5), st.session.n_events, st.session.cart_value,
                                            tuple(int(x) for x in rng.integers(0, 5, N_EVENT_TYPES)),
                                            "gru-20240101-abcdef12"))


def worst_case(hidden: int) -> UserState:
    st = UserState.new("user-0123456789abcdef")
    w = RollingWindows()
    now = 1_704_067_200_000 + 7 * 86_400_000
    # every bucket of every ring, all 10 values non-empty, counts and sums well beyond a real user
    for ts in range(now - 7 * 86_400_000 + 1, now + 1, 300_000):
        for ti in range(N_EVENT_TYPES):
            for _ in range(3 if ti < 2 else 1):
                w.add(ts, ti, cart_value_added=1234.56 if ti == 3 else 0.0, purchase_amount=999.99 if ti == 7 else 0.0)
    st.windows = w
    recent = [RecentEvent(now - 1_000_000 + 31_000 * k, k % N_EVENT_TYPES, stable_hash(f"item{k}"),
                          stable_hash(f"cat{k}"), 1234.5, 3) for k in range(32)]
    st.session = Session("0b7e9c4a-5d61-4f0e-8a1e-6b2f3c9d8e7f", now - 1_000_000, now, 5000, 98765.43,
                         np.random.default_rng(1).standard_normal(hidden).astype(np.float32),
                         "gru-20240101-abcdef12", recent)
    st.applied = {"clickstream/11": 123_456_789}
    for k in range(4):
        st.remember_intent(RecentIntent(f"clickstream/{k}", 123_456_789 - k, 0.123456789, now + k, 3.25, 5000,
                                        98765.43, (300, 300, 100, 100, 100, 100, 100, 100), f"gru-2024010{k}-abcdef12"))
    st.applied.update({f"clickstream/{k}": 123_456_789 - k for k in range(4)})
    return st


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=USERS)
    ap.add_argument("--days", type=int, default=DAYS)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--hidden", type=int, default=HIDDEN)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    events = [ev for ev, _ in tqdm(simulate(SimConfig(n_users=args.users, n_days=args.days, seed=0)),
                                   desc="simulate", unit="ev", leave=False)]
    sources = [f"clickstream/{stable_hash(ev.user_id) % PARTITIONS}" for ev in events]
    n = len(events)
    log.info("%d events, %d users", n, len({ev.user_id for ev in events}))

    t_apply = cpu_best(lambda: run_stream(events, sources), args.rounds)

    w = RollingWindows()
    adds = [(ev.ts, EVENT_TYPES.index(ev.type), 1.5 if ev.type == "add_to_cart" else 0.0) for ev in events]

    def windows_add():
        for ts, ti, cart in adds:
            w.add(ts, ti, cart)
    t_add = cpu_best(windows_add, args.rounds)
    head, past = w.max_ts, w.max_ts - 2 * 3_600_000
    t_feat = cpu_best(lambda: [w.features(head) for _ in range(n)], args.rounds)
    t_feat_past = cpu_best(lambda: [w.features(past) for _ in range(n)], args.rounds)

    states = run_stream(events, sources)
    dress_like_worker(states, args.hidden)
    records = {u: st.to_bytes() for u, st in states.items()}
    values = list(states.values())
    blobs = list(records.values())
    t_enc = cpu_best(lambda: [st.to_bytes() for st in values], args.rounds)
    t_dec = cpu_best(lambda: [UserState.from_bytes(b) for b in blobs], args.rounds)
    sizes = np.array([len(b) for b in blobs])
    worst = worst_case(args.hidden)
    worst_bytes = worst.to_bytes()
    assert UserState.from_bytes(worst_bytes) == worst
    t_enc_w = cpu_best(lambda: [worst.to_bytes() for _ in range(2000)], args.rounds) / 2000
    t_dec_w = cpu_best(lambda: [UserState.from_bytes(worst_bytes) for _ in range(2000)], args.rounds) / 2000

    rows = [
        ("UserState.apply (sim stream, 1 core)", f"{n / t_apply:,.0f} events/s ({1e6 * t_apply / n:.1f} µs)", "-"),
        ("RollingWindows.add (3 horizons)", f"{1e6 * t_add / n:.2f} µs", "a few µs"),
        ("RollingWindows.features at the head", f"{1e6 * t_feat / n:.2f} µs", "-"),
        ("RollingWindows.features 2 h back (late)", f"{1e6 * t_feat_past / n:.2f} µs", "-"),
        (f"encode, typical record (H={args.hidden})", f"{1e6 * t_enc / len(values):.1f} µs", "-"),
        (f"decode, typical record (H={args.hidden})", f"{1e6 * t_dec / len(values):.1f} µs", "-"),
        ("encode, worst record", f"{1e6 * t_enc_w:.1f} µs", "-"),
        ("decode, worst record", f"{1e6 * t_dec_w:.1f} µs", "-"),
        ("bytes/user median (p90, p99, max)",
         f"{np.median(sizes):.0f} ({np.percentile(sizes, 90):.0f}, {np.percentile(sizes, 99):.0f}, {sizes.max()})",
         f"<= {TARGET_BYTES}"),
        ("bytes/user worst (synthetic, all dense)", f"{len(worst_bytes)}", f"<= {TARGET_BYTES}"),
        ("  of which windows", f"{len(worst.windows.to_bytes())}", "-"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'figure':<34}  target")
    for case, figure, target in rows:
        print(f"{case:<{width}}  {figure:<34}  {target}")


if __name__ == "__main__":
    main()
