"""Kafka administration for the replay and the worker: consumer groups, their offsets, and
compacted topics (kafka-python's admin client)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rapport.settings import Settings
from streams.replay.interfaces import ReplayError

T = TypeVar("T")


def _admin(settings: Settings) -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="rapport-replay")


def _with_admin(settings: Settings, call: Callable[[Any], T], timeout_s: float = 60.0) -> T:
    """Run an admin call, retrying while the group coordinator is not ready (a fresh broker
    creates `__consumer_offsets` on the first group request)."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    while True:
        admin = _admin(settings)
        try:
            return call(admin)
        except KafkaError as exc:
            if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                raise
        finally:
            admin.close()
        time.sleep(0.5)


def group_state(settings: Settings, group: str) -> str:
    """The consumer group's state (Empty, Stable, ...; Dead when it does not exist)."""
    described = _with_admin(settings, lambda admin: admin.describe_groups([group]))
    info: Any = described.get(group) if isinstance(described, dict) else None
    if info is None and isinstance(described, list) and described:
        info = described[0]
    if info is None:
        return "Dead"
    if isinstance(info, dict):
        state = info.get("group_state") or info.get("state")
    else:
        state = getattr(info, "state", None)
    return str(state or "Dead")


def ensure_compacted_topics(
    settings: Settings, names: list[str], *, recreate: bool = False, timeout_s: float = 90.0
) -> None:
    """Compacted topics with the co-partitioned count, each partition with a leader.

    `recreate` deletes them first (a rebuild must not inherit an earlier build's state).
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

    admin = _admin(settings)
    try:
        existing = set(admin.list_topics())
        if recreate:
            doomed = [n for n in names if n in existing]
            if doomed:
                with contextlib.suppress(UnknownTopicOrPartitionError):
                    admin.delete_topics(doomed)
            existing -= set(doomed)
        deadline = time.monotonic() + timeout_s
        todo = [n for n in names if n not in existing]
        while todo:
            topic = todo[0]
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            topic,
                            settings.partitions,
                            settings.replication_factor,
                            topic_configs={"cleanup.policy": "compact"},
                        )
                    ]
                )
                todo.pop(0)
            except TopicAlreadyExistsError:
                if not recreate:
                    todo.pop(0)  # made meanwhile by someone else
                elif time.monotonic() > deadline:
                    raise ReplayError(f"topic {topic} could not be recreated") from None
                else:
                    time.sleep(0.5)  # still being deleted
        while True:  # wait until every partition has a leader
            described = admin.describe_topics(names)
            ready = all(
                len(d.get("partitions") or []) == settings.partitions
                and all(p.get("leader_id", p.get("leader", -1)) >= 0 for p in d["partitions"])
                for d in described
            )
            if ready or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        admin.close()


def commit_offsets(settings: Settings, group: str, offsets: dict[tuple[str, int], int]) -> None:
    from kafka.structs import OffsetAndMetadata, TopicPartition

    wanted = {
        TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in sorted(offsets.items())
    }
    result = _with_admin(settings, lambda admin: admin.alter_group_offsets(group, wanted))
    failed = {tp: err for tp, err in result.items() if getattr(err, "errno", 0)}
    if failed:
        raise ReplayError(f"could not commit offsets of group {group}: {failed}")


def committed(settings: Settings, group: str) -> dict[tuple[str, int], int]:
    found = _with_admin(settings, lambda admin: admin.list_group_offsets({group: None})).get(
        group, {}
    )
    return {(tp.topic, tp.partition): int(om.offset) for tp, om in found.items() if om.offset >= 0}


def current_ends(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:

    from streams.archive import end_offsets

    found = asyncio.run(end_offsets(settings.kafka_bootstrap, topics))
    return {(t, p): o for t, parts in found.items() for p, o in parts.items()}
