"""Rapport's own Kafka topics, created explicitly (the broker never auto-creates).

`rapport.events` is keyed by (workspace, contact identity) and co-partitioned with the identity
table; `rapport.relationship-events` (the same events re-keyed by resolved contact) with the
relationship table; `rapport.relationships` carries each relationship's latest view. All share
one partition count: table changelogs follow their source topic and Faust crash-loops on a
mismatch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rapport.settings import Settings
from streams.replay.rows import replay_topic

FOREVER = "-1"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic Rapport writes, with its partitions and retention."""
    n = settings.partitions
    big = str(8 * 1024 * 1024)  # a 1 MiB body is ~1.4 MiB as base64 inside its envelope
    return [
        TopicSpec(settings.topic_raw, n, {"retention.ms": FOREVER, "max.message.bytes": big}),
        TopicSpec(settings.topic_events, n, {"retention.ms": FOREVER}),
        TopicSpec(settings.topic_relationship_events, n, {"retention.ms": str(7 * 86_400_000)}),
        TopicSpec(
            settings.topic_deadletters, n, {"retention.ms": FOREVER, "max.message.bytes": big}
        ),
        # rows of versioned tables from `rapport replay` to the worker (streams/replay/sink.py)
        TopicSpec(replay_topic(settings), n, {"retention.ms": str(7 * 86_400_000)}),
    ]


class TopicMismatch(RuntimeError):
    """A topic exists with a partition count other than the settings say."""


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create missing topics; verify existing ones. Returns the names created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        request_timeout_ms=int(timeout_s * 1000),
        client_id="rapport-admin",
    )
    try:
        specs = topic_specs(settings)
        existing = set(admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created: list[str] = []
        if missing:
            new = [
                NewTopic(s.name, s.partitions, settings.replication_factor, topic_configs=s.config)
                for s in missing
            ]
            try:
                admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
                created = [s.name for s in missing]
            except TopicAlreadyExistsError:
                created = []  # another process won the race; verified below
        # A topic just created may describe with no partitions until its metadata propagates.
        deadline = time.monotonic() + timeout_s
        while True:
            described = admin.describe_topics([s.name for s in specs])
            counts = {d.get("name", d.get("topic")): len(d["partitions"]) for d in described}
            if all(counts.get(s.name) for s in specs) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for spec in specs:
            have = counts.get(spec.name)
            if have is not None and have != spec.partitions:
                raise TopicMismatch(
                    f"topic {spec.name} has {have} partitions but RAPPORT_PARTITIONS is "
                    f"{spec.partitions}; co-partitioned topics must agree"
                )
        return created
    finally:
        admin.close()
