"""Find and re-read source records that Faust acknowledged without delivering them.

A safety net, kept after its first suspect was cleared. The fault tests once saw a partition's committed
offset move past records no agent had processed around a rebalance. The first suspect, Faust acking
messages it skips as stale (`_py_aiter` in faust/streams.py does), does not apply here: the worker runs
Faust's Cython stream iterator, which skips them without acking. Two real causes were found and fixed in
the worker instead (streams/pipeline.py keeps every intent of a batch; streams/app.py drops buffered
records of revoked partitions unprocessed). This check stays because it is cheap: the worker keeps, per
source partition, the last offset it processed in a small changelogged table, and when a batch starts
above that offset + 1 the missing range is read again straight from Kafka and processed first. The
pipeline is idempotent, so records that were in fact processed are only re-emitted.

A partition with no recorded progress counts as processed up to just before its log start: with
auto_offset_reset=earliest every record of it is owed an intent. This case is real: a record Faust skips
while a rebalance settles is fetched again only if the partition has a committed offset to seek back to
(aiokafka's seek_to_committed does nothing for a partition without one), and Faust's next commit starts
at the first *acked* offset, so the first records of a fresh partition could be committed unprocessed.
"""
from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)


def progress_key(topic: str, partition: int) -> bytes:
    return f"{topic}/{partition}".encode()


def find_gaps(first_offsets: dict[tuple[str, int], int], last_done: dict[tuple[str, int], int | None],
              log_starts: dict[tuple[str, int], int] | None = None) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> [start, end) ranges between the last processed offset and this batch.

    A partition without progress (None) is compared with its log start offset, when `log_starts` has it.
    """
    gaps = {}
    for tp, first in first_offsets.items():
        done = last_done.get(tp)
        if done is None and log_starts is not None and tp in log_starts:
            done = log_starts[tp] - 1
        if done is not None and first > done + 1:
            gaps[tp] = (done + 1, first)
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
