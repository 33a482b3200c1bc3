"""`rapport replay`: recalculate the projections from the event log into a new version, and swap.

    rapport replay                       # build the next version from rapport.events
    rapport replay --to-version 3 --swap # build version 3, then make it the one readers see
    rapport replay --activate 2          # make an already built version active (also a roll back)
    rapport replay --from archive.ndjson --to-version 5 --workspace acme   # inspect an archive
    rapport replay --status              # the versions, which one is active, the log

See docs/replay.md for what readers see when, and how the live worker continues.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from projections.store import ClickHouseStore, StoreUnavailable
from rapport.cli.common import console, fail, settings, workspaces
from rapport.cli.progress import PhasedProgress
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry

if TYPE_CHECKING:
    from streams.replay.build import ReplayResult


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay_cmd(
        to_version: int | None = typer.Option(
            None,
            "--to-version",
            min=1,
            help="the version to build (default: one more than any known)",
        ),
        source: str = typer.Option(
            "kafka", "--from", help="kafka (the event log) or an archive FILE (rapport export)"
        ),
        swap: bool = typer.Option(
            False, "--swap", help="then make it active: readers switch, the worker restarts on it"
        ),
        workspace: list[str] = typer.Option(
            [], "--workspace", "-w", help="only these workspaces (an inspection build: no swap)"
        ),
        activate: int | None = typer.Option(
            None,
            "--activate",
            min=1,
            help="only make this built version active (no replay); a roll back",
        ),
        status: bool = typer.Option(False, "--status", help="list versions and exit"),
        timeout_s: float = typer.Option(600.0, "--timeout", help="seconds to wait for ClickHouse"),
    ) -> None:
        """Recalculate projections from the event log into a new table version; --swap to it."""
        from streams import versions

        s = settings()
        if status:
            _status(s)
            return
        if activate is not None:
            activate_version(s, activate)
            return
        if swap and workspace:
            fail("a swap needs every workspace's projections: drop --workspace", 2)
        path: Path | None = None
        if source != "kafka":
            path = Path(source)
            if not path.exists():
                fail(f"archive {path} not found", 2)
            if swap:
                fail(
                    "--swap needs a replay of the log (the worker continues from its offsets); "
                    "an archive builds tables to inspect",
                    2,
                )
        registry = workspaces(s)
        unknown = [w for w in workspace if w not in registry]
        if unknown:
            fail(f"unknown workspace(s): {', '.join(unknown)}", 2)
        result = build_version(s, registry, to_version, path, workspace or None, timeout_s)
        version = result.version
        if swap:
            activate_version(s, version)
        else:
            console.print(
                f"readers still see version {versions.active_version(s)}; "
                f"`rapport replay --activate {version}` switches them"
                if result.seeded
                else "an inspection build (archive or some workspaces): it cannot be activated"
            )


def build_version(
    s: Settings,
    registry: WorkspaceRegistry,
    version: int | None = None,
    path: Path | None = None,
    only: list[str] | None = None,
    timeout_s: float = 600.0,
) -> ReplayResult:
    """Replay the log (or an archive) into `version` (default: the next one) with a progress
    bar, and print what was built. Exits with the error when it cannot."""
    from streams import versions
    from streams.replay.build import next_version, replay
    from streams.replay.interfaces import ReplayError

    try:
        if version is None:
            from rapport.stack import open_reader

            reader = open_reader(s)
            version = next_version(s, reader)
            if isinstance(reader, ClickHouseStore):
                reader.close()
        console.print(
            f"replaying {'rapport.events' if path is None else path} into projection "
            f"version {version} (active: {versions.active_version(s)})"
        )
        with PhasedProgress("/s") as progress:
            result = replay(s, registry, version, path, only, progress, timeout_s)
    except (ReplayError, versions.VersionError, StoreUnavailable) as exc:
        fail(str(exc))
    rate = result.events / result.seconds if result.seconds else 0.0
    console.print(
        f"version {result.version} (build {result.build}): {result.events:,} events "
        f"({result.interactions:,} interactions, {result.duplicates:,} duplicates, "
        f"{result.links:,} identity link events) -> {result.relationships:,} relationships "
        f"in {result.seconds:.1f} s ({rate:,.0f} events/s)"
    )
    console.print(
        "rows sent through the worker (it owns the embedded engine)"
        if result.through_worker
        else "rows written directly"
    )
    console.print(f"tables: {json.dumps(result.tables)}")
    if result.seeded:
        console.print(
            f"worker state of version {result.version} written (changelogs, offsets at the "
            f"snapshot {json.dumps(result.snapshot['ends'] if result.snapshot else {})})"
        )
    return result


def activate_version(s: Settings, version: int) -> None:
    from streams import versions
    from streams.replay.activation import activate
    from streams.replay.interfaces import ReplayError

    try:
        with PhasedProgress() as progress:
            done = activate(s, version, progress)
    except (ReplayError, versions.VersionError, StoreUnavailable) as exc:
        fail(str(exc))
    console.print(
        f"version {done.version} is active (was {done.previous}) in {done.seconds:.1f} s; "
        + (
            "the worker restarted on it"
            if done.worker_restarted
            else "the next `rapport up` / `rapport worker` runs it"
        )
    )


def _status(s: Settings) -> None:
    from rapport.stack import open_reader
    from streams import versions
    from streams.replay import lease

    try:
        reader = open_reader(s)
        rows = reader.query(
            "SELECT name, comment, total_rows FROM system.tables WHERE database = {db:String} "
            "ORDER BY name",
            {"db": s.clickhouse_database},
        ).rows
        history = []
        exists = reader.query(f"EXISTS TABLE {s.clickhouse_database}.{versions.LOG_TABLE}").rows
        if exists and int(exists[0][0]):
            history = reader.query(
                f"SELECT at, version, event, worker_id, detail FROM {s.clickhouse_database}."
                f"{versions.LOG_TABLE} ORDER BY at"
            ).rows
        building = lease.builds(reader, s.clickhouse_database)
        if isinstance(reader, ClickHouseStore):
            reader.close()
    except StoreUnavailable as exc:
        fail(str(exc))
    table = Table(
        "table",
        "holds version",
        "build",
        "stored rows",
        caption="stored rows include replaced ones until ClickHouse merges them (reads use FINAL)",
    )
    for name, comment, total in rows:
        name = str(name)
        if name not in versions.PROJECTED and not versions.VERSIONED_TABLE.match(name):
            continue
        parsed = versions.parse_comment(str(comment or "")) or (
            1 if name in versions.PROJECTED else int(name.rsplit("_v", 1)[1]),
            None,
        )
        table.add_row(name, str(parsed[0]), parsed[1] or "", str(total or 0))
    console.print(table)
    console.print(
        f"the worker runs version {versions.active_version(s)} "
        f"(app id {versions.worker_id_for(s.worker_id, versions.active_version(s))})"
    )
    for held in building:
        console.print(f"being built now: {held.describe()}")
    if history:
        log = Table("at", "version", "event", "worker id", "detail")
        for at, version, event, worker_id, detail in history:
            log.add_row(str(at)[:19], str(version), str(event), str(worker_id), str(detail)[:80])
        console.print(log)
