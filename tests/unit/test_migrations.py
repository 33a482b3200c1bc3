"""Schema migrations on the real embedded engine: applied once, recorded, idempotent, upgrades."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from projections import migrations
from projections.migrations import m0001_initial
from projections.rows import interaction_row
from projections.schema import INTERACTION_COLUMNS, TABLES
from projections.store import ClickHouseStore
from rapport.settings import Settings
from rapport.stack import settings_env
from tests.datasets import collegemsg_interactions


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClickHouseStore]:
    opened = ClickHouseStore(f"chdb://{tmp_path / 'ch'}", "rapport")
    try:
        yield opened
    finally:
        opened.close()  # one embedded engine per process: the next test opens its own


def tables(store: ClickHouseStore) -> set[str]:
    rows = store.query("SELECT name FROM system.tables WHERE database = 'rapport'").rows
    return {r[0] for r in rows}


def test_fresh_database_gets_every_migration_once(store: ClickHouseStore) -> None:
    assert store.migrate() == [m.version for m in migrations.MIGRATIONS]
    assert store.migrate() == []  # idempotent: nothing left to run
    assert set(TABLES) | {"workspace_daily_mv"} <= tables(store)
    ledger = store.query("SELECT version, checksum FROM rapport.schema_migrations FINAL").rows
    assert sorted(ledger) == [(m.version, m.checksum()) for m in migrations.MIGRATIONS]
    assert not any(s.changed for s in migrations.status(store.client, "rapport"))
    # Every table deduplicates retried inserts by token.
    for table in ("interactions", "relationships", "relationships_daily", "workspace_daily"):
        create = store.query(f"SHOW CREATE TABLE rapport.{table}").rows[0][0]
        assert "non_replicated_deduplication_window = 1000" in create, table


def test_a_database_from_before_migrations_is_upgraded_and_backfilled(
    store: ClickHouseStore,
) -> None:
    # What the worker's DDL created before versioned migrations: migration 1 alone, with data.
    for statement in m0001_initial.statements("rapport"):
        store.client.command(statement)
    events = collegemsg_interactions({"323", "9", "12"}, limit=3000)
    rows = [interaction_row(e) for e in events]
    store.insert("interactions", INTERACTION_COLUMNS, rows, "before-migrations")

    assert store.migrate() == [1, 2, 3, 4]
    # The daily aggregates were backfilled from the rows already there, exactly.
    per_day = store.query(
        "SELECT day, uniqExactMerge(interactions) FROM rapport.workspace_daily "
        "GROUP BY day ORDER BY day"
    ).rows
    expected: dict[object, int] = {}
    for e in events:
        day = e.occurred_at.astimezone(UTC).date()
        expected[day] = expected.get(day, 0) + 1
    assert per_day == sorted(expected.items())
    # Old rows got a sunk_at (the migration's time), new rows get their insert time.
    (old_sunk,) = store.query("SELECT min(sunk_at) FROM rapport.interactions").rows[0]
    assert old_sunk.replace(tzinfo=UTC) <= datetime.now(UTC)


def test_the_same_rows_inserted_again_do_not_inflate_the_daily_counts(
    store: ClickHouseStore,
) -> None:
    store.migrate()
    events = collegemsg_interactions({"323"}, limit=500)
    rows = [interaction_row(e) for e in events]
    store.insert("interactions", INTERACTION_COLUMNS, rows, "a")
    store.insert("interactions", INTERACTION_COLUMNS, rows, "a")  # a retried batch: dropped
    store.insert("interactions", INTERACTION_COLUMNS, rows[:200], "b")  # redelivered events
    raw = store.query("SELECT count() FROM rapport.interactions").rows[0][0]
    assert raw in (500, 700)  # the redelivery lands as rows until a merge collapses them
    counted = store.query("SELECT uniqExactMerge(interactions) FROM rapport.workspace_daily").rows[
        0
    ][0]
    assert counted == 500


def test_migrate_cli_applies_and_reports(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", clickhouse_url=f"chdb://{tmp_path / 'ch'}")
    env = settings_env(settings)
    first = subprocess.run(
        [sys.executable, "-m", "rapport", "migrate"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "applied 4 migration(s): 1, 2, 3, 4" in first.stdout
    again = subprocess.run(
        [sys.executable, "-m", "rapport", "migrate", "--status"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "schema up to date" in again.stdout and "pending" not in again.stdout
