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
single-element updates in pure Python (about 5x, see docs/BENCHMARKS.md).
"""
from __future__ import annotations

import hashlib
import sys
from array import array
from dataclasses import dataclass
from functools import lru_cache

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


@lru_cache(maxsize=64)
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
    if pos < len(data) and data[pos] < 0x80:  # most varints in a record are one byte
        return data[pos], pos + 1
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


_UNSIGNED = (("B", 1 << 8), ("H", 1 << 16), ("I", 1 << 32), ("Q", 1 << 64))
_SIGNED = (("b", 1 << 7), ("h", 1 << 15), ("i", 1 << 31), ("q", 1 << 63))
_BIG_ENDIAN = sys.byteorder == "big"


def put_array(out: bytearray, values: list[int], signed: bool = False) -> None:
    """A column of ints at the narrowest fixed width (one code byte + raw little-endian array).

    Bulk array packing is ~10x faster in pure Python than one varint per value; the caller knows the length.
    """
    if not values:
        return
    lo, hi = min(values), max(values)
    if not signed and lo >= 0 and hi < 256:  # the usual column (counts, types): one byte a value
        out.append(0)
        out += bytes(values)
        return
    for code, (typecode, limit) in enumerate(_SIGNED if signed else _UNSIGNED):
        if (-limit <= lo and hi < limit) if signed else (lo >= 0 and hi < limit):
            arr = array(typecode, values)
            if _BIG_ENDIAN:
                arr.byteswap()
            out.append(code)
            out += arr.tobytes()
            return
    raise ValueError(f"int column out of range: {lo}..{hi} (signed={signed})")


def get_array(data: bytes | memoryview, pos: int, n: int, signed: bool = False) -> tuple[list[int], int]:
    if n == 0:
        return [], pos
    if pos >= len(data) or data[pos] > 3:
        raise ValueError("corrupt int column")
    typecode = (_SIGNED if signed else _UNSIGNED)[data[pos]][0]
    arr = array(typecode)
    end = pos + 1 + n * arr.itemsize
    if end > len(data):
        raise ValueError("truncated int column")
    arr.frombytes(data[pos + 1:end])
    if _BIG_ENDIAN:
        arr.byteswap()
    return arr.tolist(), end


# ---- the rings --------------------------------------------------------------------------------------

class _Ring:
    """One horizon: `cells` is n buckets x 10 values (flat), `totals` the sum over all n buckets,
    `used` a bitmask of non-empty slots (every add counts one event, so non-empty == some count > 0)."""

    __slots__ = ("bucket_ms", "n", "head", "cells", "totals", "used")

    def __init__(self, horizon: Horizon) -> None:
        self.bucket_ms = horizon.bucket_ms
        self.n = horizon.n_buckets
        self.head = _NO_HEAD
        self.cells = [0] * (self.n * N_VALUES)
        self.totals = [0] * N_VALUES
        self.used = 0

    def advance(self, b: int) -> None:
        """Move the head forward to bucket b, clearing the slots of the buckets it passes over."""
        n = self.n
        if b - self.head >= n:
            if self.used:
                self.cells = [0] * (n * N_VALUES)
                self.totals = [0] * N_VALUES
                self.used = 0
        elif self.used:
            cells, totals = self.cells, self.totals
            for bb in range(self.head + 1, b + 1):
                slot = bb % n
                if self.used >> slot & 1:
                    s = slot * N_VALUES
                    for j, v in enumerate(cells[s:s + N_VALUES]):
                        totals[j] -= v
                    cells[s:s + N_VALUES] = _ZEROS
                    self.used ^= 1 << slot
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
        cells, used = self.cells, self.used
        if 2 * (hi - lo + 1) > n:
            # most of the ring is in range: start from the totals and take out the buckets that are not
            acc = list(self.totals)
            outside = list(range(head - n + 1, lo)) + list(range(hi + 1, head + 1))
            for b in outside:
                if used >> (b % n) & 1:
                    s = (b % n) * N_VALUES
                    acc = [a - v for a, v in zip(acc, cells[s:s + N_VALUES])]
            return acc
        acc = [0] * N_VALUES
        for b in range(lo, hi + 1):
            if used >> (b % n) & 1:
                s = (b % n) * N_VALUES
                acc = [a + v for a, v in zip(acc, cells[s:s + N_VALUES])]
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
            slot = b % r.n
            r.used |= 1 << slot
            s = slot * N_VALUES
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
            and all(a.head == b.head and a.used == b.used and a.cells == b.cells and a.totals == b.totals
                    for a, b in zip(self._rings, other._rings))
        )

    def __repr__(self) -> str:
        nonempty = sum(r.used.bit_count() for r in self._rings)
        return f"RollingWindows(horizons={[h.name for h in self.horizons]}, max_ts={self._max_ts}, buckets={nonempty})"

    # ---- encoding: sparse, only non-empty buckets, columnar --------------------------------------------
    # format byte, 2-byte horizons fingerprint, svarint(max_ts + 1) (0 = empty), then per ring:
    # occupancy bitmap of slots ((n+7)//8 bytes, bit s = slot s non-empty), and if any: the 8 counts of each
    # occupied slot (slot order) as one int column, a bitmap of non-zero sums (2 bits per occupied slot)
    # and an svarint (cents) per non-zero sum.

    def to_bytes(self) -> bytes:
        out = bytearray((_FORMAT,))
        out += horizons_fingerprint(self.horizons)
        if self._max_ts is None:
            out.append(0)
            return bytes(out)
        put_svarint(out, self._max_ts + 1 if self._max_ts >= 0 else self._max_ts)
        for r in self._rings:
            used = r.used
            out += used.to_bytes((r.n + 7) // 8, "little")
            if not used:
                continue
            cells = r.cells
            counts: list[int] = []
            sums: list[int] = []
            m = used
            while m:
                low = m & -m
                s = (low.bit_length() - 1) * N_VALUES
                counts += cells[s:s + N_EVENT_TYPES]
                sums.append(cells[s + CART_IDX])
                sums.append(cells[s + PURCHASE_IDX])
                m ^= low
            put_array(out, counts)
            sum_mask = 0
            for i, v in enumerate(sums):
                if v:
                    sum_mask |= 1 << i
            out += sum_mask.to_bytes((len(sums) + 7) // 8, "little")
            for v in sums:
                if v:
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
            nb = (r.n + 7) // 8
            if pos + nb > len(data):
                raise ValueError("rolling windows: truncated")
            used = int.from_bytes(data[pos:pos + nb], "little")
            pos += nb
            if used >> r.n:
                raise ValueError("rolling windows: corrupt occupancy bitmap")
            if not used:
                continue
            slots = []
            m = used
            while m:
                low = m & -m
                slots.append(low.bit_length() - 1)
                m ^= low
            counts, pos = get_array(data, pos, N_EVENT_TYPES * len(slots))
            nb = (2 * len(slots) + 7) // 8
            if pos + nb > len(data):
                raise ValueError("rolling windows: truncated")
            sum_mask = int.from_bytes(data[pos:pos + nb], "little")
            pos += nb
            cells, totals = r.cells, r.totals
            for i, slot in enumerate(slots):
                seg = counts[i * N_EVENT_TYPES:(i + 1) * N_EVENT_TYPES]
                if not any(seg):
                    raise ValueError("rolling windows: occupied bucket without events")
                s = slot * N_VALUES
                cells[s:s + N_EVENT_TYPES] = seg
                if sum_mask >> (2 * i) & 1:
                    cells[s + CART_IDX], pos = get_svarint(data, pos)
                    totals[CART_IDX] += cells[s + CART_IDX]
                if sum_mask >> (2 * i + 1) & 1:
                    cells[s + PURCHASE_IDX], pos = get_svarint(data, pos)
                    totals[PURCHASE_IDX] += cells[s + PURCHASE_IDX]
            for j in range(N_EVENT_TYPES):
                totals[j] = sum(counts[j::N_EVENT_TYPES])
            r.used = used
        return w, pos
