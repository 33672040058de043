"""Kafka security pass-through against a real broker with a SASL/PLAIN listener.

A second single-node broker (this module's own) listens on PLAINTEXT (readiness, inter-broker) and on
SASL_PLAINTEXT. INTENTSTREAM_KAFKA_* variables must give working settings for each client the project
uses: kafka-python (CLI, control topic), aiokafka (the worker's control consumer) and Faust (its
broker_credentials, turned into aiokafka's arguments the way Faust's driver does it). A wrong password
must fail.
"""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from deploy.kafka import local_broker as lb
from streams.settings import client_security, faust_security, kafka_security_from_env
from tests.integration.helpers import wait_for

SASL_PROPERTIES = """\
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \\
required user_worker="worker-secret";
"""


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory):
    """(PLAINTEXT bootstrap, SASL_PLAINTEXT bootstrap, data dir) of a broker started for this module."""
    data = tmp_path_factory.mktemp("kafka-sasl")
    plain, sasl = lb.free_port_pair(), lb.free_port_pair()
    cfg = lb.BrokerConfig(data_dir=data, port=plain, heap="384m", extra_listeners=(("SASL_PLAINTEXT", sasl),),
                          extra_properties=SASL_PROPERTIES)
    lb.start(cfg)
    try:
        yield cfg.bootstrap, f"127.0.0.1:{sasl}", data
    finally:
        lb.stop(cfg)


def sasl_env(monkeypatch, password: str) -> dict:
    monkeypatch.setenv("INTENTSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("INTENTSTREAM_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("INTENTSTREAM_KAFKA_SASL_USERNAME", "worker")
    monkeypatch.setenv("INTENTSTREAM_KAFKA_SASL_PASSWORD", password)
    return kafka_security_from_env()


def test_sasl_settings_work_for_every_client_and_a_wrong_password_fails(sasl_broker, monkeypatch,
                                                                         tmp_path: Path) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
    from aiokafka.errors import KafkaError
    from kafka import KafkaProducer

    from streams.topics import ensure_topics

    plain, sasl, data = sasl_broker
    topic = f"secure-{uuid.uuid4().hex[:8]}"
    ensure_topics(plain, {topic: 1})  # streams/topics.py has no security pass-through yet (see docs)
    security = sasl_env(monkeypatch, "worker-secret")

    # kafka-python, as the CLI and the control publisher use it.
    producer = KafkaProducer(bootstrap_servers=sasl, **client_security(security))
    producer.send(topic, b"from kafka-python").get(timeout=30)
    producer.close()

    # Faust's broker_credentials, turned into aiokafka arguments exactly as Faust's driver does.
    faust_auth = credentials_to_aiokafka_auth(faust_security(security)["broker_credentials"])
    assert faust_auth["security_protocol"] == "SASL_PLAINTEXT" and faust_auth["sasl_mechanism"] == "PLAIN"

    async def aiokafka_round_trip() -> list[bytes]:
        p = AIOKafkaProducer(bootstrap_servers=sasl, **faust_auth)
        await p.start()
        await p.send_and_wait(topic, b"as faust")
        await p.stop()
        c = AIOKafkaConsumer(topic, bootstrap_servers=sasl, group_id=None, auto_offset_reset="earliest",
                             **client_security(security, flavor="aiokafka"))  # the control consumer's way
        await c.start()
        try:
            got = await c.getmany(timeout_ms=10_000, max_records=10)
            return [r.value for records in got.values() for r in records]
        finally:
            await c.stop()

    assert asyncio.run(aiokafka_round_trip()) == [b"from kafka-python", b"as faust"]

    def rejected() -> int:
        return (data / "server.log").read_text(errors="replace").count("Invalid username or password")

    assert rejected() == 0  # every client above authenticated
    bad = sasl_env(monkeypatch, "wrong")

    async def wrong_password() -> None:
        p = AIOKafkaProducer(bootstrap_servers=sasl, **client_security(bad, flavor="aiokafka"))
        try:
            await asyncio.wait_for(p.start(), 20)
        finally:
            await p.stop()

    with pytest.raises(KafkaError) as failure:
        asyncio.run(wrong_password())
    assert wait_for(rejected, 10, what="the broker rejecting the password")  # not some other failure
