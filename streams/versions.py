"""Projection versions: versioned ClickHouse tables, the active version and its worker.

Version 1 is what a fresh deployment runs: the Faust app (consumer group, table changelogs)
`settings.worker_id`, read models in `relationships` and `interactions`. `rapport replay
--to-version N` builds `relationships_vN` and `interactions_vN` and the Faust state of the app
`<worker_id>-vN`; activating N exchanges `relationships` with `relationships_vN` (and
`interactions` likewise), so readers switch in one atomic step, and runs the worker of N.

Which version a table holds is written in its comment, `rapport projection version N build B`
(a table without a comment is version 1), so every step below can be repeated after a crash:
after `EXCHANGE TABLES relationships AND relationships_vN`, `relationships_vN` holds the version
that was active before, A, and is renamed to `relationships_vA`; activating A again (a roll
back) is the same operation. Each build and activation is also logged in
`rapport.projection_versions`.

The version a worker runs is `settings.projection_version` when set (RAPPORT_PROJECTION_VERSION,
for containers), else the one `rapport replay --swap` recorded in `<home>/projection-version`,
else 1. These functions are synchronous and take one `ClickHouseStore`: the CLI calls them on its
own store when no worker owns the embedded engine, the worker on its sink's thread.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from projections.store import ClickHouseStore
from rapport.settings import Settings

PROJECTED = ("relationships", "interactions")
VERSIONED_TABLE = re.compile(r"^(relationships|interactions)_v([0-9]+)$")
_COMMENT = re.compile(r"^rapport projection version ([0-9]+)(?: build ([0-9A-Za-z_-]+))?$")
STATE_FILE = "projection-version"
LOG_TABLE = "projection_versions"


class VersionError(RuntimeError):
    """A version is not built, not valid, or cannot be activated now; the message says why."""


def worker_id_for(base: str, version: int) -> str:
    """The Faust app id (consumer group, changelog topic prefix) of a projection version."""
    return base if version == 1 else f"{base}-v{version}"


def versioned_table(base: str, version: int) -> str:
    if base not in PROJECTED:
        raise ValueError(f"{base!r} is not a projected table")
    return f"{base}_v{int(version)}"


def comment_for(version: int, build: str | None = None) -> str:
    return f"rapport projection version {version}" + (f" build {build}" if build else "")


def parse_comment(comment: str) -> tuple[int, str | None] | None:
    """(version, build) of a table comment; None for a table without a version comment."""
    found = _COMMENT.match(comment.strip())
    return None if found is None else (int(found.group(1)), found.group(2))


# --- which version a process runs -------------------------------------------------------------


def state_file(settings: Settings) -> Path:
    return settings.home / STATE_FILE


def persisted_version(settings: Settings) -> int | None:
    """The version `rapport replay --swap` recorded under home, if any."""
    try:
        data = json.loads(state_file(settings).read_text())
        return int(data["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def persist_version(settings: Settings, version: int, previous: int | None) -> None:
    path = state_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "version": version,
        "worker_id": worker_id_for(settings.worker_id, version),
        "previous": previous,
        "at": datetime.now(UTC).isoformat(),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(path)


def active_version(settings: Settings) -> int:
    """The version this deployment runs: the setting, else the recorded one, else 1."""
    return settings.projection_version or persisted_version(settings) or 1


def for_version(settings: Settings, version: int) -> Settings:
    """Settings of the worker of `version`: its app id, and the version it must make active."""
    return settings.model_copy(
        update={
            "worker_id": worker_id_for(settings.worker_id, version),
            "projection_version": version,
        }
    )


def with_active_version(settings: Settings) -> Settings:
    """What `rapport worker` runs with (the base worker id stays in `settings.worker_id`)."""
    return for_version(settings, active_version(settings))


# --- ClickHouse: tables of a version ----------------------------------------------------------


@dataclass(frozen=True)
class TableVersion:
    name: str
    version: int
    build: str | None


def table_versions(store: ClickHouseStore, database: str) -> dict[str, TableVersion]:
    """Every projected table (plain and versioned) with the version its comment names."""
    rows = store.query(
        "SELECT name, comment FROM system.tables WHERE database = {db:String}", {"db": database}
    ).rows
    out: dict[str, TableVersion] = {}
    for name, comment in rows:
        name = str(name)
        if name not in PROJECTED and not VERSIONED_TABLE.match(name):
            continue
        parsed = parse_comment(str(comment or ""))
        if parsed is None:
            parsed = (1, None) if name in PROJECTED else (_suffix(name), None)
        out[name] = TableVersion(name, parsed[0], parsed[1])
    return out


def _suffix(name: str) -> int:
    found = VERSIONED_TABLE.match(name)
    return int(found.group(2)) if found else 1


def _set_comment(store: ClickHouseStore, database: str, table: str, comment: str) -> None:
    store.command(f"ALTER TABLE {database}.{table} MODIFY COMMENT '{comment}'")


def ensure_log(store: ClickHouseStore, database: str) -> None:
    store.command(
        f"""
        CREATE TABLE IF NOT EXISTS {database}.{LOG_TABLE} (
            version UInt32,
            event LowCardinality(String),
            worker_id String,
            detail String,
            at DateTime64(3, 'UTC')
        ) ENGINE = MergeTree
        ORDER BY (at, version)
        """
    )


def record(
    store: ClickHouseStore,
    database: str,
    version: int,
    event: str,
    worker_id: str,
    detail: dict[str, Any],
) -> None:
    """Log a build or an activation in `projection_versions`."""
    ensure_log(store, database)
    store.client.insert(
        f"{database}.{LOG_TABLE}",
        [(version, event, worker_id, json.dumps(detail, sort_keys=True), datetime.now(UTC))],
        column_names=["version", "event", "worker_id", "detail", "at"],
        settings={"async_insert": 0},
    )


def prepare(store: ClickHouseStore, database: str, version: int, build: str) -> list[str]:
    """Empty `relationships_vN` and `interactions_vN` shaped like the live tables, for one build.

    Refuses the active version. A table of that name from an earlier build (or holding another
    version after a swap) is dropped first: a build is always complete and never mixed.
    """
    tables = table_versions(store, database)
    active = tables["relationships"].version if "relationships" in tables else 1
    if version == active:
        raise VersionError(f"version {version} is the active version; replay into another one")
    made = []
    for base in PROJECTED:
        name = versioned_table(base, version)
        store.command(f"DROP TABLE IF EXISTS {database}.{name} SYNC")
        store.command(f"CREATE TABLE {database}.{name} AS {database}.{base}")
        _set_comment(store, database, name, comment_for(version, build))
        made.append(name)
    return made


def build_of(store: ClickHouseStore, database: str, table: str) -> str | None:
    """The build id a versioned table was prepared for (None if missing or not a build)."""
    found = table_versions(store, database).get(table)
    return None if found is None else found.build


def active(store: ClickHouseStore, database: str) -> int:
    tables = table_versions(store, database)
    return tables["relationships"].version if "relationships" in tables else 1


def ensure_active(store: ClickHouseStore, database: str, version: int, worker_id: str) -> int:
    """Make `version` the one readers see; returns the version that was active before.

    Idempotent and safe to repeat after a crash half way: each table's comment says what it
    holds. Raises VersionError when `version` is neither active nor built.
    """
    tables = table_versions(store, database)
    before = tables["relationships"].version if "relationships" in tables else 1
    for base in PROJECTED:
        if base not in tables:
            continue  # a fresh database: the migrations create it, version 1
        have = tables[base].version
        if have == version:
            continue
        candidate = versioned_table(base, version)
        if candidate not in tables or tables[candidate].version != version:
            raise VersionError(
                f"projection version {version} is not built ({candidate} is missing); build it "
                f"with `rapport replay --to-version {version}`, or run the worker of version "
                f"{have} (RAPPORT_PROJECTION_VERSION={have})"
            )
        if parse_comment(_comment(store, database, base)) is None:
            _set_comment(store, database, base, comment_for(have, tables[base].build))
        store.command(f"EXCHANGE TABLES {database}.{base} AND {database}.{candidate}")
    _file_away(store, database)
    if before != version:
        record(store, database, version, "activated", worker_id, {"previous": before})
    return before


def _comment(store: ClickHouseStore, database: str, table: str) -> str:
    rows = store.query(
        "SELECT comment FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": database, "t": table},
    ).rows
    return str(rows[0][0]) if rows else ""


def _file_away(store: ClickHouseStore, database: str) -> None:
    """Rename every versioned table to the version it holds (after an exchange, `_vN` holds the
    version that was active before); a stale table in the way is dropped."""
    tables = table_versions(store, database)
    for name, held in sorted(tables.items()):
        found = VERSIONED_TABLE.match(name)
        if found is None or int(found.group(2)) == held.version:
            continue
        target = versioned_table(found.group(1), held.version)
        active_here = tables.get(found.group(1))
        if active_here is not None and active_here.version == held.version:
            store.command(f"DROP TABLE {database}.{name} SYNC")  # a copy of the active one
            continue
        store.command(f"DROP TABLE IF EXISTS {database}.{target} SYNC")
        store.command(f"RENAME TABLE {database}.{name} TO {database}.{target}")


def history(store: ClickHouseStore, database: str) -> list[dict[str, Any]]:
    """The build and activation log, oldest first (empty before the first replay)."""
    exists = store.query(f"EXISTS TABLE {database}.{LOG_TABLE}").rows
    if not exists or not int(exists[0][0]):
        return []
    return store.query(
        f"SELECT version, event, worker_id, detail, at FROM {database}.{LOG_TABLE} ORDER BY at"
    ).dicts()
