"""The worker's core (streams.pipeline.Pipeline, the decoded-state cache, the state encoding) in a process of
its own, so that a micro-batch's scoring overlaps Faust's work on the batches around it.

A saturated worker was one Python thread at ~100% of a core while the broker took ~15% of the other (`top`
during bench/bench_pipeline.py): Faust (fetching, events, table writes, producing, acks) and the core
took turns on one core. The core needs none of Faust, so it runs in a child process. The shell sends it a
batch's raw records with the stored states it guesses the core lacks (StatesToSend), answers a request
for any other state it needs, and gets back what to write and what to publish:

    shell (Faust, streams/app.py)                              core (`serve`, a child process)
    ("batch", records, delivered, generation, forget, given) ──►  decode; a user neither cached nor given?
                              ◄── ("fetch", [(user_id, index of the user's first record)])     (rarely)
    ("states", {user_id: stored bytes or None})              ──►  apply, score, encode each touched state
                              ◄── ("done", CoreResult)

The shell does not wait for a batch's result before sending the next (CoreProcess). Decoded states stay
cached with the core, so the core empties them: on a new consumer generation or core layout (the
partitions may have moved; sent with each batch; streams/core_layout.py), per user on erasure (sent with
the next batch), and after a batch that failed half-way. `InlineCore` runs the same BatchCore in the
worker's own process (`--no-core-process`), for machines with one core and for side-by-side benchmarks
(docs/BENCHMARKS.md, sixth round).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import pickle
import signal
import struct
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from models.state import UserState

from .pipeline import Pipeline, Record, collect_young_and_freeze, settle_gc
from .scorer import Scorer
from .user_cache import UserCache

log = logging.getLogger(__name__)

# (user_id, index of one of its records in the batch) -> the user's stored state bytes, or None if none
StateReader = Callable[[list[tuple[str, int]]], dict[str, "bytes | None"]]


@dataclass
class CoreResult:
    """What the shell writes and publishes for one batch (plain data: it crosses the process boundary)."""

    intents: list[tuple[str, bytes]]  # (user_id, IntentEvent bytes), in publishing order
    dead_letters: list[tuple[bytes | None, bytes]]  # (key, DeadLetter bytes)
    states: dict[str, bytes]  # every user of the batch: the encoded state to write back
    last_record: dict[str, int]  # per user: index of the record (in the batch as sent) to write its state under
    reemitted: int
    dlq_codes: dict[str, int]
    process_s: float  # the core's own time: decode, apply, score, encode
    # What the core's cache holds now, for the shell's guess of which states to send with a batch: it
    # emptied the cache first (a new generation), then took `states` and dropped `evicted`.
    cleared: bool = False
    evicted: list[str] = field(default_factory=list)


class CoreError(RuntimeError):
    """The core failed on a batch (a bug, not bad input: bad events are dead-lettered)."""


class BatchCore:
    """One micro-batch at a time, in whichever process: decoded states are cached between batches, the rest
    come from the shell's table through `read_states`, once per batch."""

    def __init__(self, pipeline: Pipeline, cache_users: int):
        self.pipeline = pipeline
        self.cache = UserCache(cache_users)

    def process(self, records: list[Record], read_states: StateReader, delivered_through: dict[str, int],
                generation: object, forget: list[str], given: dict[str, bytes | None] | None = None) -> CoreResult:
        """`given`: stored states the shell sent along (users it guessed this cache lacks); a cached state wins,
        being at least as new. Only the users found in neither are asked for, through `read_states`."""
        cache = self.cache
        for user_id in forget:
            cache.forget(user_id)
        cleared = cache.check_generation(generation)
        index = {id(rec): i for i, rec in enumerate(records)}
        fetched: dict[str, bytes | None] = dict(given or {})

        def prefetch(users: list[tuple[str, Record]]) -> None:
            missing = [(user_id, index[id(rec)]) for user_id, rec in users
                       if user_id not in cache and user_id not in fetched]
            if missing:
                fetched.update(read_states(missing))

        def load_state(user_id: str, _rec: Record) -> UserState | None:
            state = cache.get(user_id)
            if state is None:
                data = fetched.get(user_id)
                state = UserState.from_bytes(data) if data is not None else None
            return state

        started = time.perf_counter()
        try:
            result = self.pipeline.process(records, load_state, delivered_through, prefetch)
        except BaseException:
            cache.clear()  # cached states may be half-applied; the table still has the last good ones
            raise
        states, evicted = {}, []
        for user_id, state in result.states.items():
            states[user_id] = state.to_bytes()
            evicted += cache.put(user_id, state)
        return CoreResult(result.intents, result.dead_letters, states,
                          {user_id: index[id(rec)] for user_id, rec in result.last_record.items()},
                          result.reemitted, dict(result.dlq_codes), time.perf_counter() - started, cleared, evicted)


class StatesToSend:
    """The shell's guess of which stored states to send along with a batch: those of its users the core does
    not hold (from the core's results), so that the core rarely has to ask (a round trip through both
    processes' event loops, ~7 ms at light load, and the core idles meanwhile).

    Never a user of a batch the core has not answered yet: the table holds that user's state only once that
    batch's result is written. Nor anyone while such a batch has records without a readable key (their user
    is unknown here). A wrong guess costs only time: the core prefers its own cached state, and asks for
    what it is missing.
    """

    def __init__(self, pseudonymize: Callable[[str], str] | None = None):
        self.pseudonymize = pseudonymize
        self.held: set[str] = set()
        self.pending: Counter[str] = Counter()
        self.pending_opaque = 0  # batches not answered yet with a record whose user is unknown here

    def users_of(self, records: list[Record]) -> tuple[dict[str, int], bool]:
        """Each user named by a record key (the user id; see Pipeline._decode), with the index of its first
        record, and whether some record named nobody."""
        first: dict[bytes, int] = {}  # per distinct key, so each is decoded (and pseudonymized) once
        opaque = False
        for i, rec in enumerate(records):
            if rec.key is None:
                opaque = True
            elif rec.key not in first:
                first[rec.key] = i
        users: dict[str, int] = {}
        for key, i in first.items():
            try:
                user_id = key.decode()
            except UnicodeDecodeError:  # not text: no user the core would find
                opaque = True
                continue
            users.setdefault(user_id if self.pseudonymize is None else self.pseudonymize(user_id), i)
        return users, opaque

    def choose(self, users: dict[str, int]) -> list[tuple[str, int]]:
        if self.pending_opaque:
            return []
        held, pending = self.held, self.pending
        return [(user_id, i) for user_id, i in users.items() if user_id not in held and user_id not in pending]

    def submitted(self, users: dict[str, int], opaque: bool) -> None:
        self.pending.update(users.keys())
        self.pending_opaque += opaque

    def answered(self, users: dict[str, int], opaque: bool, result: CoreResult) -> None:
        """After the batch's states were written (a failed batch stops the worker: no call then)."""
        self.pending.subtract(users.keys())
        for user_id in users:
            if self.pending[user_id] <= 0:
                del self.pending[user_id]
        self.pending_opaque -= opaque
        if result.cleared:
            self.held.clear()
        self.held.update(result.states)
        self.held.difference_update(result.evicted)

    def forget(self, user_id: str) -> None:
        self.held.discard(user_id)


class InlineCore:
    """The core in the worker's own process: each batch is scored when submitted."""

    def __init__(self, pipeline: Pipeline, cache_users: int):
        self.core = BatchCore(pipeline, cache_users)
        self.scorer = pipeline.scorer

    async def start(self) -> None:
        pass

    async def use(self, scorer: Scorer) -> None:
        self.core.pipeline.scorer = self.scorer = scorer

    def submit(self, records: list[Record], read_states: StateReader, delivered_through: dict[str, int],
               generation: object, forget: list[str], on_scored: Callable[[CoreResult], None],
               given: dict[str, bytes | None] | None = None) -> asyncio.Future:
        scored = asyncio.get_running_loop().create_future()
        try:
            result = self.core.process(records, read_states, delivered_through, generation, forget, given)
            on_scored(result)
        except Exception as exc:  # noqa: BLE001 - the caller's future carries it
            scored.set_exception(exc)
        else:
            scored.set_result(result)
        return scored

    async def idle(self) -> None:
        pass


async def use_everywhere(cores: list, scorer: Scorer, on_split: Callable[[str], None]) -> None:
    """Serve `scorer` in every core, or in none: when one refuses (CoreError), the cores that had switched go
    back to the model they served, and the refusal is raised. Should one of them fail to go back, the cores
    would serve different models: `on_split` is told why (the worker exits; a restart loads one everywhere)."""
    switched = []
    try:
        for core in cores:
            previous = core.scorer
            await core.use(scorer)
            switched.append((core, previous))
    except Exception:
        for core, previous in switched:
            try:
                await core.use(previous)
            except Exception as exc:  # noqa: BLE001 - reported through on_split
                on_split(f"a core could not go back to model {previous.version} after a refused swap ({exc})")
        raise


@dataclass(frozen=True)
class CoreConfig:
    model_dir: Path
    device: str
    max_message_bytes: int
    pseudonym_key: str
    cache_users: int
    torch_threads: int


@dataclass
class _Request:
    """A message to the core awaiting its reply; the core answers them in the order they were sent."""

    scored: asyncio.Future
    read_states: StateReader | None = None  # batches: answers the core's one request for states
    on_scored: Callable[[CoreResult], None] | None = None  # batches: run before any later message is handled


class CoreProcess:
    """The shell's handle on the core's child process.

    Batches are submitted without waiting for the ones before: the child scores batch N+1 while the shell
    writes and delivers batch N. One reader task takes the child's messages in order and runs a batch's
    `on_scored` (writing its states) before it answers the next batch's request for states, so the table
    read for a user is never older than the core's last result for that user.
    """

    def __init__(self, config: CoreConfig, scorer: Scorer, on_lost: Callable[[str], None]):
        self.config = config
        self.scorer = scorer  # the model the child serves (the shell's copy, for the swap check)
        self.on_lost = on_lost  # the child died: the worker cannot score any more
        self._pending: deque[_Request] = deque()
        self._process = None
        self._inbox: asyncio.StreamReader | None = None  # the child's messages
        self._outbox: asyncio.WriteTransport | None = None  # to the child; buffers what the pipe cannot take yet

    async def start(self) -> None:
        # spawn, not fork: the worker already runs threads (Faust's consumer, torch).
        context = multiprocessing.get_context("spawn")
        child_in, to_child = context.Pipe(duplex=False)
        from_child, child_out = context.Pipe(duplex=False)
        # daemon: at exit, multiprocessing terminates the child instead of waiting for it.
        self._process = context.Process(target=serve, args=(child_in, child_out, self.config),
                                        name="intentstream-core", daemon=True)
        self._process.start()
        child_in.close()
        child_out.close()  # so the shell reads EOF if the child dies
        # Both pipes on the event loop, no thread: a batch can be larger than a pipe's buffer, and the child
        # reads it only once it finished the batch before, which must not block the loop (nor wait for a
        # thread to get the GIL, which cost the worker ~15 ms a batch at light load).
        loop = asyncio.get_running_loop()
        self._inbox = asyncio.StreamReader(limit=1 << 24, loop=loop)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self._inbox, loop=loop),
                                     _as_file(from_child, "rb"))
        self._outbox, _protocol = await loop.connect_write_pipe(asyncio.Protocol, _as_file(to_child, "wb"))
        kind, payload = await self._receive()
        if kind != "ready":
            raise CoreError(f"the core process did not start: {payload}")
        log.info("core process %d serving model %s", self._process.pid, payload)
        self._reader = asyncio.ensure_future(self._read_replies())
        self._reader.add_done_callback(self._reader_ended)

    def _reader_ended(self, reader: asyncio.Task) -> None:
        # No reply can arrive any more: fail what waits for one. Cancelled: the worker is stopping.
        why = "the worker is stopping" if reader.cancelled() else str(reader.exception())
        while self._pending:
            request = self._pending.popleft()
            if not request.scored.done():
                request.scored.set_exception(CoreError(why))
        if not reader.cancelled():
            self.on_lost(why)

    def submit(self, records: list[Record], read_states: StateReader, delivered_through: dict[str, int],
               generation: object, forget: list[str], on_scored: Callable[[CoreResult], None],
               given: dict[str, bytes | None] | None = None) -> asyncio.Future:
        """Send a batch (with the stored states in `given`); the future is the CoreResult, set after
        `on_scored(result)` ran."""
        request = _Request(asyncio.get_running_loop().create_future(), read_states, on_scored)
        self._pending.append(request)
        raw = [(r.key, r.value, r.topic, r.partition, r.offset, r.arrived_ms, r.reemit_only) for r in records]
        self._send(("batch", raw, delivered_through, generation, forget, given))
        return request.scored

    async def use(self, scorer: Scorer) -> None:
        """Serve `scorer`'s model from the next batch on: the child loads the same artifact. CoreError if it
        cannot (the artifact changed since the shell loaded it, or the device is out of memory): the child
        then keeps serving its model, and so does `self.scorer`."""
        request = _Request(asyncio.get_running_loop().create_future())
        self._pending.append(request)
        self._send(("model", str(scorer.artifact.path), self.config.device, scorer.version))
        try:
            await request.scored
        except CoreError as exc:  # the child's traceback: its last line says why (/status shows it)
            raise CoreError(f"the core process did not load model {scorer.version}: "
                            f"{str(exc).strip().splitlines()[-1]}") from exc
        self.scorer = scorer

    async def idle(self) -> None:
        """Return once every batch submitted so far was scored (or failed)."""
        while self._pending:
            await asyncio.wait([self._pending[-1].scored])

    def _send(self, message: tuple) -> None:
        blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._outbox.write(struct.pack("!i", len(blob)) + blob)  # multiprocessing.Connection's framing

    async def _read_replies(self) -> None:
        """Until the child goes away (a CoreError ends it; `_reader_ended` fails what is pending)."""
        while True:
            kind, payload = await self._receive()
            if kind == "fetch":
                try:
                    states = self._pending[0].read_states(payload)
                except Exception:  # noqa: BLE001 - the core fails this batch, which stops the worker
                    log.exception("reading the states of a batch failed")
                    states = None
                self._send(("states", states))
                continue
            request = self._pending.popleft()
            if kind == "error":
                outcome = CoreError(f"the core failed:\n{payload}")
            else:
                outcome = payload
                try:
                    if request.on_scored is not None:
                        request.on_scored(payload)
                except Exception as exc:  # noqa: BLE001 - the batch's own future reports it
                    outcome = exc
            if request.scored.done():  # cancelled: whoever waited stopped waiting
                continue
            if isinstance(outcome, Exception):
                request.scored.set_exception(outcome)
            else:
                request.scored.set_result(outcome)

    async def _receive(self) -> tuple[str, object]:
        try:
            size, = struct.unpack("!i", await self._inbox.readexactly(4))
            return pickle.loads(await self._inbox.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError):  # EOF, or a reset when it died mid-message
            raise CoreError(f"the core process exited (exit code {self._process.exitcode})") from None


def _as_file(conn, mode: str):
    """The pipe end behind a multiprocessing Connection, as a file the event loop's transport owns and closes."""
    fd = os.dup(conn.fileno())
    conn.close()
    return open(fd, mode, buffering=0)


def serve(inbox, outbox, config: CoreConfig) -> None:
    """The child process: load the model, then answer the shell's messages until it goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the whole group: the shell stops us
    logging.basicConfig(level=logging.INFO,
                        format="[%(asctime)s] [core %(process)d] %(levelname)s %(name)s: %(message)s")
    import torch

    from .privacy import pseudonymizer_from_key

    torch.set_num_threads(config.torch_threads)
    try:
        pipeline = Pipeline(Scorer.load(config.model_dir, config.device), config.max_message_bytes,
                            pseudonymize=pseudonymizer_from_key(config.pseudonym_key))
    except Exception:  # noqa: BLE001 - reported to the shell, which decides
        outbox.send(("error", traceback.format_exc()))
        return
    core = BatchCore(pipeline, config.cache_users)
    settle_gc()
    gc.disable()  # collected between batches instead (collect_young_and_freeze)
    outbox.send(("ready", f"{pipeline.scorer.version} on {pipeline.scorer.device}"))
    queued: deque[tuple] = deque()  # messages that arrived while waiting for states

    def read_states(missing: list[tuple[str, int]]) -> dict[str, bytes | None]:
        outbox.send(("fetch", missing))
        while True:
            message = inbox.recv()
            if message[0] == "states":
                break
            queued.append(message)  # the shell sends the next batch without waiting for this one
        if message[1] is None:
            raise CoreError("the worker could not read the batch's stored states")
        return message[1]

    while True:
        try:
            message = queued.popleft() if queued else inbox.recv()
        except EOFError:
            return  # the shell is gone
        kind = message[0]
        if kind == "batch":
            _kind, raw, delivered_through, generation, forget, given = message
            try:
                result = core.process([Record(*r) for r in raw], read_states, delivered_through, generation, forget,
                                      given)
            except EOFError:
                return
            except Exception:  # noqa: BLE001 - the shell decides what a failed batch means
                outbox.send(("error", traceback.format_exc()))
                continue
            outbox.send(("done", result))
            del result  # sent: freed now, not walked (and frozen) by the collection below
            collect_young_and_freeze()  # after the answer: the shell delivers meanwhile
        elif kind == "model":
            _kind, model_dir, device, version = message
            try:
                scorer = Scorer.load(Path(model_dir), device)
                if scorer.version != version:  # the artifact changed since the shell loaded it
                    raise CoreError(f"{model_dir} now holds model {scorer.version}, not {version}")
            except Exception:  # noqa: BLE001 - the old model keeps serving; the shell refuses the swap
                outbox.send(("error", traceback.format_exc()))
                continue
            pipeline.scorer = scorer
            outbox.send(("model", scorer.version))
