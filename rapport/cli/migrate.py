"""`rapport migrate`: apply the ClickHouse schema migrations (the worker also does at start)."""

from __future__ import annotations

import typer
from rich.table import Table

from projections import migrations
from projections.store import ClickHouseStore, StoreUnavailable, WorkerQueryClient, is_embedded
from rapport.cli.common import console, fail, settings
from rapport.stack import Stack


def register(app: typer.Typer) -> None:
    @app.command("migrate")
    def migrate_cmd(
        status_only: bool = typer.Option(
            False, "--status", help="only list the migrations and whether they ran"
        ),
    ) -> None:
        """Apply the ClickHouse schema migrations that have not run yet, in order."""
        s = settings()
        if is_embedded(s.clickhouse_url) and Stack(s).worker_running():
            # The worker owns the embedded engine and migrated it when it started.
            reader = WorkerQueryClient(s.worker_url)
            try:
                rows = reader.query(
                    f"SELECT version, max(applied_at) FROM {s.clickhouse_database}"
                    ".schema_migrations GROUP BY version ORDER BY version"
                ).rows
            except StoreUnavailable as exc:
                fail(str(exc))
            done = {int(v): str(at) for v, at in rows}
            _print([(m.version, m.name, done.get(m.version), False) for m in migrations.MIGRATIONS])
            missing = [m.version for m in migrations.MIGRATIONS if m.version not in done]
            if missing:
                fail(f"the running worker has not applied {missing}; restart it to migrate")
            console.print("the running worker owns the embedded engine and applied them at start")
            return
        try:
            store = ClickHouseStore(s.clickhouse_url, s.clickhouse_database)
        except StoreUnavailable as exc:
            fail(str(exc))
        try:
            ran = [] if status_only else store.migrate()
            states = migrations.status(store.client, s.clickhouse_database)
        except Exception as exc:
            fail(f"migration failed: {exc}")
        finally:
            store.close()
        _print(
            [
                (m.version, m.name, str(m.applied_at) if m.applied_at else None, m.changed)
                for m in states
            ]
        )
        console.print(
            f"applied {len(ran)} migration(s): {', '.join(map(str, ran))}"
            if ran
            else "schema up to date"
            if all(m.applied_at for m in states)
            else "pending migrations (run without --status)"
        )


def _print(rows: list[tuple[int, str, str | None, bool]]) -> None:
    table = Table("version", "migration", "applied at (UTC)")
    for version, name, at, changed in rows:
        table.add_row(
            str(version), name, (at or "pending") + (" (changed since)" if changed else "")
        )
    console.print(table)
