"""The Faust state of a new version: its tables' changelogs and its consumer offsets, written
before its worker ever runs, so that it continues from the replay's snapshot without a gap."""

from __future__ import annotations

import json
from typing import Any

from rapport.settings import Settings
from streams import versions
from streams.archive import Snapshot
from streams.eventlog import append_records
from streams.kafka_admin import (
    commit_offsets,
    current_ends,
    ensure_compacted_topics,
    group_state,
)
from streams.replay.interfaces import ReplayError
from streams.replay.recalculation import Outcome
from streams.replay.rows import replay_topic


def changelog_topics(worker_id: str) -> dict[str, str]:
    """The changelog topic of each Faust table of the app `worker_id` (Faust's naming)."""
    return {name: f"{worker_id}-{name}-changelog" for name in ("relationships", "identities")}


def prepare_worker_state(settings: Settings, version: int) -> tuple[str, dict[str, str]]:
    """Check that no worker of `version` runs, and make its changelog topics afresh (a rebuild
    must not inherit an earlier build's state). Returns its app id and changelog topics."""
    worker_id = versions.worker_id_for(settings.worker_id, version)
    state = group_state(settings, worker_id)
    if state not in ("Empty", "Dead"):
        raise ReplayError(
            f"consumer group {worker_id} is {state}: a worker of version {version} is running; "
            "stop it before rebuilding its version"
        )
    topics = changelog_topics(worker_id)
    ensure_compacted_topics(settings, list(topics.values()), recreate=True)
    return worker_id, topics


def seed_worker_state(
    settings: Settings,
    version: int,
    outcome: Outcome,
    snapshot: Snapshot,
    prepared: tuple[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Table changelogs and consumer offsets of the worker of `version` (not running yet). It
    runs in a thread while the tables are written; `_write` shows its phase.

    The relationship and identity tables hold exactly the replayed states, each record in the
    partition its key has in `rapport.events` (the default partitioner), which is the partition
    the live worker would have written it to. The group's offsets on `rapport.events` are the
    snapshot's ends: the worker of this version continues with the first event the replay did
    not read. Its other topics start at their ends now (what they hold was handled by the worker
    that runs now); `activate` moves them again when that worker has stopped.
    """
    worker_id, topics = prepared or prepare_worker_state(settings, version)
    relationships = outcome.changelog  # those the replay's shards did not produce themselves
    append_records(settings, topics["relationships"], relationships, timeout_s=120)
    identities = ((k.encode(), json.dumps(c).encode()) for k, c in outcome.identities.items())
    append_records(settings, topics["identities"], identities, timeout_s=120)
    others = [
        settings.topic_relationship_events,
        settings.topic_raw,
        settings.topic_deadletters,
        replay_topic(settings),
    ]
    offsets = current_ends(settings, others)
    offsets.update({(snapshot.topic, p): end for p, end in snapshot.ends.items()})
    commit_offsets(settings, worker_id, offsets)
    return {
        "worker_id": worker_id,
        "changelogs": list(topics.values()),
        "relationship_records": len(relationships) + outcome.changelog_produced,
    }
