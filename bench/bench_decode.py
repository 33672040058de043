"""Click decode+validate throughput on one core, against bare orjson.loads of the same bytes.

    .venv/bin/python bench/bench_decode.py [--events 200000] [--rounds 3] [--bad-fraction 0.0]

Cases: `orjson.loads` (parse only, the floor), `decode_click` (parse + every check + ClickEvent), and, when
msgspec is installed, a typed msgspec Struct decode (parse + type/bound checks, without the id, ts and
printable-string normalization decode_click does) followed by building the same ClickEvent.
Each case's figure is the best of --rounds interleaved passes, timed in process CPU time (so other load on
a shared machine inflates it less); the process is pinned to one CPU where the OS allows it.
"""

import argparse
import logging
import os
import random
import time
from typing import Annotated

import orjson

from schemas.codec import (
    MAX_ID_CHARS,
    MAX_PRICE,
    MAX_QUANTITY,
    MAX_QUERY_CHARS,
    MAX_TS_MS,
    MIN_TS_MS,
    _new_click,
    decode_click,
    encode_click,
    parse_rfc3339_ms,
)
from schemas.events import EVENT_TYPE_INDEX, EVENT_TYPES, ClickEvent

EVENTS = 200_000
ROUNDS = 5
SEED = 7
BAD_FRACTION = 0.0
TARGET = 200_000  # events/s for decode_click (issue 3)

# Rough clickstream mix: browsing dominates, purchases are rare.
TYPE_WEIGHTS = {"page_view": 30, "product_view": 40, "search": 10, "add_to_cart": 8, "remove_from_cart": 2,
                "add_to_wishlist": 3, "begin_checkout": 4, "purchase": 3}
assert set(TYPE_WEIGHTS) == set(EVENT_TYPES)

log = logging.getLogger("bench_decode")


def make_events(n: int, seed: int, bad_fraction: float) -> list[bytes]:
    """Realistic encoded clicks: uuid-like event ids, numeric-looking user ids, optional fields by type."""
    rng = random.Random(seed)
    types, weights = zip(*TYPE_WEIGHTS.items())
    devices = ("desktop", "mobile", "tablet", "app-ios", "app-android")
    out = []
    ts = 1_718_000_000_000
    for i in range(n):
        etype = rng.choices(types, weights)[0]
        ts += rng.randint(0, 400)
        ev = ClickEvent(
            event_id=f"{rng.getrandbits(64):016x}-{i:08d}",
            user_id=f"u{rng.randint(1, 2_000_000)}",
            ts=ts,
            type=etype,
            session_id=f"s{rng.getrandbits(40):x}" if rng.random() < 0.7 else None,
            item_id=str(rng.randint(1, 5_000_000)) if etype not in ("page_view", "search") else None,
            category_id=f"c{rng.randint(1, 5000)}" if etype not in ("page_view", "search") else None,
            price=round(rng.lognormvariate(3, 1), 2) if etype not in ("page_view", "search") else None,
            quantity=rng.randint(1, 3) if etype in ("add_to_cart", "remove_from_cart", "purchase") else None,
            query=" ".join(rng.choice(("red", "running", "shoes", "phone", "case", "kids", "jacket"))
                           for _ in range(rng.randint(1, 4))) if etype == "search" else None,
            device=rng.choice(devices),
        )
        data = encode_click(ev)
        if rng.random() < bad_fraction:
            data = data.replace(b'"type":"', b'"type":"x', 1)  # unknown_event_type
        out.append(data)
    return out


def _seconds(fn, messages: list[bytes]) -> float:
    # CPU time of this process, not wall time: on a shared machine, time spent descheduled is not ours.
    t0 = time.process_time()
    for m in messages:
        fn(m)
    return time.process_time() - t0


def _msgspec_decoder():
    try:
        import msgspec
    except ImportError:
        return None
    Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)] | int

    class Click(msgspec.Struct):
        event_id: Id
        user_id: Id
        ts: int | str
        type: str
        session_id: Id | None = None
        item_id: Id | None = None
        category_id: Id | None = None
        price: Annotated[float, msgspec.Meta(ge=0, le=MAX_PRICE)] | None = None
        quantity: Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)] | None = None
        query: Annotated[str, msgspec.Meta(max_length=MAX_QUERY_CHARS)] | None = None
        device: str | None = None
        v: int = 1

    decoder = msgspec.json.Decoder(Click)

    def decode(data: bytes):
        try:
            c = decoder.decode(data)
        except msgspec.DecodeError as exc:  # ValidationError is a subclass
            return exc
        # Same (fast) ClickEvent construction as decode_click, so the case compares validation cost only.
        return _new_click(str(c.event_id), str(c.user_id), c.ts, c.type, c.session_id, c.item_id,
                          c.category_id, c.price, c.quantity, c.query, c.device)

    def decode_checked(data: bytes):
        # msgspec plus the checks it cannot express, to compare like with like on valid input
        # (mapping msgspec's error messages to our codes is not attempted: that cost is on the bad path only).
        try:
            c = decoder.decode(data)
        except msgspec.DecodeError as exc:
            return exc
        ids = [c.event_id, c.user_id, c.session_id, c.item_id, c.category_id]
        for i, x in enumerate(ids):
            if type(x) is str:
                if not x.isprintable():
                    return ValueError("id")
                if not x:
                    ids[i] = None
            elif type(x) is int:
                ids[i] = str(x)
        ts = c.ts if type(c.ts) is int else parse_rfc3339_ms(c.ts)
        if not MIN_TS_MS <= ts < MAX_TS_MS or c.type not in EVENT_TYPE_INDEX or c.v != 1:
            return ValueError("value")
        return _new_click(ids[0], ids[1], ts, c.type, ids[2], ids[3], ids[4], c.price, c.quantity,
                          c.query or None, c.device or None)

    return decode, decode_checked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--bad-fraction", type=float, default=BAD_FRACTION)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    messages = make_events(args.events, args.seed, args.bad_fraction)
    size = sum(map(len, messages)) / len(messages)
    ok = sum(isinstance(decode_click(m), ClickEvent) for m in messages)
    log.info("%d events, mean %.0f bytes, %d valid", len(messages), size, ok)

    cases = [("orjson.loads (parse only)", orjson.loads, None), ("decode_click (parse+validate)", decode_click, TARGET)]
    ms = _msgspec_decoder()
    if ms is not None:
        cases.append(("msgspec Struct + ClickEvent (fewer checks)", ms[0], None))
        cases.append(("msgspec Struct + our extra checks", ms[1], None))
    best = {name: float("inf") for name, _, _ in cases}
    for _ in range(args.rounds):  # interleaved, so a noisy moment hits every case alike
        for name, fn, _ in cases:
            best[name] = min(best[name], _seconds(fn, messages))
    rates = {name: len(messages) / seconds for name, seconds in best.items()}
    base = rates[cases[0][0]]
    print(f"{'case':<44} {'events/s':>12} {'vs loads':>9} {'target':>10}")
    for name, _, target in cases:
        print(f"{name:<44} {rates[name]:>12,.0f} {rates[name] / base:>9.2f} {target and f'{target:,}' or '-':>10}")


if __name__ == "__main__":
    main()
