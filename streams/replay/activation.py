"""Activation, the swap: a built version made the one readers see and the worker runs."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from projections.store import ClickHouseStore
from rapport.settings import Settings
from streams import versions
from streams.kafka_admin import commit_offsets, committed, current_ends, group_state
from streams.replay import lease
from streams.replay.interfaces import Beats, NoProgress, Progress, ReplayError
from streams.replay.lease import STALE_S, Claim, Lease
from streams.replay.rows import replay_topic
from streams.replay.writers import WorkerWriter, post_to_worker, worker_answers

if TYPE_CHECKING:
    from rapport.stack import Stack


def _history(settings: Settings) -> list[dict[str, Any]]:
    from rapport.stack import open_reader

    reader = open_reader(settings)
    try:
        exists = reader.query(
            f"EXISTS TABLE {settings.clickhouse_database}.{versions.LOG_TABLE}"
        ).rows
        if not exists or not int(exists[0][0]):
            return []
        return reader.query(
            f"SELECT version, event, worker_id, detail FROM {settings.clickhouse_database}."
            f"{versions.LOG_TABLE} ORDER BY at"
        ).dicts()
    finally:
        if isinstance(reader, ClickHouseStore):
            reader.close()


def _tables(settings: Settings) -> dict[str, tuple[int, str | None]]:
    from rapport.stack import open_reader

    reader = open_reader(settings)
    try:
        rows = reader.query(
            "SELECT name, comment FROM system.tables WHERE database = {db:String}",
            {"db": settings.clickhouse_database},
        ).rows
    finally:
        if isinstance(reader, ClickHouseStore):
            reader.close()
    out = {}
    for name, comment in rows:
        name = str(name)
        if name in versions.PROJECTED or versions.VERSIONED_TABLE.match(name):
            parsed = versions.parse_comment(str(comment or ""))
            if parsed is None:
                found = versions.VERSIONED_TABLE.match(name)
                parsed = (int(found.group(2)) if found else 1, None)
            out[name] = parsed
    return out


def check_activatable(settings: Settings, version: int) -> None:
    """Refuse versions that are not built completely, or were built without a worker state."""
    tables = _tables(settings)
    if tables.get("relationships", (1, None))[0] == version:
        return  # already active: the activation only makes sure its worker runs
    name = versions.versioned_table("relationships", version)
    if name not in tables or tables[name][0] != version:
        raise ReplayError(f"version {version} is not built; run rapport replay --to-version N")
    build = tables[name][1]
    if build is None:
        return  # a version that ran before (its worker's state and offsets are its own)
    for row in _history(settings):
        detail = json.loads(row["detail"] or "{}")
        mine = int(row["version"]) == version and detail.get("build") == build
        if mine and row["event"] == "built":
            if not detail.get("seeded"):
                raise ReplayError(
                    f"version {version} was built from an archive or for some workspaces only: "
                    "it has no worker state and cannot be activated; replay the log into it"
                )
            return
    raise ReplayError(f"version {version} (build {build}) did not finish building; replay again")


@dataclass
class Activation:
    version: int
    previous: int
    worker_restarted: bool
    offsets: dict[str, int]
    seconds: float


class _DirectBeats:
    """The lease in ClickHouse opened here for each beat (no worker owns the engine)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def beat(
        self, version: int, build: str, holder: str, done: bool = False, lapse_s: float = STALE_S
    ) -> Lease | None:
        database = self.settings.clickhouse_database
        store = ClickHouseStore(self.settings.clickhouse_url, database)
        try:
            store.migrate()  # a fresh embedded directory has no database yet
            return lease.beat(store, database, version, build, holder, done, lapse_s)
        finally:
            store.close()


def activate(settings: Settings, version: int, progress: Progress | None = None) -> Activation:
    """Make `version` the one readers see and the worker runs (docs/replay.md, "swap")."""
    from rapport.stack import Stack

    progress = progress or NoProgress()
    started = time.perf_counter()
    stack = Stack(settings)
    managed = stack.worker_running()
    if not managed and worker_answers(settings.worker_url):
        raise ReplayError(
            f"a worker answers at {settings.worker_url} but was not started by `rapport up`: "
            f"stop it, run this again, then start it with RAPPORT_PROJECTION_VERSION={version}"
        )
    # Held while it runs: a replay of this version must not drop the tables it exchanges.
    beats: Beats = WorkerWriter(settings) if managed else _DirectBeats(settings)
    claim = Claim(beats, version, f"{lease.ACTIVATION}{uuid.uuid4().hex[:8]}", lease.ACTIVATION_S)
    try:
        return _activate(settings, version, progress, stack, managed, started)
    finally:
        claim.end()  # through the worker of the new version, when it runs one


def _activate(
    settings: Settings,
    version: int,
    progress: Progress,
    stack: Stack,
    managed: bool,
    started: float,
) -> Activation:
    from rapport.process import stop_pid_file

    check_activatable(settings, version)
    previous = versions.active_version(settings)
    new_group = versions.worker_id_for(settings.worker_id, version)
    old_group = versions.worker_id_for(settings.worker_id, previous)
    if managed:
        progress.phase(f"stopping the worker of version {previous}", None)
        stop_pid_file(settings.run_dir / "worker.pid", timeout_s=60.0)
    moved: dict[tuple[str, int], int] = {}
    if new_group != old_group:
        # Raw envelopes and dead letters: continue where the worker that ran stopped. Replay
        # records: only what is produced from now on (never another version's rows).
        handed = committed(settings, old_group)
        for (topic, partition), offset in handed.items():
            if topic in (settings.topic_raw, settings.topic_deadletters):
                moved[(topic, partition)] = offset
        moved.update(current_ends(settings, [replay_topic(settings)]))
        if group_state(settings, new_group) not in ("Empty", "Dead"):
            raise ReplayError(f"consumer group {new_group} is active: is a worker running?")
        commit_offsets(settings, new_group, moved)
    versions.persist_version(settings, version, previous)
    if managed:
        progress.phase(f"starting the worker of version {version}", None)
        stack.start_services()
        answer = post_to_worker(
            f"{settings.worker_url}/projections/swap", {"version": version}, 300
        )
        previous = int(answer.get("previous") or previous)
    else:
        progress.phase("exchanging tables", None)
        store = ClickHouseStore(settings.clickhouse_url, settings.clickhouse_database)
        try:
            store.migrate()
            versions.ensure_active(store, settings.clickhouse_database, version, new_group)
        finally:
            store.close()
    return Activation(
        version=version,
        previous=previous,
        worker_restarted=managed,
        offsets={f"{t}:{p}": o for (t, p), o in sorted(moved.items())},
        seconds=time.perf_counter() - started,
    )
