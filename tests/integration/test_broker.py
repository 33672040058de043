"""The provisioned broker works with both client libraries the project uses."""
from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer
from kafka import KafkaProducer

from tests.integration.conftest import create_topic

N_MESSAGES = 10_000


async def test_kafka_python_produce_aiokafka_consume(kafka_bootstrap: str, unique: str) -> None:
    topic = f"roundtrip-{unique}"
    create_topic(kafka_bootstrap, topic, partitions=3)

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5, acks="all")
    for i in range(N_MESSAGES):
        producer.send(topic, key=str(i % 97).encode(), value=f"message-{i}".encode())
    producer.flush()
    producer.close()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=f"g-{unique}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen: set[str] = set()
    per_key_order: dict[bytes, list[int]] = {}
    try:
        async def drain() -> None:
            async for msg in consumer:
                seen.add(msg.value.decode())
                per_key_order.setdefault(msg.key, []).append(int(msg.value.decode().split("-")[1]))
                if len(seen) == N_MESSAGES:
                    return
        await asyncio.wait_for(drain(), timeout=60)
    finally:
        await consumer.stop()

    assert seen == {f"message-{i}" for i in range(N_MESSAGES)}
    # Same key -> same partition -> order preserved.
    assert all(order == sorted(order) for order in per_key_order.values())
