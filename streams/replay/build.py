"""`rapport replay`: a new projection version built from the log or an archive (docs/replay.md).

The parent takes the snapshot, opens the tables and prepares the worker state while the shards
(`streams.replay.shards`) read and fold; it writes the interactions while they fold, then the
relationships, the worker state and the build record.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from events.models import epoch_ms
from projections.policy import Policy
from projections.store import SqlReader
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry
from streams import versions
from streams.archive import Snapshot, archive_size, read_archive, read_log, take_snapshot
from streams.replay import native as native_core
from streams.replay.arrow import stamped
from streams.replay.interfaces import NoProgress, Progress, ReplayError, TableWriter
from streams.replay.lease import Claim, Renewing
from streams.replay.recalculation import (
    Outcome,
    Recalculation,
    fold_parallelism,
    policies_from,
)
from streams.replay.shards import Overlap, Shards, partition_shares
from streams.replay.worker_state import prepare_worker_state, seed_worker_state
from streams.replay.writers import WorkerWriter, wait_for_rows, writer_for

T = TypeVar("T")


@dataclass
class ReplayResult:
    version: int
    build: str
    source: str
    events: int
    interactions: int
    duplicates: int
    links: int
    relationships: int
    seconds: float
    through_worker: bool
    seeded: bool
    snapshot: dict[str, Any] | None
    tables: dict[str, int]


def next_version(settings: Settings, reader: SqlReader | None = None) -> int:
    """One more than every version known here (tables, the log, the running one)."""
    known = {versions.active_version(settings)}
    if reader is not None:
        rows = reader.query(
            "SELECT name, comment FROM system.tables WHERE database = {db:String}",
            {"db": settings.clickhouse_database},
        ).rows
        for name, comment in rows:
            found = versions.VERSIONED_TABLE.match(str(name))
            if found:
                known.add(int(found.group(2)))
            parsed = versions.parse_comment(str(comment or ""))
            if parsed:
                known.add(parsed[0])
    return max(known) + 1


def replay(
    settings: Settings,
    registry: WorkspaceRegistry,
    version: int,
    source: Path | None = None,
    workspaces: Collection[str] | None = None,
    progress: Progress | None = None,
    timeout_s: float = 600.0,
) -> ReplayResult:
    """Recalculate the log (or an archive) into projection version `version`."""
    progress = progress or NoProgress()
    if version < 1:
        raise ReplayError("versions are numbered from 1")
    running = versions.active_version(settings)
    if version == running:
        raise ReplayError(
            f"version {version} is the version the worker runs; replay into another one "
            f"(e.g. --to-version {running + 1})"
        )
    build = uuid.uuid4().hex[:12]
    # Millions of long-lived objects and no cycles: the cyclic collector would walk them all,
    # again and again, for nothing (it doubled the time of a 500,000-event replay).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _replay(settings, registry, version, source, workspaces, progress, timeout_s, build)
    finally:
        if collecting:
            gc.enable()


def _replay(
    settings: Settings,
    registry: WorkspaceRegistry,
    version: int,
    source: Path | None,
    workspaces: Collection[str] | None,
    progress: Progress,
    timeout_s: float,
    build: str,
) -> ReplayResult:
    started = time.perf_counter()
    snapshot: Snapshot | None = None
    policy_of = policies_from(registry)
    if source is not None:
        progress.phase(f"reading {source.name}", archive_size(source))
        calc, read = _one_process(settings, workspaces)
        for batch in read_archive(source):
            _read(calc, read, batch)
            progress.advance(len(batch))
        outcome = _finish(calc, read, policy_of, progress)
        return _write(settings, version, build, outcome, None, workspaces, source, progress,
                      timeout_s, started)  # fmt: skip
    snapshot = take_snapshot(settings)
    parts = fold_parallelism()
    if parts > 1 and len(partition_shares(snapshot, parts)) > 1:
        writer: TableWriter | None = None
        claim: Claim | None = None
        preparing: _Background | None = None
        outer = progress
        shards = Shards(settings, snapshot, workspaces, policy_of, parts)
        try:
            progress.phase("reading rapport.events", snapshot.total)
            # The parent waits for the shards meanwhile: it claims the version, makes the
            # worker state's topics (in a thread) and the tables.
            writer = writer_for(settings)
            claim = Claim(writer, version, build)
            progress = Renewing(outer, claim)
            renew = claim.renew
            if not workspaces:
                preparing = _Background(prepare_worker_state, settings, version)
            writer.prepare(version, build)
            shards.read_all(progress)
            # The shards produce their relationships' table records themselves, once the
            # worker state's topics exist (made while they read).
            making_topics, preparing = preparing, None
            topic = (
                None if making_topics is None else making_topics.result(renew)[1]["relationships"]
            )
            try:
                outcome, count = shards.run(
                    policy_of,
                    writer,
                    versions.versioned_table("interactions", version),
                    progress,
                    changelog_topic=topic,
                )
            except Overlap:  # replayed in one process instead, a build of its own
                shards.close()
                claim.end()
                claim = None
                writer.close()
                writer = None
                return _replay_one(settings, snapshot, workspaces, policy_of, version,
                                   uuid.uuid4().hex[:12], outer, timeout_s, started)  # fmt: skip
            return _write(settings, version, build, outcome, snapshot, workspaces, None,
                          progress, timeout_s, started, writer=writer,
                          interactions_written=count, preparing=making_topics)  # fmt: skip
        except BaseException as exc:
            if preparing is not None:  # never leave it running; never lose its error
                try:
                    preparing.result()
                except BaseException as also:
                    exc.add_note(f"the worker state failed too: {also!r}")
            raise
        finally:
            shards.close()
            if claim is not None:
                claim.end()
            if writer is not None:
                writer.close()
    return _replay_one(settings, snapshot, workspaces, policy_of, version, build, progress,
                       timeout_s, started)  # fmt: skip


def _replay_one(
    settings: Settings,
    snapshot: Snapshot,
    workspaces: Collection[str] | None,
    policy_of: Callable[[str], Policy],
    version: int,
    build: str,
    progress: Progress,
    timeout_s: float,
    started: float,
) -> ReplayResult:
    """The log read by this process alone (one core, or shards that are not disjoint)."""
    calc, parts = _one_process(settings, workspaces)
    progress.phase("reading rapport.events", snapshot.total)

    def handle(batch: list[tuple[bytes | None, bytes]]) -> None:
        _read(calc, parts, batch)
        progress.advance(len(batch))

    read_log(settings, snapshot, handle)
    outcome = _finish(calc, parts, policy_of, progress)
    return _write(settings, version, build, outcome, snapshot, workspaces, None, progress,
                  timeout_s, started)  # fmt: skip


def _one_process(
    settings: Settings, workspaces: Collection[str] | None
) -> tuple[Recalculation, list[Any]]:
    """The recalculation a one-process replay reads into: with the native core where it is
    built (and `RAPPORT_REPLAY_NATIVE` allows), its rows as Arrow tables as they come (the
    list); else the Python decoder's."""
    flat_rows = native_core.in_use(settings.replay_native)
    return Recalculation(workspaces, flat_rows=flat_rows, native=settings.replay_native), []


def _read(calc: Recalculation, parts: list[Any], batch: list[tuple[bytes | None, bytes]]) -> None:
    calc.add_records(batch)
    if calc.folds_natively:
        made = calc.take_arrow()
        if made is not None:
            parts.append(made)


def _finish(
    calc: Recalculation, parts: list[Any], policy_of: Callable[[str], Policy], progress: Progress
) -> Outcome:
    if calc.folds_natively:
        return calc.finish_natively(policy_of, parts, progress)
    return calc.finish(policy_of, progress, processes=fold_parallelism())


def _write(
    settings: Settings,
    version: int,
    build: str,
    outcome: Outcome,
    snapshot: Snapshot | None,
    workspaces: Collection[str] | None,
    source: Path | None,
    progress: Progress,
    timeout_s: float,
    started: float,
    writer: TableWriter | None = None,
    interactions_written: int | None = None,
    preparing: _Background | None = None,
) -> ReplayResult:
    """Write the versioned tables (the interactions unless already written), the worker state
    of the version (in a thread, while ClickHouse writes) and the build record. Without a
    `writer`, it opens one and claims the version first."""
    owned = writer is None
    claim: Claim | None = None
    seeded = snapshot is not None and not workspaces
    seeding: _Background | None = None

    def tick() -> None:  # while it waits: the progress renews the claim on the version
        progress.advance(0)

    try:
        if writer is None:
            writer = writer_for(settings)
            claim = Claim(writer, version, build)
            progress = Renewing(progress, claim)
            writer.prepare(version, build)
        now_ms = epoch_ms(datetime.now(UTC))
        rel_table = versions.versioned_table("relationships", version)
        int_table = versions.versioned_table("interactions", version)
        if seeded:
            assert snapshot is not None

            def seed() -> dict[str, Any]:
                prepared = preparing.result() if preparing is not None else None
                return seed_worker_state(settings, version, outcome, snapshot, prepared)

            seeding, preparing = _Background(seed), None
        progress.phase("writing " + rel_table, outcome.relationships)
        if outcome.views:
            writer.write(rel_table, outcome.relationship_rows(now_ms), progress)
        for data in outcome.relationship_tables:
            writer.write_arrow(rel_table, stamped(data, now_ms), progress)
        interactions = interactions_written
        if interactions is None:
            interactions = outcome.interaction_count
            progress.phase("writing " + int_table, interactions)
            if outcome.interaction_rows:
                writer.write(int_table, outcome.interaction_rows, progress)
            for data in outcome.interaction_tables:
                writer.write_arrow(int_table, data, progress)
        progress.phase("waiting for ClickHouse", None)
        tables = wait_for_rows(
            writer.reader(),
            settings.clickhouse_database,
            {rel_table: outcome.relationships, int_table: interactions},
            timeout_s,
            tick,
        )
        detail: dict[str, Any] = {
            "build": build,
            "source": "kafka" if source is None else str(source),
            "workspaces": sorted(workspaces) if workspaces else None,
            "events": outcome.events,
            "relationships": outcome.relationships,
            "interactions": interactions,
            "policies": {w: p.version for w, p in sorted(outcome.policies.items())},
            "snapshot": snapshot.to_json() if snapshot else None,
            "seeded": seeded,
        }
        if seeding is not None:
            produced = outcome.changelog_produced  # by the shards, while they folded
            remaining = len(outcome.changelog) + len(outcome.identities)
            progress.phase("worker state", produced + remaining)
            progress.advance(produced)
            detail.update(seeding.result(tick))
            progress.advance(remaining)
            seeding = None
        writer.record(version, "built", versions.worker_id_for(settings.worker_id, version), detail)
    except BaseException as exc:
        for running in (seeding, preparing):  # never leave it producing; never lose its error
            if running is not None:
                try:
                    running.result()
                except BaseException as also:
                    exc.add_note(f"the worker state failed too: {also!r}")
        raise
    finally:
        if claim is not None:
            claim.end()
        if owned and writer is not None:
            writer.close()
    return ReplayResult(
        version=version,
        build=build,
        source="kafka" if source is None else str(source),
        events=outcome.events,
        interactions=outcome.interactions,
        duplicates=outcome.duplicates,
        links=outcome.links,
        relationships=outcome.relationships,
        seconds=time.perf_counter() - started,
        through_worker=isinstance(writer, WorkerWriter),
        seeded=seeded,
        snapshot=snapshot.to_json() if snapshot else None,
        tables=tables,
    )


class _Background:
    """A call in a thread of its own; `result()` joins it and raises what it raised."""

    def __init__(self, call: Callable[..., T], *args: Any) -> None:
        import threading

        self._out: dict[str, Any] = {}

        def run() -> None:
            try:
                self._out["value"] = call(*args)
            except BaseException as exc:
                self._out["error"] = exc

        self._thread = threading.Thread(target=run, name="rapport-replay-state", daemon=True)
        self._thread.start()

    def result(self, tick: Callable[[], None] | None = None) -> Any:
        """Its value, once it ends; `tick` is called about every second meanwhile (a long
        wait must not let the replay's claim on its version lapse)."""
        self._thread.join(None if tick is None else 1.0)
        while tick is not None and self._thread.is_alive():
            tick()
            self._thread.join(1.0)
        if "error" in self._out:
            raise self._out["error"]
        return self._out.get("value")
