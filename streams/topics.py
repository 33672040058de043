"""Create the pipeline's topics up front with the configured partition count.

The broker would auto-create them with one partition, and Faust refuses a table whose source topic
has a different partition count (co-partitioning by user id), so creating them is part of startup.
"""
from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from .settings import Settings

log = logging.getLogger(__name__)


def ensure_topics(bootstrap: str, partitions: dict[str, int], compacted: frozenset[str] = frozenset()) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, num_partitions=n, replication_factor=1,
                            topic_configs={"cleanup.policy": "compact"} if name in compacted else {})
                   for name, n in partitions.items() if name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:  # another worker won the race
                pass
            log.info("created topics %s", [t.name for t in missing])
        # A topic another worker has just created can describe with 0 partitions for a moment.
        for _attempt in range(50):
            described = {d.get("name", d.get("topic")): len(d["partitions"])
                         for d in admin.describe_topics(list(partitions))}
            if all(described.get(name) for name in partitions):
                break
            time.sleep(0.1)
    finally:
        admin.close()
    for name, n in partitions.items():
        if name in described and described[name] != n and not name.endswith(".dlq"):
            raise RuntimeError(f"topic {name} has {described[name]} partitions, expected {n}: "
                               "source topics and the users table must be co-partitioned")


# The worker's tables (streams/app.py); Faust names their changelogs "<app_id>-<table>-changelog".
TABLES = ("users", "progress")


def internal_topics(settings: Settings) -> dict[str, int]:
    """Topics Faust would otherwise create itself at startup, through its producer's client.

    Created here up front, like the pipeline's own topics: a worker that created the changelogs itself was
    seen (twice in ~10 scaling-test runs) never to get its first changelog writes acknowledged.
    """
    topics = {f"{settings.app_id}-{t}-changelog": settings.partitions for t in TABLES}
    topics[f"{settings.app_id}-__assignor-__leader"] = 1
    return topics


def pipeline_topics(settings: Settings) -> dict[str, int]:
    topics = {t: settings.partitions for t in settings.source_topics}
    topics[settings.intents_topic] = settings.partitions
    topics[settings.dlq_topic] = 1
    return topics
