"""Privacy controls: keyed pseudonymization of user ids at ingest, and the right to erasure.

Pseudonymization (on when INTENTSTREAM_PSEUDONYM_KEY is set): right after a click is decoded, and after
the key check that compares the message key with the *clear* user id, the user id is replaced by
HMAC-SHA256(key, user_id). Everything downstream (the `users` table and its changelog, intents, logs,
the dashboard) only ever sees the pseudonym. Without the key nobody can map a pseudonym back to a user;
with it, a service that knows a clear id can compute the pseudonym to look it up.

Erasure (`intentstream forget USER`): a small record on the erasure topic, which has the same partition
count as the source topics, in the partition the producer's partitioner gives the *clear* user id. Faust
assigns co-partitioned topics together, so the worker that owns the user's clicks (and the table
partition holding the user's state) receives it, deletes the table key and thereby writes a changelog
tombstone: a restore from the changelog no longer brings the state back. The record carries only the
pseudonym (when pseudonymization is on), never the clear id.
"""
from __future__ import annotations

import hashlib
import hmac
import time

import orjson

PSEUDONYM_PREFIX = "p-"  # marks pseudonyms in intents and logs; 32 hex chars = 128 bits of the HMAC
_CACHE_MAX = 200_000


class Pseudonymizer:
    """user id -> "p-" + first 128 bits of HMAC-SHA256(key, user id), hex. Deterministic, keyed."""

    def __init__(self, key: str | bytes):
        if not key:
            raise ValueError("pseudonymization needs a non-empty key (INTENTSTREAM_PSEUDONYM_KEY)")
        raw = key.encode() if isinstance(key, str) else key
        self._base = hmac.new(raw, digestmod=hashlib.sha256)
        self._cache: dict[str, str] = {}  # clear ids stay in this process's memory only
        # Lets the worker check that `forget` was run with the same key (a wrong key would erase nothing).
        self.key_id = self._digest("\x00intentstream-key-id")[:8]

    def _digest(self, user_id: str) -> str:
        h = self._base.copy()
        h.update(user_id.encode())
        return h.hexdigest()

    def __call__(self, user_id: str) -> str:
        p = self._cache.get(user_id)
        if p is None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            p = self._cache[user_id] = PSEUDONYM_PREFIX + self._digest(user_id)[:32]
        return p


def pseudonymizer_from_key(key: str) -> Pseudonymizer | None:
    return Pseudonymizer(key) if key else None


def kafka_partition(key: bytes, n_partitions: int) -> int:
    """The partition Kafka's default partitioner (Java, kafka-python, aiokafka: murmur2) picks for `key`."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % n_partitions


# ------------------------------------------------------------------------------------------ erasure records
def erasure_request(user_id: str, pseudonymizer: Pseudonymizer | None, n_partitions: int) -> tuple[int, bytes, bytes]:
    """(partition, key, value) of the erasure record for a clear user id.

    Partition: where the clear id's clicks went. Key and value: the id the state is stored under.
    """
    stored = pseudonymizer(user_id) if pseudonymizer else user_id
    value = {"action": "forget", "user": stored, "requested_at": int(time.time() * 1000),
             "key_id": pseudonymizer.key_id if pseudonymizer else None}
    return kafka_partition(user_id.encode(), n_partitions), stored.encode(), orjson.dumps(value)


def parse_erasure(value: bytes, pseudonymizer: Pseudonymizer | None) -> tuple[str | None, str]:
    """(table key to delete or None, outcome) for an erasure record as the worker sees it."""
    try:
        msg = orjson.loads(value)
        user = msg["user"]
        if msg.get("action") != "forget" or not isinstance(user, str) or not user:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return None, "malformed"
    key_id = msg.get("key_id")
    mine = pseudonymizer.key_id if pseudonymizer else None
    if key_id != mine:  # forget ran with another key (or with none): the stored id would not match
        return None, "key_mismatch"
    return user, "ok"


def loggable(user_id: str) -> str:
    """A user id fit for a log line: pseudonyms as they are, anything else hashed (never in clear)."""
    if user_id.startswith(PSEUDONYM_PREFIX):
        return user_id
    return "h-" + hashlib.sha256(user_id.encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------ the worker side
def install_erasure(app, settings, users, ops, event_context, on_erased=None, users_lock=None) -> None:
    """An agent on the erasure topic: deletes the user's state, which writes the changelog tombstone
    (`users` is a streams.durable_table.DurableTable)."""
    import contextlib
    import logging

    log = logging.getLogger(__name__)
    topic = app.topic(settings.erasure_topic_name, partitions=settings.partitions, key_serializer="raw",
                      value_serializer="raw")

    @app.agent(topic)
    async def erase(stream) -> None:
        async for event in stream.events():
            key, outcome = parse_erasure(event.value, ops.pseudonymize)
            if key is not None:
                # Under this event, so the table deletes in (and tombstones) the partition the user's
                # clicks and state live in: the erasure record was sent to the same partition number.
                async with users_lock or contextlib.nullcontext():  # not while the scorer holds loaded states
                    with event_context(event):
                        if users.get(key.encode()) is not None:
                            del users[key.encode()]
                            outcome = "erased"
                        else:
                            outcome = "absent"
                        if on_erased is not None:
                            on_erased(key)  # e.g. the worker's decoded-state cache
                    if outcome == "erased":
                        await users.confirm_changelog()  # the tombstone is in Kafka before this request is acked
            ops.metrics.erasures.labels(outcome).inc()
            log.info("erasure request for %s on partition %s: %s", loggable(key or "?"), event.message.partition,
                     outcome)
