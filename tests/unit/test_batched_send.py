"""streams.batched_send.partition_by_key: the partition aiokafka's producer.send picks, remembered per key."""
from __future__ import annotations

from types import SimpleNamespace

from aiokafka.partitioner import DefaultPartitioner

from streams import batched_send
from streams.batched_send import partition_by_key


def test_the_partition_is_the_default_partitioners_for_every_key_and_count() -> None:
    producer = SimpleNamespace(_partitioner=DefaultPartitioner())
    keys = [f"user-{i}".encode() for i in range(500)] + [b"", "ü-ß".encode()]
    for partitions in ([0, 1, 2], list(range(6)), list(range(7))):
        for _ in range(2):  # once computed, once remembered
            assert [partition_by_key(producer, k, partitions) for k in keys] == [
                DefaultPartitioner()(k, partitions, partitions) for k in keys]


def test_remembered_keys_are_bounded(monkeypatch) -> None:
    monkeypatch.setattr(batched_send, "MAX_KEY_HASHES", 10)
    monkeypatch.setattr(batched_send, "_KEY_HASHES", {})
    producer = SimpleNamespace(_partitioner=DefaultPartitioner())
    for i in range(25):
        partition_by_key(producer, f"k{i}".encode(), [0, 1, 2])
        assert len(batched_send._KEY_HASHES) <= 10


def test_another_partitioner_is_asked_every_time() -> None:
    calls = []

    def last_partition(key, all_partitions, available):
        calls.append(key)
        return all_partitions[-1]

    producer = SimpleNamespace(_partitioner=last_partition)
    assert [partition_by_key(producer, b"u", [0, 1, 2]) for _ in range(3)] == [2, 2, 2]
    assert calls == [b"u"] * 3
