"""Integration tests run against a real Kafka broker (KRaft, one node) that this session starts once.

The broker gets a free port and a temporary data dir, so it never collides with the demo broker.
Set INTENTSTREAM_TEST_BOOTSTRAP=host:port to reuse an already running broker while iterating locally.
Each test names its own topics and consumer groups (uuid suffix), so tests never see each other's data.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from deploy.kafka import local_broker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> str:
    external = os.environ.get("INTENTSTREAM_TEST_BOOTSTRAP")
    if external:
        local_broker.wait_ready(external)
        yield external
        return
    cfg = local_broker.BrokerConfig(data_dir=tmp_path_factory.mktemp("kafka"), port=local_broker.free_port_pair())
    _, seconds = local_broker.start(cfg)
    print(f"\n[kafka] test broker ready on {cfg.bootstrap} in {seconds:.1f}s (log {cfg.log_file})")
    yield cfg.bootstrap
    local_broker.stop(cfg)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic and group names."""
    return uuid.uuid4().hex[:10]


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


REPO_ROOT = Path(__file__).resolve().parents[2]
