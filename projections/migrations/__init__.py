"""The ClickHouse schema as numbered migrations, each applied once and recorded.

`apply(client, database)` creates the database and `schema_migrations`, reads which versions
ran, and runs the missing ones in order; a migration is recorded only after all its statements
succeeded. Every statement is idempotent (`IF NOT EXISTS`, backfills into tables whose merge
semantics absorb a repeat), so a migration interrupted half way, or run by two processes at
once, is simply run again. A migration, once released, never changes: a change is a new
migration. Run by the worker at start (`ClickHouseSink.start`) and by `rapport migrate`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from projections.migrations import (
    m0001_initial,
    m0002_interactions_sunk_at,
    m0003_workspace_daily,
    m0004_relationships_daily,
)

log = logging.getLogger("rapport.migrations")

# Settings for DDL and backfills: synchronous inserts, and ALTERs/mutations that wait.
STATEMENT_SETTINGS: dict[str, Any] = {"async_insert": 0, "mutations_sync": 2, "alter_sync": 2}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Callable[[str], list[str]]

    def sql(self, database: str) -> list[str]:
        return self.statements(database)

    def checksum(self) -> str:
        """Of the statements with whitespace folded, independent of the database name."""
        text = ";\n".join(" ".join(s.split()) for s in self.statements("{db}"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


MIGRATIONS: tuple[Migration, ...] = tuple(
    Migration(m.VERSION, m.NAME, m.statements)
    for m in (
        m0001_initial,
        m0002_interactions_sunk_at,
        m0003_workspace_daily,
        m0004_relationships_daily,
    )
)
LATEST = MIGRATIONS[-1].version
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime | None
    changed: bool  # applied with statements other than the code's (a released one was edited)


def _check_database(database: str) -> None:
    if not _IDENTIFIER.match(database):
        raise ValueError(f"database name {database!r} is not a plain identifier")


def _ensure_ledger(client: Any, database: str) -> None:
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}", settings=STATEMENT_SETTINGS)
    client.command(
        f"""
        CREATE TABLE IF NOT EXISTS {database}.schema_migrations (
            version UInt32,
            name String,
            checksum String,
            applied_at DateTime64(3, 'UTC'),
            duration_ms UInt32
        ) ENGINE = ReplacingMergeTree(applied_at)
        ORDER BY version
        """,
        settings=STATEMENT_SETTINGS,
    )


def _applied(client: Any, database: str) -> dict[int, tuple[str, datetime]]:
    result = client.query(
        f"SELECT version, argMax(checksum, applied_at), max(applied_at) "
        f"FROM {database}.schema_migrations GROUP BY version"
    )
    return {int(v): (str(c), at) for v, c, at in result.result_rows}


def status(client: Any, database: str) -> list[MigrationStatus]:
    """Every known migration and whether (and when) it ran."""
    _check_database(database)
    _ensure_ledger(client, database)
    done = _applied(client, database)
    out = []
    for m in MIGRATIONS:
        found = done.get(m.version)
        out.append(
            MigrationStatus(
                m.version,
                m.name,
                found[1] if found else None,
                found is not None and found[0] != m.checksum(),
            )
        )
    return out


def apply(client: Any, database: str) -> list[Migration]:
    """Run the migrations that have not run yet, in order; returns those it ran."""
    _check_database(database)
    _ensure_ledger(client, database)
    done = _applied(client, database)
    ran: list[Migration] = []
    for m in MIGRATIONS:
        if m.version in done:
            if done[m.version][0] != m.checksum():
                log.warning(
                    "migration %d (%s) was applied with other statements than the code has now; "
                    "released migrations must not change: add a new one",
                    m.version,
                    m.name,
                )
            continue
        started = time.monotonic()
        for statement in m.sql(database):
            client.command(statement, settings=STATEMENT_SETTINGS)
        duration_ms = int((time.monotonic() - started) * 1000)
        client.insert(
            f"{database}.schema_migrations",
            [(m.version, m.name, m.checksum(), datetime.now(UTC), duration_ms)],
            column_names=["version", "name", "checksum", "applied_at", "duration_ms"],
            settings={"async_insert": 0},
        )
        log.info("applied migration %d: %s (%d ms)", m.version, m.name, duration_ms)
        ran.append(m)
    return ran


def statements(database: str) -> list[str]:
    """Every migration's statements in order (what a fresh database runs)."""
    return [s for m in MIGRATIONS for s in m.sql(database)]
