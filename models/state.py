"""The per-user state record: rolling windows + current session + lifetime history + applied offsets +
last emitted intents.

`UserState.apply` is the only way a click changes state; it refuses an offset that was already applied
(callers check `is_applied` first and re-emit the remembered intent instead), so a re-delivered click
can never count twice. `to_bytes`/`from_bytes` give a compact, versioned binary record (the value of
the Faust `users` table); see the `record layout` comments for the layouts and `_DECODERS` for how
older versions load.
"""
from __future__ import annotations

import logging
import operator
import struct
import sys
import zlib
from array import array
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from models.history import CURRENT_FLOAT_SLOTS, FINISHED_FLOAT_SLOTS, N_CURRENT, N_FINISHED, UserHistory
from models.session import (
    ADD_TO_CART,
    PURCHASE,
    RECENT_K,
    SESSION_GAP_MS,
    RecentEvent,
    Session,
    cart_delta,
    new_recent_event,
    sessionize,
)
from models.windows import (
    DEFAULT_HORIZONS,
    Horizon,
    RollingWindows,
    get_array,
    get_svarint,
    get_uvarint,
    put_array,
    put_svarint,
    put_uvarint,
)
from schemas.events import ClickEvent
from schemas.frozen import fast_constructor

log = logging.getLogger(__name__)

MAGIC = b"iS"  # first bytes of every user state record
# The layouts to_bytes writes (v2 = v1 + lifetime history, v3 = v2 with columnar intents, v4 = v3 with each
# intent's counts as the change from the intent before): v3 within the budget; v4, deflated, over it.
VERSION = 3
DEFLATED_VERSION = 4
MAX_INTENTS = 4
# The version byte's high bit: the layout's body (all after the 3-byte header) is zlib-deflated. Written only
# for records over the 2 KiB budget (DESIGN §7), and only when that makes them smaller.
DEFLATED = 0x80
BUDGET_BYTES = 2048

_F64 = struct.Struct("<d")


@dataclass(frozen=True)
class StateConfig:
    """What shapes a state record without being stored in it (same for every user of a deployment)."""

    horizons: tuple[Horizon, ...] = DEFAULT_HORIZONS
    session_gap_ms: int = SESSION_GAP_MS
    recent_k: int = RECENT_K
    max_intents: int = MAX_INTENTS

    def __post_init__(self) -> None:
        if self.recent_k < 1 or self.max_intents < 1:
            raise ValueError("recent_k and max_intents must be >= 1")


DEFAULT_CONFIG = StateConfig()


@dataclass(frozen=True, slots=True)
class RecentIntent:
    """Enough to re-emit a byte-identical IntentEvent for a re-delivered click."""

    source: str  # "topic/partition"
    offset: int
    p_purchase: float  # exact float64
    scored_at: int
    latency_ms: float
    session_events: int
    cart_value: float
    recent_counts: tuple[int, ...]  # per EVENT_TYPES, last hour
    model_version: str


@dataclass(frozen=True, slots=True)
class Step:
    """What applying one click produced; input to featurization."""

    event: ClickEvent
    session: Session  # the (possibly new) session after the event; the live object, not a snapshot
    new_session: bool
    position: int  # 0-based index of this event in its session
    prev_ts_ms: int | None  # ts of the previous event in this session (None for the first)
    recent_event: RecentEvent
    window_features: np.ndarray  # float32 RollingWindows.features(event.ts) after adding this event
    # float32 (N_FINISHED,) read-only summary of the user's sessions before this one (models.history);
    # None only for Steps built by hand (featurization then sees no history)
    history: np.ndarray | None = None


# Cheaper constructors (schemas.frozen) for the records built once per click and per loaded intent
new_recent_intent = fast_constructor(RecentIntent, "t/0", 0, 0.5, 0, 0.0, 1, 0.0, (), "m")
_new_step = fast_constructor(Step, None, None, False, 0, None, None, None)


@dataclass
class UserState:
    user_id: str
    windows: RollingWindows
    session: Session | None = None
    applied: dict[str, int] = field(default_factory=dict)  # "topic/partition" -> last applied offset
    recent_intents: list[RecentIntent] = field(default_factory=list)  # newest last, at most max_intents
    history: UserHistory = field(default_factory=UserHistory)  # lifetime summary of finished sessions
    config: StateConfig = field(default=DEFAULT_CONFIG, compare=False, repr=False)

    @classmethod
    def new(cls, user_id: str, config: StateConfig = DEFAULT_CONFIG) -> "UserState":
        return cls(user_id, RollingWindows(config.horizons), config=config)

    def is_applied(self, source: str, offset: int) -> bool:
        last = self.applied.get(source)
        return last is not None and offset <= last

    def apply(self, event: ClickEvent, source: str | None = None, offset: int | None = None) -> Step:
        """Apply one click. With (source, offset), records the offset and refuses one already applied."""
        if (source is None) != (offset is None):
            raise ValueError("apply: give both source and offset, or neither")
        if source is not None and self.is_applied(source, offset):
            raise ValueError(f"apply: offset {offset} of {source} already applied to user {self.user_id!r} "
                             f"(last {self.applied[source]}); check is_applied() and re-emit instead")
        if event.user_id != self.user_id:
            raise ValueError(f"apply: event of user {event.user_id!r} given to state of {self.user_id!r}")
        recent = RecentEvent.from_click(event)
        ti = recent.type_index
        added = bought = 0.0
        if ti == ADD_TO_CART:
            added = cart_delta(event)
            self.windows.add(event.ts, ti, cart_value_added=added)
        elif ti == PURCHASE:
            bought = cart_delta(event)
            self.windows.add(event.ts, ti, purchase_amount=bought)
        else:
            self.windows.add(event.ts, ti)
        cfg = self.config
        session, new, prev_ts = sessionize(self.session, self.user_id, event, recent, cfg.session_gap_ms, cfg.recent_k)
        self.session = session
        if new:
            self.history.close_session()  # the previous session is over: fold it into the lifetime summary
        self.history.add(ti, event.ts, prev_ts, event.device, added, bought)
        if source is not None:
            self.applied[source] = offset
        return _new_step(event, session, new, session.n_events - 1, prev_ts, recent,
                         self.windows.features(event.ts), self.history.finished)

    def remember_intent(self, intent: RecentIntent) -> None:
        self.recent_intents.append(intent)
        if len(self.recent_intents) > self.config.max_intents:
            del self.recent_intents[: len(self.recent_intents) - self.config.max_intents]

    def find_intent(self, source: str, offset: int) -> RecentIntent | None:
        """The remembered intent for a re-delivered click, if it is still among the last few."""
        for intent in reversed(self.recent_intents):
            if intent.offset == offset and intent.source == source:
                return intent
        return None

    def to_bytes(self) -> bytes:
        out = bytearray(MAGIC)
        out.append(VERSION)
        head_end = _encode_v3(self, out)
        if len(out) > BUDGET_BYTES:
            # Users with dozens of clicks still in delivery (~1% of a saturated worker's writes). Their intents'
            # columns deflate to ~2/3, the counts far more when written as changes (v4), which brought every
            # such record of bench/bench_state_in_flight.py under the budget, at max_batch 4096 too. Below it,
            # the CPU is better spent elsewhere: v4 takes 15-25% longer to encode and decode than v3.
            v4 = out[3:head_end]  # the head is the same, encoded once
            _encode_tail(self, v4, count_deltas=True)
            body = zlib.compress(v4, 6)
            if len(body) + 3 < len(out):
                return MAGIC + bytes((DEFLATED_VERSION | DEFLATED,)) + body
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes, config: StateConfig = DEFAULT_CONFIG) -> "UserState":
        if len(data) < 3 or data[:2] != MAGIC:
            raise ValueError(f"not a user state record (expected magic {MAGIC!r}, got {bytes(data[:2])!r})")
        view, pos, version = memoryview(data), 3, data[2]
        if version & DEFLATED:
            version &= ~DEFLATED
            try:
                view, pos = memoryview(zlib.decompress(view[3:])), 0
            except zlib.error as exc:
                raise ValueError(f"user state record: its deflated body does not inflate ({exc})") from None
        decoder = _DECODERS.get(version)
        if decoder is None:
            if version > max(_DECODERS):
                raise ValueError(f"user state record version {version} is newer than this code, which reads "
                                 f"versions {sorted(_DECODERS)}; upgrade the worker before reading this state")
            raise ValueError(f"user state record version {version} is no longer readable "
                             f"(this code reads versions {sorted(_DECODERS)})")
        state = decoder(view, pos, config)
        if version < VERSION:
            log.info("migrated user state of %r from record version %d to %d", state.user_id, version, VERSION)
        return state


# ---- record layout v1 ------------------------------------------------------------------------------
# Columns of fixed-width ints (models.windows.put_array: a width code byte + a little-endian array) pack
# far faster in pure Python than one varint per value, and the record is re-encoded on every batch write.
#
# "iS" 0x01
# str user_id                                  (str = uvarint length + UTF-8)
# RollingWindows record                        (self-delimiting, see models.windows)
# uvarint #applied, each: str source, uvarint offset
# u8 flags: 1 session, 2 explicit session id, 4 hidden, 8 hidden_version
# if session: [str session_id], svarint start_ms, svarint last_ms - start_ms, uvarint n_events,
#   f64 cart_value, [uvarint H, H x f32 hidden], [str hidden_version], uvarint #recent (n), and if n:
#   column ts - previous ts (start_ms for the first), column type_index, u8 columns present
#   (1 item, 2 category, 4 price, 8 quantity; a column is left out when it is all 0 / all 1 for quantity),
#   [column item_hash], [column category_hash], [n x f32 price], [signed column quantity]
# uvarint #strings, each str (intent sources and model versions, deduplicated)
# uvarint #intents, each: u64 offset, i64 scored_at, f64 p_purchase, f64 latency_ms, f64 cart_value,
#   u32 session_events, uvarint source idx, uvarint model idx, uvarint #counts, column counts

_HAS_SESSION, _EXPLICIT_ID, _HAS_HIDDEN, _HAS_HIDDEN_VERSION = 1, 2, 4, 8
_ITEMS, _CATEGORIES, _PRICES, _QUANTITIES = 1, 2, 4, 8
_INTENT = struct.Struct("<QqdddI")


def _put_str(out: bytearray, s: str) -> None:
    b = s.encode("utf-8")
    put_uvarint(out, len(b))
    out += b


def _get_str(data: memoryview, pos: int) -> tuple[str, int]:
    n, pos = get_uvarint(data, pos)
    if pos + n > len(data):
        raise ValueError("truncated string")
    return str(data[pos:pos + n], "utf-8"), pos + n


def _put_floats(out: bytearray, values: list[float], typecode: str = "f") -> None:
    arr = array(typecode, values)
    if sys.byteorder == "big":
        arr.byteswap()
    out += arr.tobytes()


def _get_floats(data: memoryview, pos: int, n: int, typecode: str = "f") -> tuple[list[float], int]:
    arr = array(typecode)
    end = pos + arr.itemsize * n
    if end > len(data):
        raise ValueError("truncated float column")
    arr.frombytes(data[pos:end])
    if sys.byteorder == "big":
        arr.byteswap()
    return arr.tolist(), end


_put_f32s, _get_f32s = partial(_put_floats, typecode="f"), partial(_get_floats, typecode="f")
_put_f64s, _get_f64s = partial(_put_floats, typecode="d"), partial(_get_floats, typecode="d")


def _get_strs(data: memoryview, pos: int) -> tuple[list[str], int]:
    n, pos = get_uvarint(data, pos)
    strings = []
    for _ in range(n):
        text, pos = _get_str(data, pos)
        strings.append(text)
    return strings, pos


def _encode_head(state: UserState, out: bytearray) -> None:
    """Every field before the intents (the same in v1 through v4)."""
    _put_str(out, state.user_id)
    out += state.windows.to_bytes()
    put_uvarint(out, len(state.applied))
    for source, offset in state.applied.items():
        _put_str(out, source)
        put_uvarint(out, offset)

    s = state.session
    flags = 0
    if s is not None:
        flags |= _HAS_SESSION
        if s.session_id != f"{state.user_id}:{s.start_ms}":
            flags |= _EXPLICIT_ID  # derived ids are rebuilt on decode, saving ~20 bytes
        if s.hidden is not None:
            if s.hidden.dtype != np.float32 or s.hidden.ndim != 1:
                raise ValueError(f"session hidden state must be float32 (H,), got {s.hidden.dtype} {s.hidden.shape}")
            flags |= _HAS_HIDDEN
        if s.hidden_version is not None:
            flags |= _HAS_HIDDEN_VERSION
    out.append(flags)
    if s is not None:
        if flags & _EXPLICIT_ID:
            _put_str(out, s.session_id)
        put_svarint(out, s.start_ms)
        put_svarint(out, s.last_ms - s.start_ms)
        put_uvarint(out, s.n_events)
        out += _F64.pack(s.cart_value)
        if flags & _HAS_HIDDEN:
            put_uvarint(out, s.hidden.shape[0])
            out += s.hidden.astype("<f4", copy=False).tobytes()
        if flags & _HAS_HIDDEN_VERSION:
            _put_str(out, s.hidden_version)
        recent = s.recent
        put_uvarint(out, len(recent))
        if recent:
            ts = [r.ts_ms for r in recent]
            put_array(out, [b - a for a, b in zip([s.start_ms] + ts, ts)], signed=True)
            put_array(out, [r.type_index for r in recent])
            items = [r.item_hash for r in recent]
            cats = [r.category_hash for r in recent]
            prices = [r.price for r in recent]
            qtys = [r.quantity for r in recent]
            present = ((_ITEMS if any(items) else 0) | (_CATEGORIES if any(cats) else 0)
                       | (_PRICES if any(prices) else 0) | (_QUANTITIES if qtys.count(1) != len(qtys) else 0))
            out.append(present)
            if present & _ITEMS:
                put_array(out, items)
            if present & _CATEGORIES:
                put_array(out, cats)
            if present & _PRICES:
                _put_f32s(out, prices)
            if present & _QUANTITIES:
                put_array(out, qtys, signed=True)


def _decode_intents_v1(data: memoryview, pos: int, strings: list[str]) -> tuple[list[RecentIntent], int]:
    n, pos = get_uvarint(data, pos)
    intents = []
    for _ in range(n):
        offset, scored_at, p, latency, cart_value, session_events = _INTENT.unpack_from(data, pos)
        src, pos = get_uvarint(data, pos + _INTENT.size)
        model, pos = get_uvarint(data, pos)
        k, pos = get_uvarint(data, pos)
        counts, pos = get_array(data, pos, k)
        intents.append(new_recent_intent(strings[src], offset, p, scored_at, latency, session_events,
                                         cart_value, tuple(counts), strings[model]))
    return intents, pos


def _decode_v1_body(data: memoryview, pos: int, config: StateConfig,
                    read_intents=_decode_intents_v1) -> tuple[UserState, int]:
    """The v1 fields (also the start of v2-v4 records, whose intents `read_intents` reads); returns the
    state and the position after them."""
    try:
        user_id, pos = _get_str(data, pos)
        windows, pos = RollingWindows.decode_from(data, pos, config.horizons)
        applied: dict[str, int] = {}
        n, pos = get_uvarint(data, pos)
        for _ in range(n):
            source, pos = _get_str(data, pos)
            applied[source], pos = get_uvarint(data, pos)

        flags = data[pos]
        pos += 1
        session = None
        if flags & _HAS_SESSION:
            session_id = None
            if flags & _EXPLICIT_ID:
                session_id, pos = _get_str(data, pos)
            start, pos = get_svarint(data, pos)
            last, pos = get_svarint(data, pos)
            n_events, pos = get_uvarint(data, pos)
            (cart,) = _F64.unpack_from(data, pos)
            pos += 8
            hidden = hidden_version = None
            if flags & _HAS_HIDDEN:
                h, pos = get_uvarint(data, pos)
                hidden = np.frombuffer(data, dtype="<f4", count=h, offset=pos).astype(np.float32)
                pos += 4 * h
            if flags & _HAS_HIDDEN_VERSION:
                hidden_version, pos = _get_str(data, pos)
            n, pos = get_uvarint(data, pos)
            recent = []
            if n:
                deltas, pos = get_array(data, pos, n, signed=True)
                types, pos = get_array(data, pos, n)
                present = data[pos]
                pos += 1
                zeros = [0] * n
                items, pos = get_array(data, pos, n) if present & _ITEMS else (zeros, pos)
                cats, pos = get_array(data, pos, n) if present & _CATEGORIES else (zeros, pos)
                prices, pos = _get_f32s(data, pos, n) if present & _PRICES else ([0.0] * n, pos)
                qtys, pos = get_array(data, pos, n, signed=True) if present & _QUANTITIES else ([1] * n, pos)
                ts = start
                for d, ti, item, cat, price, qty in zip(deltas, types, items, cats, prices, qtys):
                    ts += d
                    recent.append(new_recent_event(ts, ti, item, cat, price, qty))
            session = Session(session_id or f"{user_id}:{start}", start, start + last, n_events, cart,
                              hidden, hidden_version, recent)

        strings, pos = _get_strs(data, pos)
        intents, pos = read_intents(data, pos, strings)
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt user state record: {e}") from e
    return UserState(user_id, windows, session, applied, intents, config=config), pos


def _decode_v1(data: memoryview, pos: int, config: StateConfig) -> UserState:
    """v1 records have no lifetime history: they load with an empty one (every sum 0), so a migrated
    user looks like a first-time visitor to the model until their next session closes."""
    state, pos = _decode_v1_body(data, pos, config)
    if pos != len(data):
        raise ValueError(f"corrupt user state record (v1): {len(data) - pos} trailing bytes")
    return state


# ---- record layout v2 ------------------------------------------------------------------------------
# the v1 fields, then
# u8 flags: 1 history present (else every value is 0)
# if history: column of the finished totals' count slots, f32 x its float slots (models.history
#   FINISHED_FLOAT_SLOTS), then the same for the current session's counts (CURRENT_FLOAT_SLOTS)
# (counts are whole numbers and sums float32-exact by construction, so the record round-trips exactly)

_HAS_HISTORY = 1
# Where the history values go in the record: the whole-count slots (one int column), then the float slots
_FINISHED_COUNT_SLOTS = [i for i in range(N_FINISHED) if i not in FINISHED_FLOAT_SLOTS]
_CURRENT_COUNT_SLOTS = [i for i in range(N_CURRENT) if i not in CURRENT_FLOAT_SLOTS]


def _encode_history(h: UserHistory, out: bytearray) -> None:
    if h.is_empty():
        out.append(0)
        return
    out.append(_HAS_HISTORY)
    for values, counts, floats in ((h.finished.tolist(), _FINISHED_COUNT_SLOTS, FINISHED_FLOAT_SLOTS),
                                   (h.current, _CURRENT_COUNT_SLOTS, CURRENT_FLOAT_SLOTS)):
        put_array(out, [int(values[i]) for i in counts])
        _put_f32s(out, [values[i] for i in floats])


def _decode_history(state: UserState, data: memoryview, pos: int, version: int) -> UserState:
    """The history that ends v2-v4 records, set on `state`; the record must end there."""
    try:
        flags = data[pos]
        pos += 1
        if flags & _HAS_HISTORY:
            parts = []
            for n, count_slots, floats in ((N_FINISHED, _FINISHED_COUNT_SLOTS, FINISHED_FLOAT_SLOTS),
                                           (N_CURRENT, _CURRENT_COUNT_SLOTS, CURRENT_FLOAT_SLOTS)):
                counts, pos = get_array(data, pos, len(count_slots))
                sums, pos = _get_f32s(data, pos, len(floats))
                values = [0.0] * n
                for i, v in zip(count_slots, counts):
                    values[i] = float(v)
                for i, v in zip(floats, sums):
                    values[i] = v
                parts.append(values)
            state.history = UserHistory(np.array(parts[0], dtype=np.float32), parts[1])
    except IndexError as e:
        raise ValueError(f"corrupt user state record (v{version}): {e}") from e
    if pos != len(data):
        raise ValueError(f"corrupt user state record (v{version}): {len(data) - pos} trailing bytes")
    return state


def _decode_v2(data: memoryview, pos: int, config: StateConfig) -> UserState:
    state, pos = _decode_v1_body(data, pos, config)
    return _decode_history(state, data, pos, 2)


# ---- record layout v3 ------------------------------------------------------------------------------
# v2 with the intents in columns. A state keeps every intent not yet known delivered (streams.pipeline
# _forget_delivered), and under load those made ~12% of the records a saturated worker writes exceed the
# 2 KiB budget at ~57 B an intent (docs/BENCHMARKS.md). The intents of one batch share their scoring
# time, latency, source and model, which v3 writes once per batch ("group") instead of once per intent.
#
# head as in v1 (through the session), then
# uvarint #strings, each str (intent sources and model versions, deduplicated)
# uvarint #intents (n), and if n:
#   uvarint #groups, each: svarint scored_at - previous group's (0 before the first), f64 latency_ms,
#     uvarint source idx, uvarint model idx
#   column group idx, uvarint first offset, signed column offset - previous offset (n - 1 values)
#   u8 number forms: 1 p_purchase as f32 (else f64), 2 cart_value as signed column of cents (else f64)
#   n x (f32 | f64) p_purchase, column session_events, (signed column cents | n x f64) cart_value
#   uvarint counts per intent + 1 (0: they differ, and a column of the n lengths follows), column counts
# then the v2 history.
# p_purchase comes from a float32 model and cart_value is rounded to cents, so the short forms are exact
# for the intents the worker makes; any other value takes the f64 form, and every record round-trips.
# A record over BUDGET_BYTES is written as "iS" (version | DEFLATED) + zlib.compress(everything after the
# header), when that is shorter (UserState.to_bytes).
#
# ---- record layout v4 ------------------------------------------------------------------------------
# v3, but each intent's counts are written as their change from the intent before (its counts minus the
# previous intent's, position by position, the first against zeros; a signed column). A user's
# consecutive clicks change one or two of the hour's counts, so ~85% of the values are 0: the same size
# raw, but the records over the budget, which are deflated, are those with ~50-150 intents in delivery,
# and there the counts deflate to a fraction (max record 2,069 -> ~1,900 B at max_batch 4096 in
# bench/bench_state_in_flight.py). Written only for those: computing the changes makes v4 15-25% slower to
# encode and decode, and records within the budget are written on every batch.

_P_F32, _CART_CENTS = 1, 2


def _same_bits(a: list[float], b: list[float]) -> bool:
    """Equal as stored, bit for bit (== would take -0.0 for 0.0, and the intent's JSON shows the sign)."""
    return array("d", a).tobytes() == array("d", b).tobytes()


def _as_cents(values: list[float]) -> list[int] | None:
    """`values` as whole cents, when that gives them back exactly (else None: they take the f64 form)."""
    try:
        cents = [round(v * 100) for v in values]
    except (OverflowError, ValueError):  # inf, nan
        return None
    if max(map(abs, cents)) >= 1 << 62 or not _same_bits([c / 100 for c in cents], values):
        return None
    return cents


def _encode_intents(intents: list[RecentIntent], out: bytearray, count_deltas: bool) -> None:
    strings: dict[str, int] = {}
    groups: dict[tuple, int] = {}
    group_of = []
    for it in intents:  # latency by its bytes: -0.0 and 0.0 must stay apart (the intent's bytes show the sign)
        key = (it.scored_at, _F64.pack(it.latency_ms), strings.setdefault(it.source, len(strings)),
               strings.setdefault(it.model_version, len(strings)))
        group_of.append(groups.setdefault(key, len(groups)))
    put_uvarint(out, len(strings))
    for text in strings:
        _put_str(out, text)
    put_uvarint(out, len(intents))
    if not intents:
        return
    put_uvarint(out, len(groups))
    previous = 0
    for scored_at, latency_ms, src, model in groups:
        put_svarint(out, scored_at - previous)
        previous = scored_at
        out += latency_ms
        put_uvarint(out, src)
        put_uvarint(out, model)
    put_array(out, group_of)
    offsets = [it.offset for it in intents]
    put_uvarint(out, offsets[0])
    put_array(out, [b - a for a, b in zip(offsets, offsets[1:])], signed=True)

    ps = [it.p_purchase for it in intents]
    carts = [it.cart_value for it in intents]
    cents = _as_cents(carts)
    forms = (_P_F32 if _same_bits(array("f", ps).tolist(), ps) else 0) | (_CART_CENTS if cents else 0)
    out.append(forms)
    (_put_f32s if forms & _P_F32 else _put_f64s)(out, ps)
    put_array(out, [it.session_events for it in intents])
    if forms & _CART_CENTS:
        put_array(out, cents, signed=True)
    else:
        _put_f64s(out, carts)
    lengths = {len(it.recent_counts) for it in intents}
    if len(lengths) == 1:
        put_uvarint(out, lengths.pop() + 1)
    else:
        put_uvarint(out, 0)
        put_array(out, [len(it.recent_counts) for it in intents])
    if count_deltas:
        put_array(out, _count_deltas([it.recent_counts for it in intents]), signed=True)
    else:
        put_array(out, [c for it in intents for c in it.recent_counts])


def _count_deltas(rows: list[tuple[int, ...]]) -> list[int]:
    """Each row minus the row before, position by position (missing positions count as 0), flattened."""
    out: list[int] = []
    previous: tuple[int, ...] = ()
    for row in rows:
        if len(row) == len(previous):
            out += map(operator.sub, row, previous)
        else:
            out += (c - (previous[j] if j < len(previous) else 0) for j, c in enumerate(row))
        previous = row
    return out


def _add_previous(flat: list[int], lengths: list[int]) -> list[tuple[int, ...]]:
    """The rows `_count_deltas` was given, from its output and the rows' lengths."""
    rows, start, previous = [], 0, ()
    for k in lengths:
        deltas = flat[start:start + k]
        start += k
        if k == len(previous):
            previous = tuple(map(operator.add, deltas, previous))
        else:
            previous = tuple(d + (previous[j] if j < len(previous) else 0) for j, d in enumerate(deltas))
        rows.append(previous)
    return rows


def _decode_intents(data: memoryview, pos: int, strings: list[str],
                    count_deltas: bool) -> tuple[list[RecentIntent], int]:
    n, pos = get_uvarint(data, pos)
    if not n:
        return [], pos
    n_groups, pos = get_uvarint(data, pos)
    groups = []
    scored_at = 0
    for _ in range(n_groups):
        delta, pos = get_svarint(data, pos)
        scored_at += delta
        (latency_ms,) = _F64.unpack_from(data, pos)
        src, pos = get_uvarint(data, pos + _F64.size)
        model, pos = get_uvarint(data, pos)
        groups.append((scored_at, latency_ms, strings[src], strings[model]))
    group_of, pos = get_array(data, pos, n)
    first, pos = get_uvarint(data, pos)
    deltas, pos = get_array(data, pos, n - 1, signed=True)
    offsets = [first]
    for d in deltas:
        offsets.append(offsets[-1] + d)
    forms = data[pos]
    ps, pos = (_get_f32s if forms & _P_F32 else _get_f64s)(data, pos + 1, n)
    session_events, pos = get_array(data, pos, n)
    if forms & _CART_CENTS:
        cents, pos = get_array(data, pos, n, signed=True)
        carts = [c / 100 for c in cents]
    else:
        carts, pos = _get_f64s(data, pos, n)
    k, pos = get_uvarint(data, pos)
    if k:
        lengths = [k - 1] * n
    else:
        lengths, pos = get_array(data, pos, n)
    flat, pos = get_array(data, pos, sum(lengths), signed=count_deltas)
    if count_deltas:
        counts = _add_previous(flat, lengths)
    else:
        counts, start = [], 0
        for k in lengths:
            counts.append(tuple(flat[start:start + k]))
            start += k
    intents = []
    for g, offset, p, events, cart, row in zip(group_of, offsets, ps, session_events, carts, counts):
        scored_at, latency_ms, source, model = groups[g]
        intents.append(new_recent_intent(source, offset, p, scored_at, latency_ms, events, cart, row, model))
    return intents, pos


def _decode_v3(data: memoryview, pos: int, config: StateConfig) -> UserState:
    state, pos = _decode_v1_body(data, pos, config, partial(_decode_intents, count_deltas=False))
    return _decode_history(state, data, pos, 3)


def _encode_v3(state: UserState, out: bytearray) -> int:
    """Appends the v3 body; returns where its head ends in `out` (v4 has the same head, then its own tail)."""
    _encode_head(state, out)
    head_end = len(out)
    _encode_tail(state, out, count_deltas=False)
    return head_end


def _encode_tail(state: UserState, out: bytearray, count_deltas: bool) -> None:
    """The intents and the history: v3's, or with `count_deltas` v4's."""
    _encode_intents(state.recent_intents, out, count_deltas)
    _encode_history(state.history, out)


def _decode_v4(data: memoryview, pos: int, config: StateConfig) -> UserState:
    state, pos = _decode_v1_body(data, pos, config, partial(_decode_intents, count_deltas=True))
    return _decode_history(state, data, pos, 4)


# Record version -> decoder returning a current UserState. To change the layout: bump VERSION, write
# _encode_vN/_decode_vN, and keep the older decoders here (they migrate by building the current objects),
# plus a checked-in record of each version under tests/unit/state_fixtures/ that must still load.
_DECODERS = {1: _decode_v1, 2: _decode_v2, 3: _decode_v3, 4: _decode_v4}
