"""Find source records that no one processed, so the worker reads them back from Kafka.

faust-streaming 0.15.3 can let records slip past the agent around a rebalance: the fault tests saw
ranges of a partition skipped while flow control was off or the generation changed, and never
delivered again (e.g. offsets 20..28 between batches that held 16..19 and 29..), and the committed
offset then moved past them. The worker therefore keeps, per source partition, the last offset it
processed in a small changelogged table. Before a batch is processed, every offset above that one must
be accounted for: a batch that starts past it, or a hole inside the batch, is read again straight
from Kafka and processed in its place. The pipeline is idempotent, so records that were in fact
processed are only re-emitted.

A partition with no recorded progress counts from its log start: with auto_offset_reset=earliest every
record of it is owed an intent, and the first records of a fresh partition were seen skipped this way
(a partition without a committed offset has nothing for Faust to seek back to).
"""
from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)


def progress_key(topic: str, partition: int) -> bytes:
    return f"{topic}/{partition}".encode()


def encode_progress(processed_through: int, delivered_through: int) -> bytes:
    """A partition's progress: the last offset processed (state durable), and the offset through which
    the intents are known delivered. In between lie the clicks of the last batch, whose intents may have
    been lost with the worker: a new owner re-emits them from the state."""
    return f"{processed_through} {delivered_through}".encode()


def decode_progress(raw: bytes | None) -> tuple[int | None, int | None]:
    if raw is None:
        return None, None
    fields = raw.split()
    processed = int(fields[0])
    return processed, int(fields[1]) if len(fields) > 1 else processed


def find_gaps(batch_offsets: dict[tuple[str, int], list[int]], last_done: dict[tuple[str, int], int | None],
              log_starts: dict[tuple[str, int], int] | None = None) -> list[tuple[tuple[str, int], int, int]]:
    """[(topic, partition), start, end) ranges of offsets no one processed, that this batch must process first.

    Per partition, the batch's offsets above the last processed one must continue it without holes: a
    batch that starts past it, or skips offsets inside, misses records. A partition without progress
    (None) counts from its log start, when `log_starts` has it (else from the batch's first offset).
    """
    gaps = []
    for tp, offsets in batch_offsets.items():
        done = last_done.get(tp)
        if done is None:
            done = log_starts[tp] - 1 if log_starts and tp in log_starts else min(offsets) - 1
        expected = done + 1
        for offset in sorted(set(offsets)):
            if offset < expected:
                continue  # processed before (a re-delivery)
            if offset > expected:
                gaps.append((tp, expected, offset))
            expected = offset + 1
    return gaps


async def log_start_offsets(bootstrap: str, tps: list[tuple[str, int]], **client_kwargs) -> dict[tuple[str, int], int]:
    """The first offset still in each partition's log (0 unless retention or deletion moved it)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                **client_kwargs)
    await consumer.start()
    try:
        starts = await consumer.beginning_offsets([TopicPartition(t, p) for t, p in tps])
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): offset for tp, offset in starts.items()}


async def read_range(bootstrap: str, topic: str, partition: int, start: int, end: int,
                     **client_kwargs) -> list:
    """Records of one partition with start <= offset < end (fewer if the log was compacted)."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                **client_kwargs)
    await consumer.start()
    records = []
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            fetched = batch.get(tp, [])
            if not fetched:
                break  # nothing more (e.g. the range held only transaction markers)
            records.extend(r for r in fetched if r.offset < end)
    finally:
        await consumer.stop()
    return records


def acknowledge_through(consumer, processed: dict[tuple[str, int], tuple[int, int]], checked_through: dict) -> int:
    """Mark every offset from the committed one through the batch's last acked in Faust's bookkeeping.

    `processed[tp]` is (first, last) offset of the batch for that partition; without a committed offset
    yet, acking starts at `first` (everything in between was processed, holes read back by find_gaps).

    Faust commits a partition only while its acked offsets continue from the committed one
    (`Consumer._new_offset`). A record Faust skipped and never delivered is never acked, so one such
    record froze that partition's commits for the rest of the worker's life, and the next failover
    re-delivered everything since. Every offset up to the last one processed *has* been processed (by this
    worker, by an earlier owner, or read back by find_gaps), so acking them is safe. The batch's own events
    are acked before this (`ack_events`), so they are found acked. `checked_through`
    remembers how far each partition was covered already, so each offset is looked at once (the caller
    empties it on a rebalance). Returns the number of offsets acked here.
    """
    from faust.types import TP
    from faust.types.tuples import Message

    n = 0
    for (topic, partition), (batch_first, last) in processed.items():
        tp = TP(topic, partition)
        committed = consumer._committed_offset.get(tp)
        acked = consumer._acked_index[tp]
        start = batch_first if committed is None else committed
        seen_with, seen_through = checked_through.get((topic, partition), (None, -1))
        # Commits move forward as batches are acked, which keeps what was checked valid; but Faust can set
        # the committed offset back (its seek after a rebalance, possibly after this worker processed a
        # batch): then start over from it.
        if seen_with is not None and committed is not None and committed >= seen_with:
            first = max(start, seen_through + 1)
            checked_through[(topic, partition)] = (seen_with, max(last, seen_through))
        else:
            first = start
            checked_through[(topic, partition)] = (committed, last)
        for offset in range(first, last + 1):
            if offset not in acked:
                consumer.ack(Message(topic, partition, offset, 0.0, 0, None, None, None, None))
                n += 1
    return n


def ack_events(consumer, events: list) -> None:
    """`ev.ack()` for each of `events` (Faust events of one consumer), with Faust's bookkeeping done in one
    pass under its lock taken once: per event, Event.ack, Message.ack and Consumer.ack took the lock three
    times and looked up the same settings, ~10% of the shell's main thread at saturation (issue 6).

    Equal to faust-streaming 0.15.3's `Message.ack` -> `ConsumerMessage.on_final_ack` -> `Consumer.ack`
    (tests/unit/test_gaps.py compares the two on a real consumer): the reference count drops by one; at
    zero the message is acked, and an offset at or past the committed one of a topic with acks enabled
    joins the partition's acked offsets (the next commit's candidates).
    """
    from faust.types.tuples import ack_lock
    from mode.utils.futures import notify

    acking_topics = consumer.app.topics._acking_topics
    committed_offsets, acked_index, acked_lists = consumer._committed_offset, consumer._acked_index, consumer._acked
    unacked = consumer._unacked_messages
    n_acked = 0
    with ack_lock:
        for ev in events:
            m = ev.message
            if m.acked:
                continue
            m.refcount = max(m.refcount - 1, 0)
            if m.refcount:
                continue
            m.acked = True
            if m.topic not in acking_topics:
                continue
            tp, offset = m.tp, m.offset
            committed = committed_offsets[tp]
            if committed is None or offset >= committed:
                index = acked_index[tp]
                if offset not in index:
                    unacked.discard(m)
                    index.add(offset)
                    acked_lists[tp].append(offset)
                    n_acked += 1
        consumer._n_acked += n_acked
    notify(consumer._waiting_for_ack)  # Consumer.wait_empty waits on it
