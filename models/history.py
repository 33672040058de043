"""A user's lifetime history: a compact summary of every *finished* session, kept in the user state.

The rolling windows (models.windows) forget after 7 days, and the GRU sees only the current session, so
without this a model cannot tell a user's first visit from a return after a long pause, nor how the
user's earlier sessions went. What a session says about the user is mostly what kind of session it was
(did it add to cart, reach checkout, buy; which device; how fast the clicks came), so the summary counts
exactly that, session by session, from observable clicks only (it works the same on real data).

Two parts:
- `finished` (N_FINISHED floats): totals over the sessions before the current one. It changes only when a
  new session starts, and each change builds a new read-only array, so a `Step` can hold it as a snapshot.
- `current` (N_CURRENT floats): the running per-session counts of the current session, folded into
  `finished` when the next session starts (a new session is the only moment an observer knows the last
  one is over).

All values are float32-exact (counts are small integers; sums are rounded to float32 after every add),
so the state record (float32 columns) round-trips exactly and replay == live.
"""
from __future__ import annotations

import math
import struct

import numpy as np

from schemas.events import EVENT_TYPE_INDEX, EVENT_TYPES, N_EVENT_TYPES

# Device slots (none, desktop, mobile, tablet, app, other); features.CONTEXT_NAMES is built from them.
DEVICES: tuple[str, ...] = ("desktop", "mobile", "tablet", "app")
DEVICE_SLOTS: tuple[str, ...] = ("none",) + DEVICES + ("other",)
_DEVICE_INDEX = {d: i + 1 for i, d in enumerate(DEVICES)}

_ADD_TO_CART = EVENT_TYPE_INDEX["add_to_cart"]
_CHECKOUT = EVENT_TYPE_INDEX["begin_checkout"]
_PURCHASE = EVENT_TYPE_INDEX["purchase"]

# finished: totals over finished sessions
FINISHED_NAMES: tuple[str, ...] = (
    ("sessions", "sessions.purchase", "sessions.cart_no_purchase", "sessions.checkout")
    + tuple(f"events.{t}" for t in EVENT_TYPES)
    + tuple(f"sessions.device.{d}" for d in DEVICE_SLOTS)
    + ("gaps", "log_gap_sum", "cart_value_added", "purchase_amount")
)
N_FINISHED = len(FINISHED_NAMES)
_F_SESSIONS, _F_PURCHASE, _F_CART, _F_CHECKOUT = 0, 1, 2, 3
_F_EVENTS = 4
_F_DEVICE = _F_EVENTS + N_EVENT_TYPES
_F_GAPS = _F_DEVICE + len(DEVICE_SLOTS)
_F_LOG_GAP, _F_CART_VALUE, _F_PURCHASE_AMOUNT = _F_GAPS + 1, _F_GAPS + 2, _F_GAPS + 3

# current: the open session's running counts
CURRENT_NAMES: tuple[str, ...] = (
    tuple(f"events.{t}" for t in EVENT_TYPES)
    + ("device", "gaps", "log_gap_sum", "cart_value_added", "purchase_amount")
)
N_CURRENT = len(CURRENT_NAMES)
_C_DEVICE = N_EVENT_TYPES
_C_GAPS, _C_LOG_GAP, _C_CART_VALUE, _C_PURCHASE_AMOUNT = (N_EVENT_TYPES + 1, N_EVENT_TYPES + 2,
                                                            N_EVENT_TYPES + 3, N_EVENT_TYPES + 4)

# Which slots hold sums of floats; every other slot is a whole count (the state record packs those as ints).
FINISHED_FLOAT_SLOTS: tuple[int, ...] = (_F_LOG_GAP, _F_CART_VALUE, _F_PURCHASE_AMOUNT)
CURRENT_FLOAT_SLOTS: tuple[int, ...] = (_C_LOG_GAP, _C_CART_VALUE, _C_PURCHASE_AMOUNT)

_F32 = struct.Struct("<f")


def _f32(x: float) -> float:
    return _F32.unpack(_F32.pack(x))[0]


def device_index(device: str | None) -> int:
    """Slot of a device string in DEVICE_SLOTS: 0 none/absent, 1..4 known, 5 anything else."""
    if not device:
        return 0
    return _DEVICE_INDEX.get(device.lower(), len(DEVICE_SLOTS) - 1)


def _frozen(values) -> np.ndarray:
    a = np.array(values, dtype=np.float32)
    a.flags.writeable = False
    return a


EMPTY_FINISHED = _frozen([0.0] * N_FINISHED)


class UserHistory:
    """Lifetime summary of a user's sessions (see module docstring)."""

    __slots__ = ("finished", "current")

    def __init__(self, finished: np.ndarray | None = None, current: list[float] | None = None):
        self.finished: np.ndarray = EMPTY_FINISHED if finished is None else _frozen(finished)
        self.current: list[float] = [0.0] * N_CURRENT if current is None else [float(v) for v in current]
        if self.finished.shape != (N_FINISHED,) or len(self.current) != N_CURRENT:
            raise ValueError(f"history needs {N_FINISHED} finished and {N_CURRENT} current values")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserHistory):
            return NotImplemented
        return np.array_equal(self.finished, other.finished) and self.current == other.current

    def __repr__(self) -> str:
        return f"UserHistory(sessions={int(self.finished[_F_SESSIONS])}, current_events={self.current_events()})"

    def current_events(self) -> int:
        return int(sum(self.current[:N_EVENT_TYPES]))

    def is_empty(self) -> bool:
        return not self.finished.any() and not any(self.current)

    def close_session(self) -> None:
        """Fold the current session into `finished` (a new array) and start an empty current one."""
        c = self.current
        if not any(c[:N_EVENT_TYPES]):
            self.current = [0.0] * N_CURRENT
            return  # no session seen (a fresh user, or a record migrated mid-session without counts)
        f = self.finished.astype(np.float64)
        f[_F_SESSIONS] += 1
        bought = c[_PURCHASE] > 0
        f[_F_PURCHASE] += bought
        f[_F_CART] += (c[_ADD_TO_CART] > 0) and not bought
        f[_F_CHECKOUT] += c[_CHECKOUT] > 0
        f[_F_EVENTS:_F_EVENTS + N_EVENT_TYPES] += c[:N_EVENT_TYPES]
        f[_F_DEVICE + int(c[_C_DEVICE])] += 1
        f[_F_GAPS] += c[_C_GAPS]
        f[_F_LOG_GAP] += c[_C_LOG_GAP]
        f[_F_CART_VALUE] += c[_C_CART_VALUE]
        f[_F_PURCHASE_AMOUNT] += c[_C_PURCHASE_AMOUNT]
        self.finished = _frozen(f)
        self.current = [0.0] * N_CURRENT

    def add(self, type_index: int, ts_ms: int, prev_ts_ms: int | None, device: str | None,
            cart_value_added: float = 0.0, purchase_amount: float = 0.0) -> None:
        """Count one click of the current session (call close_session first when it opens a new one)."""
        c = self.current
        if not any(c[:N_EVENT_TYPES]):
            c[_C_DEVICE] = float(device_index(device))  # a session's device: its first click's
        c[type_index] += 1.0
        if prev_ts_ms is not None:
            c[_C_GAPS] += 1.0
            c[_C_LOG_GAP] = _f32(c[_C_LOG_GAP] + math.log1p(max(0, ts_ms - prev_ts_ms) / 1000.0))
        if cart_value_added:
            c[_C_CART_VALUE] = _f32(c[_C_CART_VALUE] + cart_value_added)
        if purchase_amount:
            c[_C_PURCHASE_AMOUNT] = _f32(c[_C_PURCHASE_AMOUNT] + purchase_amount)


# -- model inputs from `finished` (used by models.features) ---------------------------------------------

INPUT_NAMES: tuple[str, ...] = (
    ("life.log1p.sessions", "life.returning")
    + ("life.frac.purchase", "life.frac.cart_no_purchase", "life.frac.checkout")
    + ("life.log1p.sessions.purchase", "life.log1p.sessions.cart_no_purchase", "life.log1p.sessions.checkout")
    + tuple(f"life.log1p.events.{t}" for t in EVENT_TYPES)
    + ("life.log1p.events_per_session",)
    + tuple(f"life.frac.device.{d}" for d in DEVICE_SLOTS)
    + ("life.mean_log_gap", "life.log1p.cart_value_added", "life.log1p.purchase_amount")
)
N_INPUTS = len(INPUT_NAMES)
_IN = {name: i for i, name in enumerate(INPUT_NAMES)}  # input column by name
_IN_LOG1P_SCALARS = [_IN[n] for n in (  # the columns computed with math.log1p, one value at a time
    "life.log1p.sessions", "life.log1p.sessions.purchase", "life.log1p.sessions.cart_no_purchase",
    "life.log1p.sessions.checkout", "life.log1p.events_per_session", "life.log1p.cart_value_added",
    "life.log1p.purchase_amount")]
_IN_FRACTIONS = _IN["life.frac.purchase"]  # purchase, cart_no_purchase, checkout
_IN_EVENTS = _IN[f"life.log1p.events.{EVENT_TYPES[0]}"]  # N_EVENT_TYPES columns
_IN_DEVICES = _IN[f"life.frac.device.{DEVICE_SLOTS[0]}"]  # len(DEVICE_SLOTS) columns


def history_inputs(finished: np.ndarray | None) -> np.ndarray:
    """(N_INPUTS,) float32 head inputs from a `finished` summary (None or no sessions: all zeros)."""
    if finished is None:
        return np.zeros(N_INPUTS, dtype=np.float32)
    return history_inputs_rows(np.asarray(finished)[None])[0]


def history_inputs_rows(finished: np.ndarray) -> np.ndarray:
    """history_inputs of M summaries at once: (M, N_FINISHED) -> (M, N_INPUTS) float32.

    Each value is computed exactly as for one summary: the logs taken with math.log1p here go through
    math.log1p (numpy's log1p can differ in the last bit), the others through numpy."""
    out = np.zeros((len(finished), N_INPUTS), dtype=np.float32)
    f = np.asarray(finished, dtype=np.float64)
    some = np.flatnonzero(f[:, _F_SESSIONS] > 0)  # users without a finished session keep all zeros
    if not len(some):
        return out
    f = f[some]
    n = f[:, _F_SESSIONS, None]
    events = f[:, _F_EVENTS:_F_EVENTS + N_EVENT_TYPES]
    gaps = f[:, _F_GAPS]
    log1p = math.log1p
    scalars = [  # per row: the _IN_LOG1P_SCALARS columns
        [log1p(sessions), log1p(bought), log1p(carted), log1p(checkout), log1p(per_session),
         log1p(max(0.0, cart_value)), log1p(max(0.0, amount))]
        for sessions, bought, carted, checkout, per_session, cart_value, amount in zip(
            f[:, _F_SESSIONS].tolist(), f[:, _F_PURCHASE].tolist(), f[:, _F_CART].tolist(),
            f[:, _F_CHECKOUT].tolist(), (events.sum(axis=1) / n[:, 0]).tolist(), f[:, _F_CART_VALUE].tolist(),
            f[:, _F_PURCHASE_AMOUNT].tolist())
    ]
    vals = np.empty((len(f), N_INPUTS), dtype=np.float64)
    vals[:, _IN_LOG1P_SCALARS] = scalars
    vals[:, _IN["life.returning"]] = 1.0
    vals[:, _IN_FRACTIONS:_IN_FRACTIONS + 3] = f[:, [_F_PURCHASE, _F_CART, _F_CHECKOUT]] / n
    vals[:, _IN_EVENTS:_IN_EVENTS + N_EVENT_TYPES] = np.log1p(events)
    vals[:, _IN_DEVICES:_IN_DEVICES + len(DEVICE_SLOTS)] = f[:, _F_DEVICE:_F_DEVICE + len(DEVICE_SLOTS)] / n
    vals[:, _IN["life.mean_log_gap"]] = np.divide(f[:, _F_LOG_GAP], gaps, out=np.zeros(len(f)), where=gaps > 0)
    out[some] = vals
    return out
