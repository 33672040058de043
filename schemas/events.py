"""Event contracts v1: the only shapes producers and consumers of intentstream ever see.

ClickEvent comes in on `clickstream`, IntentEvent goes out on `intents`, DeadLetter goes to
`clickstream.dlq`. All are plain frozen dataclasses (slots, no Faust import) so the pure core and
the offline tools can use them; `schemas.codec` puts them on the wire and `schemas.faust_codecs` registers
them as Faust codecs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

SCHEMA_VERSION = 1

# Order matters: the index of a type is its id in features, windows and compact encodings.
# Append new types at the end only (a new type is a new schema minor version).
EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "add_to_wishlist",
    "begin_checkout",
    "purchase",
)
EVENT_TYPE_INDEX: dict[str, int] = {name: i for i, name in enumerate(EVENT_TYPES)}
N_EVENT_TYPES = len(EVENT_TYPES)

INTENT_LEVELS: tuple[str, ...] = ("low", "medium", "high")


@dataclass(frozen=True, slots=True)
class ClickEvent:
    """One shopper action. Ids are normalized to str; `ts` is event time in epoch milliseconds."""

    event_id: str
    user_id: str
    ts: int
    type: str
    session_id: str | None = None
    item_id: str | None = None
    category_id: str | None = None
    price: float | None = None
    quantity: int | None = None
    query: str | None = None
    device: str | None = None

    @property
    def type_index(self) -> int:
        return EVENT_TYPE_INDEX[self.type]


@dataclass(frozen=True, slots=True)
class IntentEvent:
    """The live intent estimate after one click (one per valid ClickEvent)."""

    intent_id: str  # deterministic: f(event_id, user_id, model_version); see schemas.codec.make_intent_id
    user_id: str
    session_id: str
    event_id: str
    event_ts: int  # epoch ms of the triggering click
    p_purchase: float  # P(this session reaches a purchase after this event), in [0, 1]
    intent: str  # one of INTENT_LEVELS
    model_version: str
    session_events: int  # events in the session so far, this one included
    cart_value: float  # value currently in the session's cart
    recent_counts: dict[str, int] = field(default_factory=dict)  # event type -> count in the last hour
    scored_at: int = 0  # epoch ms when the score was computed
    latency_ms: float = 0.0  # scored_at minus the click's arrival at the worker
    v: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A click that could not be used, with everything needed to inspect and replay it."""

    error_code: str
    error_message: str
    original: bytes  # the exact bytes received (base64 on the wire)
    topic: str
    partition: int
    offset: int
    failed_at: int  # epoch ms
    key: bytes | None = None
    v: int = SCHEMA_VERSION
