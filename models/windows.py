"""Event-time rolling windows per user: counts per event type and money sums over several horizons.

Each horizon is a ring of `n = length_ms // bucket_ms` buckets indexed by the *absolute* bucket number
`b = ts // bucket_ms` (slot `b % n`), so an out-of-order event lands in the bucket of its own time and a
replay in any interleaving gives the same numbers as live. The ring's head is the newest bucket seen
(`max_ts // bucket_ms`); an event newer than the head advances it and clears the slots passed over; an
event older than `head - n + 1` no longer fits and does not count in that horizon.

Semantics (the brute-force reference in tests/unit/test_windows.py matches exactly), with
`B = max(b(now), b(max_ts))`: an event at `ts` counts in horizon h for a query at `now` iff
`B - n < b(ts) <= b(now)`. For `now >= max_ts` this is the plain "last n buckets up to now" rule of
api.md; for a query earlier than the newest event, buckets after b(now) are excluded and buckets that
already left the ring stay gone (a ring cannot remember them).

Money sums are kept as integer cents: integer addition is exact and order-independent, so running
totals never drift and out-of-order arrival cannot change a float rounding. Plain lists beat numpy for
single-element updates in pure Python (about 5x, see docs/benchmarks/state.md).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from schemas.events import EVENT_TYPES, N_EVENT_TYPES


@dataclass(frozen=True)
class Horizon:
    name: str  # "1h"
    length_ms: int  # 3_600_000
    bucket_ms: int  # 300_000 -> n_buckets = length_ms // bucket_ms

    def __post_init__(self) -> None:
        if self.bucket_ms <= 0 or self.length_ms <= 0 or self.length_ms % self.bucket_ms:
            raise ValueError(f"horizon {self.name}: length_ms must be a positive multiple of bucket_ms")

    @property
    def n_buckets(self) -> int:
        return self.length_ms // self.bucket_ms


DEFAULT_HORIZONS: tuple[Horizon, ...] = (
    Horizon("1h", 3_600_000, 300_000),
    Horizon("24h", 86_400_000, 3_600_000),
    Horizon("7d", 604_800_000, 86_400_000),
)
WINDOW_VALUES: tuple[str, ...] = EVENT_TYPES + ("cart_value_added", "purchase_amount")
N_VALUES = len(WINDOW_VALUES)  # 10 values per bucket
CART_IDX = N_EVENT_TYPES  # position of cart_value_added in a bucket
PURCHASE_IDX = N_EVENT_TYPES + 1

_ZEROS = (0,) * N_VALUES
_NO_HEAD = -(1 << 62)  # "ring empty": any real bucket is >= n ahead of it, so the first add resets
_FORMAT = 1  # RollingWindows.to_bytes layout version


def window_feature_names(horizons: tuple[Horizon, ...] = DEFAULT_HORIZONS) -> list[str]:
    """Names of RollingWindows.features() entries, horizon-major: ["1h.page_view", ..., "7d.purchase_amount"]."""
    return [f"{h.name}.{v}" for h in horizons for v in WINDOW_VALUES]


def to_cents(amount: float) -> int:
    """Money as integer cents (round half to even on the float64 product), the unit of stored sums."""
    return round(amount * 100)


def horizons_fingerprint(horizons: tuple[Horizon, ...]) -> bytes:
    """2 bytes identifying the bucket layout, so a record is never decoded under different horizons."""
    spec = ",".join(f"{h.length_ms}/{h.bucket_ms}" for h in horizons).encode()
    return hashlib.blake2b(spec, digest_size=2).digest()


# ---- varints (shared with models.state) ------------------------------------------------------------

def put_uvarint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError(f"uvarint cannot encode negative {value}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def put_svarint(out: bytearray, value: int) -> None:
    put_uvarint(out, (value << 1) if value >= 0 else ((-value << 1) - 1))  # zigzag


def get_uvarint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ValueError("varint too long")


def get_svarint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    z, pos = get_uvarint(data, pos)
    return (z >> 1) if not z & 1 else -((z + 1) >> 1), pos


# ---- the rings --------------------------------------------------------------------------------------

class _Ring:
    """One horizon: `cells` is n buckets x 10 values (flat), `totals` the sum over all n buckets."""

    __slots__ = ("bucket_ms", "n", "head", "cells", "totals")

    def __init__(self, horizon: Horizon) -> None:
        self.bucket_ms = horizon.bucket_ms
        self.n = horizon.n_buckets
        self.head = _NO_HEAD
        self.cells = [0] * (self.n * N_VALUES)
        self.totals = [0] * N_VALUES

    def advance(self, b: int) -> None:
        """Move the head forward to bucket b, clearing the slots of the buckets it passes over."""
        n = self.n
        if b - self.head >= n:
            self.cells = [0] * (n * N_VALUES)
            self.totals = [0] * N_VALUES
        else:
            cells, totals = self.cells, self.totals
            for bb in range(self.head + 1, b + 1):
                s = (bb % n) * N_VALUES
                seg = cells[s:s + N_VALUES]
                if any(seg):
                    for j, v in enumerate(seg):
                        totals[j] -= v
                    cells[s:s + N_VALUES] = _ZEROS
        self.head = b

    def window(self, now_ms: int) -> list[int] | tuple[int, ...]:
        """Raw values (counts, cents) for buckets in (max(b(now), head) - n, b(now)]."""
        bn = now_ms // self.bucket_ms
        head, n = self.head, self.n
        if bn == head:
            return self.totals  # the hot path: querying at the newest event's bucket
        lo = max(bn, head) - n + 1
        hi = min(bn, head)
        if lo > hi or head == _NO_HEAD:
            return _ZEROS
        cells = self.cells
        acc = [0] * N_VALUES
        for b in range(lo, hi + 1):
            s = (b % n) * N_VALUES
            seg = cells[s:s + N_VALUES]
            if any(seg):
                acc = [a + v for a, v in zip(acc, seg)]
        return acc


class RollingWindows:
    """Per-user rolling windows over `horizons`; see the module docstring for the exact semantics."""

    __slots__ = ("horizons", "_rings", "_max_ts")

    def __init__(self, horizons: tuple[Horizon, ...] = DEFAULT_HORIZONS) -> None:
        self.horizons = tuple(horizons)
        self._rings = [_Ring(h) for h in self.horizons]
        self._max_ts: int | None = None  # newest event time seen; every ring head derives from it

    @property
    def max_ts(self) -> int | None:
        return self._max_ts

    def add(self, ts_ms: int, type_index: int, cart_value_added: float = 0.0, purchase_amount: float = 0.0) -> None:
        cart_c = to_cents(cart_value_added) if cart_value_added else 0
        purch_c = to_cents(purchase_amount) if purchase_amount else 0
        if self._max_ts is None or ts_ms > self._max_ts:
            self._max_ts = ts_ms
        for r in self._rings:
            b = ts_ms // r.bucket_ms
            if b > r.head:
                r.advance(b)
            elif b <= r.head - r.n:
                continue  # older than this ring reaches: does not count here (may in a longer horizon)
            s = (b % r.n) * N_VALUES
            cells, totals = r.cells, r.totals
            cells[s + type_index] += 1
            totals[type_index] += 1
            if cart_c:
                cells[s + CART_IDX] += cart_c
                totals[CART_IDX] += cart_c
            if purch_c:
                cells[s + PURCHASE_IDX] += purch_c
                totals[PURCHASE_IDX] += purch_c

    def raw(self, now_ms: int) -> list[int]:
        """Integer values at now_ms (counts, money in cents), horizon-major; exact, for tests and tools."""
        out: list[int] = []
        for r in self._rings:
            out.extend(r.window(now_ms))
        return out

    def features(self, now_ms: int) -> np.ndarray:
        """float32 (len(horizons)*10,), horizon-major: counts per EVENT_TYPES, then the two sums in money units."""
        out: list[float] = []
        for r in self._rings:
            w = r.window(now_ms)
            out.extend(w[:N_EVENT_TYPES])
            out.append(w[CART_IDX] / 100)
            out.append(w[PURCHASE_IDX] / 100)
        return np.array(out, dtype=np.float32)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RollingWindows):
            return NotImplemented
        return (
            self.horizons == other.horizons
            and self._max_ts == other._max_ts
            and all(a.head == b.head and a.cells == b.cells and a.totals == b.totals
                    for a, b in zip(self._rings, other._rings))
        )

    def __repr__(self) -> str:
        nonempty = sum(1 for r in self._rings for i in range(r.n) if any(r.cells[i * N_VALUES:(i + 1) * N_VALUES]))
        return f"RollingWindows(horizons={[h.name for h in self.horizons]}, max_ts={self._max_ts}, buckets={nonempty})"

    # ---- encoding: sparse, only non-empty buckets ----------------------------------------------------
    # format byte, 2-byte horizons fingerprint, svarint(max_ts + 1) (0 = empty), then per ring:
    # uvarint(#non-empty buckets), each: uvarint(head - b), uvarint(10-bit mask of non-zero values),
    # then per set bit a uvarint count (types) or svarint cents (sums).

    def to_bytes(self) -> bytes:
        out = bytearray((_FORMAT,))
        out += horizons_fingerprint(self.horizons)
        if self._max_ts is None:
            put_svarint(out, 0)
            return bytes(out)
        put_svarint(out, self._max_ts + 1 if self._max_ts >= 0 else self._max_ts)
        for r in self._rings:
            n, cells = r.n, r.cells
            entries = []
            for age in range(n):
                s = ((r.head - age) % n) * N_VALUES
                seg = cells[s:s + N_VALUES]
                if any(seg):
                    entries.append((age, seg))
            put_uvarint(out, len(entries))
            for age, seg in entries:
                put_uvarint(out, age)
                mask = 0
                for j, v in enumerate(seg):
                    if v:
                        mask |= 1 << j
                put_uvarint(out, mask)
                for j, v in enumerate(seg):
                    if v:
                        if j < N_EVENT_TYPES:
                            put_uvarint(out, v)
                        else:
                            put_svarint(out, v)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes, horizons: tuple[Horizon, ...] = DEFAULT_HORIZONS) -> "RollingWindows":
        w, pos = cls.decode_from(data, 0, horizons)
        if pos != len(data):
            raise ValueError(f"rolling windows: {len(data) - pos} trailing bytes")
        return w

    @classmethod
    def decode_from(cls, data: bytes | memoryview, pos: int,
                    horizons: tuple[Horizon, ...] = DEFAULT_HORIZONS) -> tuple["RollingWindows", int]:
        """Decode starting at `pos`; returns the windows and the position after them."""
        if pos >= len(data):
            raise ValueError("rolling windows: empty record")
        if data[pos] != _FORMAT:
            raise ValueError(f"rolling windows: unknown format {data[pos]} (this code reads format {_FORMAT})")
        fp = bytes(data[pos + 1:pos + 3])
        if fp != horizons_fingerprint(horizons):
            raise ValueError("rolling windows: record was written with different horizons "
                             f"than {[h.name for h in horizons]}; it cannot be reinterpreted")
        w = cls(horizons)
        enc, pos = get_svarint(data, pos + 3)
        if enc == 0:
            return w, pos
        w._max_ts = enc - 1 if enc > 0 else enc
        for r in w._rings:
            r.head = w._max_ts // r.bucket_ms
            count, pos = get_uvarint(data, pos)
            for _ in range(count):
                age, pos = get_uvarint(data, pos)
                mask, pos = get_uvarint(data, pos)
                if age >= r.n or mask >= 1 << N_VALUES:
                    raise ValueError("rolling windows: corrupt bucket entry")
                s = ((r.head - age) % r.n) * N_VALUES
                for j in range(N_VALUES):
                    if mask >> j & 1:
                        if j < N_EVENT_TYPES:
                            v, pos = get_uvarint(data, pos)
                        else:
                            v, pos = get_svarint(data, pos)
                        r.cells[s + j] = v
                        r.totals[j] += v
        return w, pos
