"""Sessions: which clicks belong together, plus what scoring keeps per session (GRU state, last K events).

A new session starts when a click carries a `session_id` different from the current one, or, without
an explicit id, when it comes more than `gap_ms` after the newest click of the current session. Late
clicks (ts < last_ms) stay in the current session. Derived ids are `f"{user_id}:{start_ms}"`, so a
replay names sessions exactly as live did.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from models.ids import stable_hash
from schemas.events import EVENT_TYPE_INDEX, ClickEvent
from schemas.frozen import fast_constructor

SESSION_GAP_MS = 30 * 60 * 1000
RECENT_K = 32

_F32 = struct.Struct("<f")
# Item and category ids repeat a lot (popular items); a bounded cache skips most blake2b calls.
_hash = lru_cache(maxsize=1 << 16)(stable_hash)
ADD_TO_CART = EVENT_TYPE_INDEX["add_to_cart"]
REMOVE_FROM_CART = EVENT_TYPE_INDEX["remove_from_cart"]
PURCHASE = EVENT_TYPE_INDEX["purchase"]


def to_float32(x: float) -> float:
    """Round to the nearest float32 (as a Python float): what the state record stores for prices."""
    return _F32.unpack(_F32.pack(x))[0]


@dataclass(frozen=True, slots=True)
class RecentEvent:
    """Compact copy of a click, enough to recompute its model inputs."""

    ts_ms: int
    type_index: int
    item_hash: int  # models.ids.stable_hash(item_id), 32-bit, 0 = absent
    category_hash: int  # models.ids.stable_hash(category_id)
    price: float  # float32-rounded at creation (so live == decoded); 0.0 when absent
    quantity: int  # 1 when absent

    @classmethod
    def from_click(cls, event: ClickEvent) -> "RecentEvent":
        return new_recent_event(
            event.ts,
            EVENT_TYPE_INDEX[event.type],
            _hash(event.item_id),
            _hash(event.category_id),
            to_float32(event.price) if event.price else 0.0,
            1 if event.quantity is None else event.quantity,
        )


# RecentEvent(...), cheaper: one per click, and one per stored event each time a state record loads
new_recent_event = fast_constructor(RecentEvent, 0, 0, 0, 0, 0.0, 1)


@dataclass(eq=False)
class Session:
    session_id: str  # explicit id, else f"{user_id}:{start_ms}"
    start_ms: int  # ts of the click that opened the session (late clicks do not move it: the id is fixed)
    last_ms: int  # max event ts seen in the session
    n_events: int
    cart_value: float  # + price*qty on add_to_cart, - on remove_from_cart (floored at 0), 0 after purchase
    hidden: np.ndarray | None = None  # float32 (H,), GRU state after the last scored event
    hidden_version: str | None = None  # model version that produced `hidden`
    recent: list[RecentEvent] = field(default_factory=list)  # last RECENT_K events, oldest first

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Session):
            return NotImplemented
        if (self.hidden is None) != (other.hidden is None):
            return False
        if self.hidden is not None and not (
            self.hidden.dtype == other.hidden.dtype and np.array_equal(self.hidden, other.hidden)
        ):
            return False
        return (self.session_id, self.start_ms, self.last_ms, self.n_events, self.cart_value,
                self.hidden_version, self.recent) == (
            other.session_id, other.start_ms, other.last_ms, other.n_events, other.cart_value,
            other.hidden_version, other.recent)


def cart_delta(event: ClickEvent) -> float:
    """price * quantity (quantity defaults to 1, price to 0) in the event's own float64 precision."""
    if not event.price:
        return 0.0
    return event.price * (1 if event.quantity is None else event.quantity)


def sessionize(
    session: Session | None,
    user_id: str,
    event: ClickEvent,
    recent: RecentEvent,
    gap_ms: int = SESSION_GAP_MS,
    recent_k: int = RECENT_K,
) -> tuple[Session, bool, int | None]:
    """Apply one click: returns (session, new_session, prev_ts_ms). Mutates `session` when it continues."""
    ts = event.ts
    if session is None:
        new = True
    elif event.session_id is not None:
        new = event.session_id != session.session_id
    else:
        new = ts - session.last_ms > gap_ms
    if new:
        session = Session(event.session_id or f"{user_id}:{ts}", ts, ts, 0, 0.0)
        prev_ts = None
    else:
        prev_ts = session.recent[-1].ts_ms if session.recent else session.last_ms
        if ts > session.last_ms:
            session.last_ms = ts
    session.n_events += 1
    ti = recent.type_index
    if ti == ADD_TO_CART:
        session.cart_value += cart_delta(event)
    elif ti == REMOVE_FROM_CART:
        session.cart_value = max(0.0, session.cart_value - cart_delta(event))
    elif ti == PURCHASE:
        session.cart_value = 0.0
    session.recent.append(recent)
    if len(session.recent) > recent_k:
        del session.recent[: len(session.recent) - recent_k]
    return session, new, prev_ts
