"""Find and re-read source records that Faust acknowledged without delivering them.

faust-streaming 0.15.3 skips messages fetched under an older rebalance generation and *acks* them
(`faust/streams.py`, `_py_aiter`), so its next commit can move past records no agent ever saw; the
partition's next owner then starts after them. The worker therefore keeps, per source partition, the
last offset it processed in a small changelogged table. When a batch starts above that offset + 1 the
missing range is read again straight from Kafka and processed first; the pipeline is idempotent, so
records that were in fact processed are only re-emitted.
"""
from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)


def progress_key(topic: str, partition: int) -> bytes:
    return f"{topic}/{partition}".encode()


def find_gaps(first_offsets: dict[tuple[str, int], int], last_done: dict[tuple[str, int], int | None]
              ) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> [start, end) ranges between the last processed offset and this batch."""
    gaps = {}
    for tp, first in first_offsets.items():
        done = last_done.get(tp)
        if done is not None and first > done + 1:
            gaps[tp] = (done + 1, first)
    return gaps


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
