"""streams.batched_send.publish against the broker: records land where a per-record send puts them, in
order, with the offsets its futures report; a full producer batch rolls over to the next."""
from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.batched_send import publish
from tests.integration.conftest import create_topic


async def read_all(bootstrap: str, topic: str, n: int) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    got = []
    try:
        while len(got) < n:
            for records in (await asyncio.wait_for(consumer.getmany(timeout_ms=500), 30)).values():
                got.extend(records)
    finally:
        await consumer.stop()
    return got


async def test_publish_matches_per_record_send(kafka_bootstrap: str, unique: str) -> None:
    batched, single = f"batched-{unique}", f"single-{unique}"
    for topic in (batched, single):
        create_topic(kafka_bootstrap, topic, partitions=4)
    # A small max batch size, so 300 records of 200 B overflow a partition's batch several times.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_batch_size=4096, linger_ms=1)
    await producer.start()
    records = [(f"user-{i % 37}".encode(), f"{i:05d}".encode() + b"." * 195) for i in range(300)]
    try:
        submitted = await publish(producer, batched, [(None, k, v) for k, v in records])
        metas = [(p, n, await fut) for p, n, fut in submitted]
        for k, v in records:
            await producer.send(single, v, key=k)
        await producer.flush()
    finally:
        await producer.stop()

    assert sum(n for _p, n, _m in metas) == len(records)
    assert len(metas) > 4  # batches rolled over
    got_batched = await read_all(kafka_bootstrap, batched, len(records))
    got_single = await read_all(kafka_bootstrap, single, len(records))
    where = {(r.key, r.value): (r.partition, r.offset) for r in got_batched}
    # Same partition for every record as producer.send's partitioner picked, same order within partitions.
    assert {(r.key, r.value): r.partition for r in got_single} == {kv: p for kv, (p, _o) in where.items()}
    for partition in range(4):
        in_partition = [r.value for r in sorted(got_batched, key=lambda r: r.offset) if r.partition == partition]
        assert in_partition == [v for k, v in records if where[(k, v)][0] == partition]
    # Each future's offset is its batch's first record; the batch's n records follow it.
    last_offset = {}
    for p, n, meta in metas:
        assert meta.partition == p
        last_offset[p] = max(last_offset.get(p, -1), meta.offset + n - 1)
    assert last_offset == {p: max(o for pp, o in where.values() if pp == p) for p in last_offset}


async def test_publish_explicit_partitions(kafka_bootstrap: str, unique: str) -> None:
    topic = f"explicit-{unique}"
    create_topic(kafka_bootstrap, topic, partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        # The same key to different partitions: the explicit partition wins over the key's hash.
        submitted = await publish(producer, topic, [(i % 3, b"k", str(i).encode()) for i in range(30)])
        for _p, _n, fut in submitted:
            await fut
    finally:
        await producer.stop()
    got = await read_all(kafka_bootstrap, topic, 30)
    assert sorted((r.partition, int(r.value)) for r in got) == sorted((i % 3, i) for i in range(30))
