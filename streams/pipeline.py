"""The worker's core, free of Faust: a micro-batch of raw records in, intents and dead letters out.

    records ──decode──► bad: DeadLetter
                 │
                 ▼ per user, in offset order
      already applied? ──yes──► re-emit the stored intent byte-for-byte (DESIGN §4)
                 │ no
                 ▼ UserState.apply → features.step_values, per user in order (stack_inputs once per batch)
      segments (a user's consecutive clicks of one session) → one packed Scorer.run → IntentEvent

The Faust shell (streams/app.py) only moves bytes between Kafka, the `users` table and this class,
so everything here is unit-tested without a broker and reused by replay and the benchmarks.
"""
from __future__ import annotations

import gc
import logging
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from models.features import stack_inputs, step_values
from models.state import DEFAULT_CONFIG, RecentIntent, StateConfig, Step, UserState, new_recent_intent
from schemas.codec import DecodeError, decode_click, encode_dead_letter, encode_scored_click
from schemas.events import N_EVENT_TYPES, ClickEvent, DeadLetter

from .scorer import Scorer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka message."""

    key: bytes | None
    value: bytes
    topic: str
    partition: int
    offset: int
    arrived_ms: float  # wall clock when the worker received it
    # Read back only so its stored intent can be re-emitted (a new owner's takeover): never applied, so an
    # erased user's clicks do not bring the state back.
    reemit_only: bool = False
    # "topic/partition": the key of applied offsets and remembered intents, built once (read ~8x a click)
    source: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", f"{self.topic}/{self.partition}")


@dataclass
class BatchResult:
    intents: list[tuple[str, bytes]] = field(default_factory=list)  # (user_id, IntentEvent bytes)
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # (key, DeadLetter bytes)
    states: dict[str, UserState] = field(default_factory=dict)  # users to write back, once each
    last_record: dict[str, Record] = field(default_factory=dict)  # per user: the record to write state under
    scored: dict[tuple[str, int], bytes] = field(default_factory=dict)  # (source, offset) -> intent, this batch
    reemitted: int = 0  # re-delivered events answered with their stored intent
    unanswerable_duplicates: int = 0  # re-delivered events older than the stored intents
    dlq_codes: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass
class _Segment:
    """A user's consecutive new clicks in one session, scored as one row from hidden state `h0`."""

    user_id: str
    session: object  # models.session.Session (the live object: its hidden state is set after scoring)
    h0: np.ndarray
    rows: list = field(default_factory=list)  # (record, event, n_events, cart_value, counts)


# Returns the user's stored state or None; the shell reads its table under `record`'s partition.
StateLoader = Callable[[str, Record], "UserState | None"]
# Told every user of a batch (with the user's first record) before the first StateLoader call, so states
# kept elsewhere can be fetched in one go (streams/core_process.py).
Prefetch = Callable[[list[tuple[str, Record]]], None]


def now_ms() -> float:
    return time.time() * 1000.0


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector, off for the length of one batch.

    A batch makes tens of thousands of short-lived objects (events, steps, rows, intents) that reference
    counting frees; they form no cycles. With the collector on, those alive mid-batch age into the old
    generation and set off full collections that walk the whole heap: a quarter of the core's time in
    the benchmark, for nothing collected. It runs again after the batch, so cycles made anywhere are
    still found; a caller that disabled it keeps it disabled.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def settle_gc() -> None:
    """Fewer and cheaper cyclic collections, once a process's long-lived objects exist (worker, replay).

    A Kafka client hands each message over in several tracked objects (Faust: Message, Event, futures).
    With Python's default thresholds (700, 10, 10) that sets off a young collection every hundred-odd
    messages, and the older generations hold everything loaded at startup (faust, torch, the model),
    which later collections walk again and again. Freezing moves those out of the collector's sight; a
    higher first threshold makes young collections rare. +9% events/s for the worker in
    bench/bench_pipeline.py (docs/BENCHMARKS.md). Cycles are still collected, only less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


# Tracked objects made since the last collection after which the core collects (collect_young_and_freeze)
YOUNG_LIMIT = 10_000


def collect_young_and_freeze(young_limit: int = YOUNG_LIMIT) -> bool:
    """Between two batches in a core process, whose automatic collection is off: once `young_limit` tracked
    objects were made since the last time, collect the young generation and freeze what survived.

    The core's long-lived objects are its cached user states, ~32 tracked objects each (lists, recent
    events and intents, window rings): 1.6M at 50k users. Python's collector walks survivors again in each
    older-generation collection; with settle_gc's thresholds even the young collections took 14.6, 21.8 and
    43.4 ms at 5k events/s in a 15 s run (nothing collected), each the worst second of the click → intent
    p99 (65-87 ms against ~40; docs/BENCHMARKS.md, eleventh round), and a full one would walk them all.
    Frozen (gc.freeze), survivors are never walked again, so each collection costs what was made since
    the one before, and it runs after a batch's result was sent, not inside a batch. The cache holds no
    reference cycles (tests/unit/test_pipeline_gc.py), so refcounting still frees evicted states; cyclic
    garbage that outlives one collection would stay, and the core makes none.
    """
    if gc.get_count()[0] < young_limit:
        return False
    gc.collect(0)
    gc.freeze()
    return True


class Pipeline:
    def __init__(self, scorer: Scorer, max_message_bytes: int = 65_536, state_config: StateConfig = DEFAULT_CONFIG,
                 pseudonymize: Callable[[str], str] | None = None):
        self.scorer = scorer  # swapped between batches by streams.control (model hot swap)
        self.max_message_bytes = max_message_bytes
        self.state_config = state_config
        self.pseudonymize = pseudonymize  # streams.privacy.Pseudonymizer, or None

    # -------------------------------------------------------------------------------- public
    def process(self, records: list[Record], load_state: StateLoader,
                delivered_through: dict[str, int] | None = None, prefetch: Prefetch | None = None) -> BatchResult:
        """Score a micro-batch. `delivered_through[source]` is the offset through which the shell knows the
        intents reached Kafka (default: everything before this batch); each state keeps every intent above
        it, so a crash before the rest are delivered is answered by re-emitting them (see _forget_delivered)."""
        with _cyclic_gc_paused():
            return self._process(records, load_state, delivered_through, prefetch)

    def _process(self, records: list[Record], load_state: StateLoader,
                 delivered_through: dict[str, int] | None, prefetch: Prefetch | None) -> BatchResult:
        result = BatchResult()
        per_user: dict[str, list[tuple[Record, ClickEvent]]] = defaultdict(list)
        for rec in records:
            event = self._decode(rec, result)
            if event is not None:
                per_user[event.user_id].append((rec, event))
        if prefetch is not None:
            prefetch([(user_id, items[0][0]) for user_id, items in per_user.items()])

        pending: dict[str, list[tuple[Record, ClickEvent]]] = {}
        repeats: list[tuple[Record, ClickEvent]] = []
        for user_id, items in per_user.items():
            state = load_state(user_id, items[0][0]) or UserState.new(user_id, self.state_config)
            result.states[user_id] = state
            result.last_record[user_id] = items[-1][0]
            fresh, in_batch = [], set()
            for rec, event in items:
                if state.is_applied(rec.source, rec.offset):
                    self._reemit(state, rec, event, result)
                elif rec.reemit_only:
                    continue
                elif (rec.source, rec.offset) in in_batch:  # delivered twice within this batch
                    repeats.append((rec, event))
                else:
                    in_batch.add((rec.source, rec.offset))
                    fresh.append((rec, event))
            if fresh:
                pending[user_id] = fresh

        self._score(pending, result)
        if delivered_through is None:
            delivered_through = {}
            for rec in records:
                delivered_through[rec.source] = min(delivered_through.get(rec.source, rec.offset), rec.offset - 1)
        self._forget_delivered([result.states[u] for u in pending], delivered_through)
        for rec, event in repeats:  # their first copy was just scored: emit that intent again
            first = result.scored.get((rec.source, rec.offset))
            if first is not None:
                result.intents.append((event.user_id, first))
                result.reemitted += 1
        return result

    # -------------------------------------------------------------------------------- steps
    def _decode(self, rec: Record, result: BatchResult) -> ClickEvent | None:
        decoded = decode_click(rec.value, self.max_message_bytes)
        if isinstance(decoded, DecodeError):
            self._dead_letter(rec, decoded.code, decoded.message, result)
            return None
        # State is partitioned by key: an event under another key would split the user's state.
        if rec.key is not None and rec.key != decoded.user_id.encode():
            self._dead_letter(rec, "key_mismatch",
                              f"message key {rec.key[:64]!r} is not the event's user_id (partitioning needs key = user_id)",
                              result)
            return None
        if self.pseudonymize is not None:
            # After the key check (the key is the clear id), before state, intents and logs see the id.
            # The event was just decoded and is not shared, so setting the field in place is safe and cheap.
            object.__setattr__(decoded, "user_id", self.pseudonymize(decoded.user_id))
        return decoded

    def _dead_letter(self, rec: Record, code: str, message: str, result: BatchResult) -> None:
        dl = DeadLetter(error_code=code, error_message=message, original=rec.value, topic=rec.topic,
                        partition=rec.partition, offset=rec.offset, failed_at=int(now_ms()), key=rec.key)
        result.dead_letters.append((rec.key, encode_dead_letter(dl)))
        result.dlq_codes[code] += 1

    def _score(self, pending: dict[str, list[tuple[Record, ClickEvent]]], result: BatchResult) -> None:
        """Apply every new click to its user's state, then score them all in one batched GRU pass.

        A user's consecutive clicks of one session form a *segment*: one sequence of a packed GRU batch
        that starts from the session's stored hidden state. So a user with 20 clicks in the batch costs
        20 time steps of one sequence, not 20 separate GRU calls (equal to stepping one by one, tested).
        """
        scorer = self.scorer
        segments: list[_Segment] = []
        values = []  # every row's StepValues, in segment order (a segment's rows are consecutive)
        for user_id, items in pending.items():
            state = result.states[user_id]
            segment: _Segment | None = None
            for rec, event in items:
                try:
                    step = state.apply(event, rec.source, rec.offset)
                    inputs = step_values(step, scorer.spec)
                    if segment is None or step.session is not segment.session or step.position == 0:
                        segment = _Segment(user_id, step.session, self._hidden_before(step))
                        segments.append(segment)
                except Exception as exc:  # noqa: BLE001 - one bad event must not stop the worker
                    log.exception("processing failed for offset %s/%s", rec.source, rec.offset)
                    self._dead_letter(rec, "processing_error", f"{type(exc).__name__}: {exc}", result)
                    continue
                session = step.session
                values.append(inputs)
                # The session object keeps changing as later clicks apply: copy what the intent shows now.
                segment.rows.append((rec, event, session.n_events, round(float(session.cart_value), 2),
                                     tuple(map(int, step.window_features[:N_EVENT_TYPES].tolist()))))
        if not segments:
            return
        cat, num, roll = stack_inputs(values, scorer.spec)
        p, h_last = scorer.run(cat, num, roll, [len(seg.rows) for seg in segments],
                               np.stack([seg.h0 for seg in segments]))
        p_rows = iter(p.tolist())  # one per row, in segment order
        scored_at = int(now_ms())
        version = scorer.version
        for i, seg in enumerate(segments):
            seg.session.hidden = h_last[i]
            seg.session.hidden_version = version
            state = result.states[seg.user_id]
            session_id = seg.session.session_id
            for rec, event, n_events, cart_value, counts in seg.rows:
                # (source, offset, p_purchase, scored_at, latency_ms, session_events, cart_value, recent_counts,
                # model_version): positional, one call per click
                remembered = new_recent_intent(rec.source, rec.offset, next(p_rows), scored_at,
                                               round(scored_at - rec.arrived_ms, 3), n_events, cart_value, counts,
                                               version)
                state.recent_intents.append(remembered)
                encoded = self._encode(event, session_id, remembered)
                result.intents.append((seg.user_id, encoded))
                result.scored[(rec.source, rec.offset)] = encoded

    @staticmethod
    def _forget_delivered(states: list[UserState], delivered_through: dict[str, int]) -> None:
        """Trim each state's remembered intents to the last few, but never one that may not be delivered.

        The shell makes a batch's state durable *before* its intents. After a crash in between, the next
        owner finds those clicks applied and must re-emit their intents byte-identical; an intent dropped
        from the state by then would be lost for good (not just a duplicate avoided). Only states that took
        new clicks are trimmed: a batch of re-deliveries leaves every state as it was.
        """
        for state in states:
            intents = state.recent_intents
            keep_from = len(intents) - state.config.max_intents
            if keep_from > 0:
                intents[:] = [it for i, it in enumerate(intents)
                              if i >= keep_from or it.offset > delivered_through.get(it.source, -1)]

    def _hidden_before(self, step: Step) -> np.ndarray:
        """The session's GRU state before this event, rebuilt when the model changed since."""
        session = step.session
        if step.position == 0:
            return np.zeros(self.scorer.hidden_size, dtype=np.float32)
        if session.hidden is not None and session.hidden_version == self.scorer.version:
            return session.hidden
        earlier = session.recent[:-1]  # the stored tail, minus the event being scored
        first_position = step.position - len(earlier)
        # The ts before the stored tail is not kept: a session longer than the tail rebuilds approximately.
        return self.scorer.rebuild_hidden(earlier, first_position, None)

    @staticmethod
    def _encode(event: ClickEvent, session_id: str, r: RecentIntent) -> bytes:
        """The IntentEvent's bytes, from the click and its remembered intent: the same call when it is scored
        and when it is re-emitted, so a re-emission is byte-identical (DESIGN §4)."""
        return encode_scored_click(event, session_id, r.p_purchase, r.model_version, r.session_events,
                                   r.cart_value, r.recent_counts, r.scored_at, r.latency_ms)

    def _reemit(self, state: UserState, rec: Record, event: ClickEvent, result: BatchResult) -> None:
        r = state.find_intent(rec.source, rec.offset)
        if r is not None:
            session_id = event.session_id or self._session_id_for(state, event)
            result.intents.append((event.user_id, self._encode(event, session_id, r)))
            result.reemitted += 1
            return
        result.unanswerable_duplicates += 1
        # Not a loss as long as the shell keeps its write order (its intent was published before this state
        # could forget it), but worth seeing: a burst of these after a crash would mean that order broke.
        log.info("re-delivered offset %s/%s is older than the stored intents; not re-emitted", rec.source, rec.offset)

    @staticmethod
    def _session_id_for(state: UserState, event: ClickEvent) -> str:
        # Implicit session ids are f"{user_id}:{start_ms}"; a re-delivered event belongs to a session that
        # started at or before it, and the stored intents are recent, so the current session is the one.
        return state.session.session_id if state.session is not None else f"{event.user_id}:{event.ts}"
