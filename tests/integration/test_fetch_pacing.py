"""streams.fetch_pacing on a real aiokafka consumer: the fetch requests it sends to the broker carry the
paced settings once pacing is on, and the consumer's own ones again once it is off."""
from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer
from aiokafka.protocol.fetch import FetchRequest

from streams.fetch_pacing import FetchPacing
from tests.integration.conftest import create_topic


async def test_fetch_requests_on_the_wire_follow_the_pacing(kafka_bootstrap: str, unique: str) -> None:
    topic = f"paced-{unique}"
    create_topic(kafka_bootstrap, topic, partitions=1)
    # A short wait, so that fetches on the empty topic come back quickly and new ones are sent.
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, fetch_max_wait_ms=100)
    await consumer.start()
    sent: list[tuple[int, int]] = []  # (min_bytes, max_wait_ms) of each fetch request sent
    send = consumer._client.send

    async def recording_send(node_id, request, *args, **kwargs):
        if isinstance(request, FetchRequest):
            sent.append((request._min_bytes, request._max_wait_ms))
        return await send(node_id, request, *args, **kwargs)

    consumer._client.send = recording_send
    pacing = FetchPacing(min_bytes=12_345, max_wait_ms=40)

    async def requests_after(change) -> list[tuple[int, int]]:
        change()
        pacing.apply(consumer)
        await consumer.getmany(timeout_ms=50)  # the fetch in flight was built before: let it come back
        await asyncio.sleep(0.3)
        since = len(sent)
        await asyncio.sleep(0.5)
        return sent[since:]

    try:
        assert (await requests_after(lambda: None)) != []  # the recorder sees the fetches
        paced = await requests_after(lambda: (pacing.taken(100, full=False), pacing.decide(1.0)))
        unpaced = await requests_after(lambda: pacing.decide(1.0))
    finally:
        await consumer.stop()
    assert pacing.on is False
    assert paced and set(paced) == {(12_345, 40)}, paced
    assert unpaced and set(unpaced) == {(1, 100)}, unpaced
