"""Replay throughput end to end (log -> reducers -> ClickHouse) against the in-memory fold.

In the same run, on the same events:
  fold (models):   `projections.relationship.fold` over the decoded `Interaction` models, in log
                   order (what the live path computes, one event at a time);
  fold (touches):  `apply_all` per relationship over its sorted touches (the replay's own fold,
                   nothing else: no Kafka, no decoding, no ClickHouse);
  replay:          `streams.replay.replay` from a private real broker's `rapport.events` (8
                   partitions) into `relationships_v2` / `interactions_v2` of the embedded engine
                   (no worker running, so it writes directly), plus the Faust state of version
                   2 (changelogs and offsets), timed from start to the recorded build.
Events: the real CollegeMsg messages as X DMs of a workspace owning the 20 most active students,
repeated under several workspaces (as bench/bench_worker.py), only those with a contact.

    .venv/bin/python bench/bench_replay.py [--events 500000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_worker import top_users
from bench.common import private_broker, rate
from events.ids import event_id
from events.models import Interaction, dump_event, parse_event
from projections.policy import DEFAULT_POLICY
from projections.relationship import (
    RelationshipState,
    apply_all,
    fold,
    touch_from_doc,
)
from rapport.workspaces import WorkspaceRegistry
from streams.eventlog import append_records
from streams.keys import event_key
from streams.replay import replay
from streams.topics import ensure_topics
from tests.datasets import collegemsg_interactions


def records(count: int) -> list[tuple[bytes, bytes]]:
    """(key, JSON) of bench_worker's events: copy n is workspace `bench<n>`, same ids scheme."""
    base = [
        e
        for e in collegemsg_interactions(top_users(20), workspace="bench0")
        if e.contact is not None and e.direction.counts
    ]
    out: list[tuple[bytes, bytes]] = []
    copy = 0
    while len(out) < count:
        workspace = f"bench{copy}"
        for e in base:
            event = e.model_copy(
                update={
                    "workspace": workspace,
                    "event_id": event_id(workspace, "x", f"dm:{e.object_id}"),
                }
            )
            out.append((event_key(event), dump_event(event)))
            if len(out) == count:
                break
        copy += 1
    return out


class Phases:
    """Progress that records how long each phase of the replay took."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []
        self._name = ""
        self._start = 0.0

    def phase(self, name: str, total: int | None) -> None:
        self._close()
        self._name, self._start = name, time.perf_counter()

    def advance(self, n: int) -> None:
        pass

    def _close(self) -> None:
        if self._name:
            self.times.append((self._name, time.perf_counter() - self._start))
            self._name = ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500_000)
    args = parser.parse_args()
    t = time.perf_counter()
    data = records(args.events)
    workspaces = sorted({json.loads(v)["workspace"] for _, v in data[:: max(1, len(data) // 50)]})
    print(f"generated {len(data):,} events in {time.perf_counter() - t:.1f} s", flush=True)

    # The in-memory folds, on the same events.
    gc.collect()
    models = [parse_event(v) for _, v in data]
    interactions = [m for m in models if isinstance(m, Interaction)]
    gc.freeze()
    t = time.perf_counter()
    states = fold(interactions)
    fold_models = time.perf_counter() - t
    print(f"fold (models): {rate(len(data), fold_models)} ({len(states):,} relationships)")
    del states, models, interactions
    gc.unfreeze()
    gc.collect()
    groups: dict[tuple[str, str], list] = {}  # type: ignore[type-arg]
    for _, value in data:
        doc = json.loads(value)
        contact = doc["contact"]
        key = (doc["workspace"], f"{contact['platform']}:{contact['user_id']}")
        groups.setdefault(key, []).append(touch_from_doc(doc))
    for touches in groups.values():
        touches.sort(key=lambda touch: (touch.at, touch.event_id))
    t = time.perf_counter()
    for (workspace, contact), touches in groups.items():
        fresh = RelationshipState(workspace=workspace, contact_id=contact)
        apply_all(fresh, touches, DEFAULT_POLICY)
    fold_touches = time.perf_counter() - t
    print(f"fold (touches): {rate(len(data), fold_touches)}", flush=True)
    del groups
    gc.collect()

    with private_broker(partitions=8) as (settings, _root):
        settings.workspaces.write_text("".join(f"[workspaces.{w}]\n" for w in workspaces))
        ensure_topics(settings)
        t = time.perf_counter()
        append_records(settings, settings.topic_events, data, timeout_s=300)
        print(f"produced {len(data):,} events in {time.perf_counter() - t:.1f} s", flush=True)
        del data
        gc.collect()
        registry = WorkspaceRegistry.load(settings.workspaces)
        phases = Phases()
        t = time.perf_counter()
        result = replay(settings, registry, 2, progress=phases)
        total = time.perf_counter() - t
        phases._close()
        print(f"replay: {rate(result.events, total)} end to end ({total:.1f} s)")
        for name, seconds in phases.times:
            print(f"  {name:<28} {seconds:6.1f} s")
        print(f"  relationships {result.relationships:,}, tables {result.tables}")
        print(f"ratio replay / fold (models): {fold_models / total:.2f}x")
        print(f"ratio replay / fold (touches): {fold_touches / total:.2f}x")
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpus; "
        f"{args.events:,} events"
    )


if __name__ == "__main__":
    main()
