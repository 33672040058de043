"""A Faust table whose changelog writes are sent in batches and can be awaited until the broker has them.

The worker's order of writes (DESIGN §4) needs "this batch's state is in the changelog" before the batch's
intents go out and before its offsets can be committed. `app.producer.flush()` does not prove that:
faust-streaming 0.15.3's ProducerBuffer.flush gives up after 0.1 s without progress and returns with
changelog records still queued, which on a busy 2-core machine happened often enough for failovers to
restore stale state.

So this table does not hand its changelog records to Faust's producer buffer (a FutureMessage each, then
one `send` each from a background task, and a RocksDB write of the persisted offset per record). A write
serializes the record exactly as Faust would and keeps it; on the next turn of the event loop, or when
`confirm_changelog` is awaited, everything kept is published as one batch per partition
(streams/batched_send.py). Once the broker acknowledged a flush, the table records the changelog offset
it has, per partition, as Faust's own callback does, so a restart still restores only what is missing.
"""
from __future__ import annotations

import asyncio

import faust
from faust.types import TP

from .batched_send import OutRecord, publish


class _Receipt:
    """What Faust's Table.on_key_set/on_key_del read back from send_changelog: `.message.partition`."""

    __slots__ = ("message", "partition")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.message = self


_receipts: dict[int, _Receipt] = {}


def _receipt(partition: int) -> _Receipt:
    receipt = _receipts.get(partition)
    if receipt is None:
        receipt = _receipts[partition] = _Receipt(partition)
    return receipt


class DurableTable(faust.Table):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._unsent: list[OutRecord] = []
        self._last_flush: asyncio.Task | None = None  # each flush waits for the one before: per-key order

    def send_changelog(self, partition, key, value, key_serializer=None, value_serializer=None) -> "_Receipt":
        topic = self.changelog_topic
        key_bytes, _ = topic.prepare_key(key, key_serializer or self.key_serializer)
        value_bytes, _ = topic.prepare_value(value, value_serializer or self.value_serializer)
        if partition is None:  # no current event: by key, as Faust's eager partitioning does
            partition = self.app.producer.key_partition(topic.get_topic_name(), key_bytes).partition
        if not self._unsent:
            asyncio.get_running_loop().call_soon(self._flush_unsent)
        self._unsent.append((partition, key_bytes, value_bytes))
        return _receipt(partition)

    def _flush_unsent(self) -> None:
        if self._unsent:
            records, self._unsent = self._unsent, []
            self._last_flush = asyncio.ensure_future(self._flush(records, self._last_flush))

    async def _flush(self, records: list[OutRecord], previous: asyncio.Task | None) -> None:
        if previous is not None:
            await previous  # a failed earlier flush fails this one too: nothing after a gap counts as stored
        topic = self.changelog_topic.get_topic_name()
        batches = await publish(self.app.producer._ensure_producer(), topic, records)
        last: dict[int, int] = {}
        for partition, n, fut in batches:
            meta = await fut
            last[partition] = max(last.get(partition, -1), meta.offset + n - 1)
        if self.should_stop:  # its store closed with the table; a restart re-reads these few records
            return
        for partition, offset in last.items():
            self.data.set_persisted_offset(TP(topic, partition), offset)

    async def confirm_changelog(self) -> None:
        """Return once every changelog write made so far is acknowledged; raise if one failed."""
        self._flush_unsent()
        if self._last_flush is not None:
            await self._last_flush
