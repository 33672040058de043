"""deploy/kafka/local_broker.py's pure parts (the broker itself is exercised by every integration test)."""
import base64
from unittest import mock
import uuid

from deploy.kafka import local_broker


def test_cluster_id_never_starts_with_a_dash():
    # 0xf8 as the first byte encodes to '-' in url-safe base64: the storage tool would take it for an option.
    dash_first = uuid.UUID(bytes=b"\xf8" + bytes(15))
    assert base64.urlsafe_b64encode(dash_first.bytes).decode().startswith("-")
    with mock.patch.object(local_broker.uuid, "uuid4", side_effect=[dash_first, uuid.UUID(int=1)]):
        cluster_id = local_broker.new_cluster_id()
    assert not cluster_id.startswith("-")
    assert len(cluster_id) == 22 and base64.urlsafe_b64decode(cluster_id + "==") == uuid.UUID(int=1).bytes


def test_free_port_pairs_avoid_the_ephemeral_range_and_each_other():
    ephemeral = local_broker._ephemeral_ports()
    ports = [local_broker.free_port_pair() for _ in range(20)]
    taken = [p for port in ports for p in (port, port + 1)]
    assert len(set(taken)) == len(taken)  # no pair overlaps another
    assert not any(p in ephemeral for p in taken)  # no client connection can be given one of them
    assert all(local_broker._can_bind(p) for p in taken)
