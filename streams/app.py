"""The Faust shell: topics, the `users` table and the scoring agent, on one screen.

Everything interesting happens in streams.pipeline.Pipeline, run by streams.core_process (in a child
process by default); this file only moves bytes between Kafka, the RocksDB-backed table and the core,
once per micro-batch.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections import deque
from contextlib import contextmanager
from typing import Iterator

import faust
from faust.streams import _current_event

from .gaps import (ack_events, acknowledge_through, decode_progress, encode_progress, find_gaps, log_start_offsets,
                   progress_key, read_range)
from .batch_wait import BatchWait
from .core_layout import CoreLayout
from .core_process import CoreConfig, CoreProcess, InlineCore, StatesToSend, use_everywhere
from .pipeline import Pipeline, Record, settle_gc
from .scorer import Scorer
from . import fast_drain
from .fetch_pacing import FetchPacing, live_consumer
from .batched_send import publish
from .durable_table import DurableTable
from .settings import Settings, faust_security
from .web import install_ops

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT_S = 60.0  # a healthy broker acknowledges a batch's state writes in milliseconds
STALL_S = 10.0  # a partition with unprocessed records and no batch for this long is fetched again
# Batches handed to the core whose intents are not yet delivered, the one being prepared included: while
# the core scores batch N, batch N-1 is written and delivered and N-2 finishes its delivery.
MAX_IN_FLIGHT = 3


@contextmanager
def event_context(event: faust.EventT) -> Iterator[None]:
    """Make `event` Faust's current event, so table reads and writes go to its partition.

    Faust picks a table's store partition and changelog partition from the *current* event. A micro-batch
    has no current event (or, from take_events(), the batch's last one, which would file every user under
    one partition); each user's state must be read and written under one of that user's own events.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


async def take_batch(queue: asyncio.Queue, max_batch: int, max_wait: float) -> list:
    """A micro-batch straight from the agent's channel: the first event to arrive, then whatever else is
    queued, up to `max_batch`; when the queue runs dry, wait once for `max_wait` and take what came.

    Unlike Faust's stream.take_events, it leaves the acks to the caller, which defers them to the batch's
    delivery (see `deliver`). max_wait 0 takes only what is queued, which measured slower: Faust's consumer
    refills the queue only while the agent waits, so batches stayed small (docs/BENCHMARKS.md, issue 6).
    """
    batch = [await queue.get()]
    lingered = max_wait <= 0
    while len(batch) < max_batch:
        if not queue.empty():
            batch.append(queue.get_nowait())
        elif lingered:
            break
        else:
            lingered = True
            await asyncio.sleep(max_wait)
    return batch


def partition_bounds(records: list[Record]) -> dict[tuple[str, int], tuple[Record, Record]]:
    """(topic, partition) -> its first and last record in `records` (sorted by offset per partition)."""
    bounds: dict[tuple[str, int], tuple[Record, Record]] = {}
    for r in records:
        tp = (r.topic, r.partition)
        bounds[tp] = (bounds[tp][0], r) if tp in bounds else (r, r)
    return bounds


class ExclusiveOfScoring:
    """The erasure agent's lock: held, no batch is in the core nor enters it.

    The scoring agent holds `lock` only to hand a batch to the core, which loads the batch's states and
    returns them to be written later; so once it has the lock, the erasure also waits for the core to
    finish every batch it was given. An erasure between a batch's load and its write would be undone.
    """

    def __init__(self, lock: asyncio.Lock, state: dict):
        self.lock, self.state = lock, state

    async def __aenter__(self) -> None:
        await self.lock.acquire()
        try:
            for core in self.state.get("cores", ()):
                await core.idle()
        except BaseException:
            self.lock.release()
            raise

    async def __aexit__(self, *exc_info) -> None:
        self.lock.release()


def create_app(settings: Settings, scorer: Scorer | None = None) -> faust.App:
    if settings.core_processes < 1:
        raise ValueError(f"core_processes must be at least 1, not {settings.core_processes}")
    n_cores = min(settings.core_processes, settings.partitions) if settings.core_process else 1
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        store="rocksdb://",
        datadir=str(settings.data_dir),
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        table_standby_replicas=settings.standby_replicas,
        # Faust's 60 s default would stall a killed worker's partitions for a minute.
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 5),
        consumer_auto_offset_reset="earliest",
        # Intents are small (~400 B): big requests mean few socket writes (see Settings.producer_linger_ms).
        producer_linger_ms=settings.producer_linger_ms,
        producer_max_batch_size=1024 * 1024,
        broker_max_poll_records=2000,
        broker_commit_every=2000,
        # Faust's consumer waits whenever the agent's queue is full. With Faust's default of 4096 the worker
        # measured 7.1k events/s, with 16,384 9.2k (max_batch 512, docs/BENCHMARKS.md); ~1 KiB an event.
        stream_buffer_maxsize=max(16_384, 4 * settings.max_batch),
        Table=DurableTable,  # changelog writes that can be awaited (streams/durable_table.py)
        **faust_security(settings.extra),
    )
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    # Bytes in, bytes to the core: Faust decodes nothing per message (streams/fast_drain.py)
    clicks = app.topic(*settings.source_topics, partitions=settings.partitions, schema=fast_drain.RawBytes())
    intents = app.topic(settings.intents_topic, partitions=settings.partitions, **raw)
    dead_letters = app.topic(settings.dlq_topic, partitions=1, **raw)
    # One record per user: windows, session, GRU hidden state, last applied offset, recent intents.
    users = app.Table("users", partitions=settings.partitions, key_type=bytes, value_type=bytes,
                      options={"driver": "rocksdict"})
    # Per source partition: the last offset this app processed (see streams/gaps.py).
    progress = app.Table("progress", partitions=settings.partitions, key_type=bytes, value_type=bytes,
                         options={"driver": "rocksdict"})

    # "pipeline": holds the model being served (ops.control swaps it); "cores": who score with it, each a
    # share of the partitions; "to_send": per core, which stored states go along with a batch
    # (streams/core_process.py)
    state: dict = {}
    app.intentstream = state  # type: ignore[attr-defined]  # for the web views and tests
    users_lock = asyncio.Lock()  # the scoring agent's load→write of user states vs. the erasure agent
    # Per core, the users erased since its last batch: each core forgets their cached states.
    erased: list[list[str]] = [[]]

    def on_erased(user_id: str) -> None:
        for since_last_batch in erased:
            since_last_batch.append(user_id)

    # Metrics, /health /ready /metrics /dashboard, model hot swap, pseudonymization, erasure agent.
    ops = install_ops(app, settings, users, state, event_context, on_erased=on_erased,
                      users_lock=ExclusiveOfScoring(users_lock, state))

    # No four tasks nor the conductor's coroutines per consumed message (streams/fast_drain.py); in place
    # before the worker starts, as Faust's fetcher reads the callback when it starts.
    fast_drain.install(app.consumer)
    fast_drain.hand_over_directly(app)
    fast_drain.drain_in_bulk(app)

    # Fuller fetches while clicks flow, immediate ones when they trickle (streams/fetch_pacing.py)
    pacing = FetchPacing(settings.fetch_min_bytes, settings.fetch_wait_ms) if settings.fetch_wait_ms > 0 else None
    # One core process scores while that is enough, all of them under load (streams/core_layout.py).
    layout = CoreLayout(n_cores, settings.cores_spread_load, settings.cores_gather_load)
    # Batches wait for more clicks only while the cores are busy (streams/batch_wait.py).
    batch_wait = BatchWait(settings.max_wait, settings.max_wait_from_load, settings.max_wait_until_load)
    decided_at = [time.monotonic()]

    @app.timer(interval=1.0)
    async def adapt_to_load() -> None:
        """Both choices, from what the last second's batches showed."""
        now = time.monotonic()
        elapsed, decided_at[0] = now - decided_at[0], now
        batch_wait.decide(layout.decide(elapsed))  # the layout is applied by the scoring agent, between batches
        if pacing is not None:
            pacing.decide(elapsed)
            consumer = live_consumer(app)
            if consumer is not None:
                pacing.apply(consumer)

    def core_lost(why: str) -> None:
        # Nothing after the last scored batch was acked: the restarted worker picks it up again.
        log.critical("%s; exiting so the worker is restarted", why)
        logging.shutdown()
        os._exit(5)

    @app.task
    async def load_model() -> None:
        try:
            chosen = scorer or await ops.control.initial_scorer()  # the deployed model, else settings.model_dir
        except Exception as exc:  # noqa: BLE001 - without a model the worker must stop, not hang
            # Nothing was consumed yet, so nothing is lost; a crashed Faust app would leave the worker idling.
            log.critical("cannot load the model, exiting: %s", exc)
            logging.shutdown()
            os._exit(3)
        ops.metrics.set_model(chosen.version)
        pipeline = Pipeline(chosen, settings.max_message_bytes, pseudonymize=ops.pseudonymize)
        if settings.core_process:
            device = settings.device if scorer is None else chosen.device.type  # a given scorer: its device
            # The cache's budget is the worker's: each core holds the users of its share of the partitions.
            config = CoreConfig(chosen.artifact.path.resolve(), device, settings.max_message_bytes,
                                settings.pseudonym_key, settings.state_cache_users // n_cores, settings.torch_threads)
            cores = [CoreProcess(config, chosen, on_lost=core_lost) for _ in range(n_cores)]
        else:
            cores = [InlineCore(pipeline, settings.state_cache_users)]
        try:
            await asyncio.gather(*(core.start() for core in cores))
        except Exception as exc:  # noqa: BLE001 - as without a model
            log.critical("cannot start the core process, exiting: %s", exc)
            logging.shutdown()
            os._exit(3)
        settle_gc()
        erased[:] = [[] for _ in cores]  # erasures before this: no state was cached yet
        state["cores"] = cores
        state["pipeline"] = pipeline
        state["to_send"] = [StatesToSend(ops.pseudonymize) for _ in cores]
        if scorer is None:
            # Swaps the model between batches until the worker stops; the cores serve each new one first.
            await ops.control.follow(pipeline, activate=lambda new: use_everywhere(cores, new, core_lost))

    taken_over: set[tuple[str, int]] = set()  # partitions already checked since the last rebalance
    # Per partition, the last offset whose intent this worker saw acknowledged by the broker (since the last
    # rebalance); batches are delivered in order, so everything before it was delivered too.
    delivered_here: dict[tuple[str, int], int] = {}
    written_through: dict[tuple[str, int], int] = {}  # per partition, the last offset of its newest progress record
    acked_through: dict = {}  # see gaps.acknowledge_through; reset on a rebalance
    last_batch_at: dict = {}  # per partition (Faust TP), when a batch last held it (monotonic)
    sought: dict = {}  # per partition, the offset unstall_fetching last sought it back to
    # Per partition, the first and last offset handed to the core since the last rebalance: the batches in the
    # core or in delivery, whose progress record may not be written yet.
    submitted: dict[tuple[str, int], tuple[int, int]] = {}
    generation_seen = [None]

    def forget_on_rebalance() -> None:
        """Clear what this worker knows per partition once the group's generation changed (the partitions
        may have moved). Called by each batch and by unstall_fetching, which must notice a rebalance even
        when no batch comes."""
        if generation_seen[0] != app.consumer_generation_id:
            generation_seen[0] = app.consumer_generation_id
            for known in (taken_over, acked_through, delivered_here, written_through, last_batch_at, sought, submitted):
                known.clear()

    async def prepare_batch(records: list[Record], by_record: dict) -> tuple[list[Record], dict, dict[str, int]]:
        """The batch in offset order per partition, with records read back from Kafka where needed
        (streams/gaps.py); its partition_bounds; and per source, the offset through which intents are
        known delivered."""
        # Per partition, offset order is the order the state must see (a seek back can re-deliver older
        # offsets after newer ones); partitions never share a user, so interleaving them does not matter.
        records = sorted(records, key=lambda r: (r.topic, r.partition, r.offset))
        by_partition: dict[tuple[str, int], list[Record]] = {}
        for r in records:
            by_partition.setdefault((r.topic, r.partition), []).append(r)
        done, delivered, reread = {}, {}, []
        for tp, recs in by_partition.items():
            with event_context(by_record[id(recs[0])]):
                done[tp], delivered[tp] = decode_progress(progress.get(progress_key(*tp)))
            if tp in submitted:  # the batches before this one may still be in the core: processed all the same
                first, last = submitted[tp]
                done[tp] = last if done[tp] is None else max(done[tp], last)
                if delivered[tp] is None:
                    delivered[tp] = first - 1
            if tp not in taken_over:
                taken_over.add(tp)
                # First batch of this partition since a rebalance: the previous owner may have died after
                # making its last batch's state durable but before that batch's intents were. Read those
                # clicks back; the pipeline finds them applied and re-emits their stored intents.
                if done[tp] is not None and delivered[tp] < done[tp]:
                    reread.append((tp, delivered[tp] + 1, done[tp] + 1, "re-emitted: the last batch of the previous owner",
                                   True))
            elif tp in delivered_here:
                # Only deliveries already acknowledged count: the batches still in flight (at most
                # MAX_IN_FLIGHT - 1) keep their intents in the states written now, for a crash to re-emit them.
                delivered[tp] = delivered_here[tp]
        # Partitions this app never processed: compare with the log start (once each; see streams/gaps.py).
        fresh = [tp for tp, d in done.items() if d is None and by_partition[tp][0].offset > 0]
        log_starts = await log_start_offsets(settings.bootstrap, fresh) if fresh else None
        gaps = find_gaps({tp: [r.offset for r in recs] for tp, recs in by_partition.items()}, done, log_starts)
        reread += [(tp, start, end, "were committed or skipped but never processed", False) for tp, start, end in gaps]
        present = {(r.topic, r.partition, r.offset) for r in records}
        for (topic, partition), start, end, why, reemit_only in reread:
            missing = await read_range(settings.bootstrap, topic, partition, start, end)
            log.warning("offsets %d..%d of %s/%d %s; re-read %d records", start, end - 1, topic, partition,
                        why, len(missing))
            anchor = by_record[id(by_partition[(topic, partition)][0])]  # same partition: same table partition
            for m in missing:
                if (topic, partition, m.offset) not in present:
                    rec = Record(m.key, m.value, topic, partition, m.offset, records[0].arrived_ms, reemit_only)
                    by_record[id(rec)] = anchor
                    records.append(rec)
                    present.add((topic, partition, m.offset))
        if reread:
            records.sort(key=lambda r: (r.topic, r.partition, r.offset))
        bounds = partition_bounds(records)
        for tp, d in delivered.items():
            if d is None:  # never processed before: nothing of it was delivered
                delivered[tp] = bounds[tp][0].offset - 1
        return records, bounds, {f"{t}/{p}": d for (t, p), d in delivered.items()}

    async def confirm_state_writes() -> None:
        """Wait for the broker to acknowledge the batch's changelog writes; exit if it never does.

        A worker stuck here still heartbeats, so the group would never move its partitions: better to stop
        and let the supervisor restart it (nothing of the batch was acked, so nothing is lost).
        """
        try:
            await asyncio.wait_for(asyncio.gather(users.confirm_changelog(), progress.confirm_changelog()),
                                   timeout=CONFIRM_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.critical("changelog writes not acknowledged within %.0f s; exiting so the worker is restarted",
                         CONFIRM_TIMEOUT_S)
            logging.shutdown()
            os._exit(4)

    source_topics = set(settings.source_topics)

    @app.timer(interval=5.0)
    async def unstall_commits() -> None:
        """Ack what was processed on partitions whose commits Faust stopped moving.

        After a rebalance Faust may skip every record it re-delivers to a partition's new owner and never
        fetch them again. Nothing is lost (the progress table shows they were processed), but with no batch
        for that partition nothing acks them, and its committed offset stays behind until the next
        failover re-delivers them once more. So: where the committed offset is below the recorded
        progress and Faust's own acks do not continue it, ack through the progress.
        """
        recovery = app.tables.recovery
        if not recovery.completed.is_set() or recovery.in_recovery:
            return
        consumer = app.consumer
        for tp in consumer.assignment():
            committed = consumer._committed_offset.get(tp)
            if tp.topic not in source_topics or committed is None:
                continue
            acked = consumer._acked.get(tp)
            if acked and min(acked) <= committed + 1:
                continue  # Faust's own acks continue the committed offset
            done, _delivered = decode_progress(progress.get(progress_key(tp.topic, tp.partition)))
            if done is not None and done >= committed:
                n = acknowledge_through(consumer, {(tp.topic, tp.partition): (committed, done)}, acked_through)
                if n:
                    log.info("acked %d processed offsets of %s/%d that Faust re-delivered without delivering "
                             "(commit was stuck at %d)", n, tp.topic, tp.partition, committed)

    @app.timer(interval=5.0)
    async def unstall_fetching() -> None:
        """Fetch again the records Faust dropped at the end of a partition's traffic.

        faust-streaming 0.15.3 can drop records it fetched for a partition (its read offset runs ahead
        around a rebalance; streams/gaps.py). The hole is read back when a later record of that partition
        arrives, but at the end of the traffic none does: after a restart with a backlog, whole partitions
        were seen left unprocessed, lag and all, until new clicks came (test_a_clean_stop_while_busy_...).
        So where the log holds records past the processed ones, the agent has nothing queued, and no batch
        took any record of the partition for STALL_S, seek Faust back to the first unprocessed offset
        (once per offset). What it re-delivers is processed or, if it was after all, re-emitted.
        """
        recovery = app.tables.recovery
        if not recovery.completed.is_set() or recovery.in_recovery or agent_queue[0] is None:
            return
        forget_on_rebalance()
        now = time.monotonic()
        consumer = app.consumer
        for tp in consumer.assignment():
            if tp.topic not in source_topics:
                continue
            since = last_batch_at.setdefault(tp, now)
            if now - since < STALL_S or not agent_queue[0].empty():
                continue  # the common case: batches come, or are queued
            high = consumer.highwater(tp)
            done, _delivered = decode_progress(progress.get(progress_key(tp.topic, tp.partition)))
            resume = done + 1 if done is not None else consumer._committed_offset.get(tp)
            if resume is None and high:  # never processed nor committed here: from where the log starts
                resume = (await log_start_offsets(settings.bootstrap, [(tp.topic, tp.partition)]))[
                    (tp.topic, tp.partition)]
            if high is None or resume is None or high <= resume or sought.get(tp) == resume:
                continue
            log.warning("%s/%d: offsets %d..%d not processed and none arrived for %.0f s; fetching them again",
                        tp.topic, tp.partition, resume, high - 1, now - since)
            sought[tp] = resume
            last_batch_at[tp] = now
            await consumer.seek(tp, resume)

    def write_states(result, records: list[Record], bounds: dict, by_record: dict,
                     delivered_through: dict[str, int]) -> None:
        """The batch's user states and per-partition progress, each under an event of its own partition."""
        for user_id, data in result.states.items():
            with event_context(by_record[id(records[result.last_record[user_id]])]):
                users[user_id.encode()] = data
        for (topic, partition), (_first, last) in bounds.items():
            write_progress((topic, partition), last, by_record, delivered_through[f"{topic}/{partition}"])

    def write_progress(tp: tuple[str, int], last: Record, by_record: dict, delivered: int) -> None:
        """The partition's progress record: processed through `last`, intents delivered through `delivered`."""
        with event_context(by_record[id(last)]):
            progress[progress_key(*tp)] = encode_progress(last.offset, delivered)
        written_through[tp] = last.offset

    def record_delivered(bounds: dict, by_record: dict, generation: int) -> None:
        """Progress records learn of a batch's delivery with the partition's next batch. Where none was
        written since (the stream went quiet, or the worker is stopping), record it now, so that whoever
        takes the partition over next (a restart, a rebalance, a crash) has nothing to re-emit. Not once
        the tables closed, nor after a rebalance (the partition may have moved on elsewhere)."""
        if progress.should_stop or app.consumer_generation_id != generation:
            return
        for tp, (_first, last) in bounds.items():
            if written_through.get(tp) == last.offset:
                write_progress(tp, last, by_record, last.offset)

    async def deliver(scored: asyncio.Future, bounds: dict, by_record: dict, generation: int, events: list,
                      arrived: float, previous: asyncio.Task | None) -> None:
        """A batch's second half, overlapped with the scoring of the next batches: once the core scored it and
        its states were written (`scored`), wait until the broker has those state writes, then (after
        `previous`, the delivery before on the same partitions, to keep each partition's order) publish its
        intents and dead letters, count them delivered once the broker has them, and ack its offsets."""
        # The state writes (changelog records) must be acknowledged before the intents go out: otherwise a
        # crash can publish an intent whose state is lost, and failover re-scores the click instead of
        # re-emitting its intent byte-identical (DESIGN §4). One broker round trip per batch.
        # (Not app.producer.flush(): see streams/durable_table.py.)
        result = await scored
        layout.scored(result.process_s)
        await confirm_state_writes()
        if previous is not None:
            await previous
        # Straight to the producer, one batch per partition: Faust's Topic.send builds a FutureMessage per
        # record, which cost more than scoring the record (streams/batched_send.py).
        sent = await publish(app.producer._ensure_producer(), intents.get_topic_name(),
                             [(None, user_id.encode(), value) for user_id, value in result.intents])
        for key, value in result.dead_letters:
            await dead_letters.send(key=key, value=value)
        if result.dlq_codes:
            log.warning("dead-lettered %s", dict(result.dlq_codes))
        ops.observe_batch(events, result, arrived, result.process_s)
        for _partition, _n, fut in sent:
            await fut
        for tp, (_first, last) in bounds.items():  # later batches' states may forget these intents now
            delivered_here[tp] = max(last.offset, delivered_here.get(tp, -1))
        record_delivered(bounds, by_record, generation)
        # Acked last: a clean stop waits for the batches in flight to be acked (hold_stop_for) before it
        # closes the tables, so their delivery is recorded by then and the next owner re-emits none of them.
        # The batch's offsets may be committed now (a revoked partition's are marked acked already). Then
        # the records Faust skipped (read back above, or skipped re-deliveries of processed ones): never
        # acked, they would stop Faust committing those partitions (streams/gaps.py).
        ack_events(app.consumer, events)
        n_filled = acknowledge_through(
            app.consumer, {tp: (first.offset, last.offset) for tp, (first, last) in bounds.items()}, acked_through)
        if n_filled:
            log.info("acked %d offsets Faust skipped or that were read back", n_filled)

    def hold_stop_for(batch: list) -> None:
        """Make Faust wait for this batch before it closes the tables (a stop) or gives partitions away (a
        rebalance). Faust waits (`wait_empty`) until every message it tracks is acked, but it tracks only
        messages read through a Stream's iterator, which take_batch bypasses. The batch is acked as a whole
        at the end of `deliver`, after its delivery was recorded, so one tracked message stands for it."""
        message = batch[-1].message
        if not message.tracked:
            message.tracked = True
            app.consumer._unacked_messages.add(message)

    def crash_on_failure(task: asyncio.Task) -> None:
        # A batch whose intents cannot be delivered must not be acked nor forgotten: stop, and let the
        # restarted worker (or the partitions' new owner) re-emit them from the stored state.
        if not task.cancelled() and task.exception() is not None:
            log.critical("delivering a batch failed, exiting so the worker is restarted", exc_info=task.exception())
            logging.shutdown()
            os._exit(5)

    agent_queue: list = [None]  # the scoring agent's channel queue, for unstall_fetching

    @app.agent(clicks)
    async def score(stream: faust.StreamT) -> None:
        queue = agent_queue[0] = stream.channel.queue
        # Per core, deliver() of its batches (shares) not yet delivered, oldest first: each partition's order
        in_flight: list[deque[asyncio.Task]] = [deque() for _ in range(n_cores)]

        async def change_layout() -> None:
            # Partitions move between cores: every batch in a core or in delivery goes first, so that a
            # partition's batches stay in order and its states are in the table for its new core.
            for deliveries in in_flight:
                while deliveries:
                    await deliveries.popleft()
            layout.apply()
            log.info("core layout %d: %d of %d core processes score", layout.epoch, layout.scoring, n_cores)

        while True:
            if layout.changing:  # before the next batch is taken: taken events would not yet hold a stop back
                await change_layout()
            try:
                events = await take_batch(queue, settings.max_batch, batch_wait.seconds)
            except StopAsyncIteration:  # how Faust ends a channel's readers when the worker stops
                flying = [delivery for deliveries in in_flight for delivery in deliveries]
                if flying:  # normally delivered already: a clean stop waits for every ack first
                    await asyncio.wait(flying, timeout=10.0)
                return
            forget_on_rebalance()
            events = taken_once(events)
            if not events:
                continue
            full = len(events) >= settings.max_batch
            if full:
                layout.backlog()
                if layout.changing and all(d.done() for deliveries in in_flight for d in deliveries):
                    # Nothing to wait for (awaiting a finished task does not suspend): this batch is
                    # already shared out under the new layout. Typical of a start on a backlog.
                    await change_layout()
            if pacing is not None:
                pacing.taken(len(events), full=full)
            # One share per scoring core, by partition: while the layout holds, a user's clicks always reach
            # the same core (and its cache).
            shares: list[list] = [[] for _ in range(n_cores)]
            for ev in events:
                shares[layout.core_of(ev.message.partition)].append(ev)
            for share in shares:  # before any wait below: a stop or a rebalance now waits for them
                if share:
                    hold_stop_for(share)
            while "cores" not in state:  # the model loads once, at startup
                await app.sleep(0.05)
            arrived = time.time() * 1000.0
            for index, share in enumerate(shares):
                if not share:
                    continue
                # Bounds the intents a state keeps (all above `delivered_through`, computed after this) and
                # the work a crash leaves to re-emit; while a core scores one batch, the one before it is
                # written and delivered.
                flying = in_flight[index]
                while flying and (flying[0].done() or len(flying) >= MAX_IN_FLIGHT):
                    await flying.popleft()
                await submit(share, index, arrived, flying)

    def taken_once(events: list) -> list:
        """The events, less any record this worker already took since the last rebalance.

        Faust can hand the same record over twice: at startup its fetcher runs before the seek to the
        committed offsets, and fetches again what it fetched then. The first copy is in a core or delivered,
        and scoring the second would only re-emit its intent: a duplicate on the intents topic. The second
        copy is marked acked without Faust's bookkeeping; the first copy's delivery acks the offset.
        """
        kept, seen = [], set()
        for ev in events:
            m = ev.message
            taken = submitted.get(m.tp)  # Faust's TP equals (topic, partition) as a key
            if (taken is not None and m.offset <= taken[1]) or (m.tp, m.offset) in seen:
                m.acked = True
                continue
            seen.add((m.tp, m.offset))
            kept.append(ev)
        if len(kept) < len(events):
            log.info("dropped %d records Faust handed over a second time", len(events) - len(kept))
        return kept

    async def submit(events: list, index: int, arrived: float, in_flight: deque[asyncio.Task]) -> None:
        """Hand a batch (or its share for core `index`) to that core; its delivery follows the last one in
        `in_flight`, the core's deliveries, which have the same partitions."""
        core, to_send = state["cores"][index], state["to_send"][index]
        by_record: dict[int, faust.EventT] = {}
        records = []
        assigned, dropped = app.consumer.assignment(), []
        for ev in events:
            m = ev.message
            if m.tp not in assigned:
                # Buffered before a rebalance took its partition away: the new owner processes it from the
                # committed offset. Processing it here would write this user's state into a changelog
                # partition another worker now owns, where a later restore could pick the stale copy.
                dropped.append(m.tp)
                # Marked acked, so the ack below skips the bookkeeping: an unprocessed offset must never
                # count toward a commit, should the partition come back to this worker.
                m.acked = True
                continue
            rec = Record(m.key, m.value, m.topic, m.partition, m.offset, arrived)
            by_record[id(rec)] = ev
            records.append(rec)

        if dropped:
            log.info("dropped %d buffered records of partitions revoked from this worker: %s",
                     len(dropped), sorted(set(dropped)))
        if not records:
            for ev in events:
                ev.ack()
            return
        forget_on_rebalance()
        generation = generation_seen[0]  # this batch's, even if the timer sees a rebalance meanwhile
        records, bounds, delivered_through = await prepare_batch(records, by_record)
        taken_at = time.monotonic()
        for tp, (first, last) in bounds.items():  # (topic, partition): equal to Faust's TP as a key
            last_batch_at[tp] = taken_at
            submitted[tp] = (submitted.get(tp, (first.offset,))[0], last.offset)

        def read_states(missing: list[tuple[str, int]], records=records, by_record=by_record) -> dict:
            """The stored states of the users the core does not hold, each read under its own partition."""
            out = {}
            for user_id, i in missing:
                with event_context(by_record[id(records[i])]):
                    out[user_id] = users.get(user_id.encode())
            return out

        async with users_lock:  # an erasure waits for the batches in the cores (ExclusiveOfScoring)
            forget, erased[index][:] = list(erased[index]), []
            for user_id in forget:
                to_send.forget(user_id)
            batch_users, opaque = to_send.users_of(records)
            given = read_states(to_send.choose(batch_users))
            to_send.submitted(batch_users, opaque)

            def on_scored(result, records=records, bounds=bounds, by_record=by_record,
                          delivered_through=delivered_through, batch_users=batch_users, opaque=opaque) -> None:
                write_states(result, records, bounds, by_record, delivered_through)
                to_send.answered(batch_users, opaque, result)  # after the write: the table has them now

            # The core loads the states, scores, and hands back what write_states writes, before it
            # answers any later batch's request for states.
            # A new generation (a rebalance) or core layout empties the core's state cache.
            scored = core.submit(records, read_states, delivered_through, (app.consumer_generation_id, layout.epoch),
                                 forget, on_scored, given)
        delivery = asyncio.ensure_future(
            deliver(scored, bounds, by_record, generation, events, arrived, in_flight[-1] if in_flight else None))
        delivery.add_done_callback(crash_on_failure)
        in_flight.append(delivery)

    return app
