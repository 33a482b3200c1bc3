"""Queries of the read model that the CLI and reports share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from projections.schema import RELATIONSHIP_COLUMNS, RELATIONSHIP_TIME_COLUMNS
from projections.store import SqlReader

RELATIONSHIP_FIELDS = tuple(c for c in RELATIONSHIP_COLUMNS if c not in ("revision", "updated_at"))
TIME_FIELDS = RELATIONSHIP_TIME_COLUMNS
SORTABLE = frozenset(
    c for c in RELATIONSHIP_FIELDS if c not in ("qualified_at", "platforms", "members")
)
DESCENDING_BY_DEFAULT = TIME_FIELDS | {
    "interactions", "strength", "qualified_conversations", "our_replies", "their_replies",
    "gives_out", "gives_in", "reciprocity", "balance",
}  # fmt: skip


def iso_utc(value: Any) -> str | None:
    """ClickHouse times (naive UTC datetimes, or ISO strings via the worker) as ISO 8601 Z."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text: str = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def relationships(
    reader: SqlReader, workspace: str, sort: str = "last_contact_at", limit: int | None = None
) -> list[dict[str, Any]]:
    """Latest state of every relationship of a workspace (ReplacingMergeTree read with FINAL)."""
    column = sort.lstrip("-+")
    descending = sort.startswith("-") or column in DESCENDING_BY_DEFAULT
    if column not in SORTABLE:
        raise ValueError(f"cannot sort by {column!r}; one of: {', '.join(sorted(SORTABLE))}")
    if sort.startswith("+"):
        descending = False
    sql = (
        f"SELECT {', '.join(RELATIONSHIP_FIELDS)} FROM rapport.relationships FINAL "
        "WHERE workspace = {workspace:String} "
        f"ORDER BY {column} {'DESC' if descending else 'ASC'}, contact_id"
        + (" LIMIT {limit:UInt64}" if limit else "")
    )
    params: dict[str, Any] = {"workspace": workspace}
    if limit:
        params["limit"] = limit
    rows = reader.query(sql, params).dicts()
    for row in rows:
        for name in TIME_FIELDS:
            row[name] = iso_utc(row[name])
        row["qualified_at"] = [iso_utc(v) for v in row["qualified_at"]]
        row["ask_only"] = bool(row["ask_only"])
        for name in ("platforms", "members"):
            row[name] = list(row[name])
    return rows


def interaction_count(reader: SqlReader, workspace: str) -> int:
    """Distinct interactions mirrored for a workspace."""
    result = reader.query(
        "SELECT uniqExact(event_id) FROM rapport.interactions WHERE workspace = {w:String}",
        {"w": workspace},
    )
    return int(result.rows[0][0])


def relationship_interaction_total(reader: SqlReader, workspace: str) -> int:
    """Interactions counted across the latest relationship rows (converges after the sink)."""
    result = reader.query(
        "SELECT sum(interactions) FROM rapport.relationships FINAL WHERE workspace = {w:String}",
        {"w": workspace},
    )
    return int(result.rows[0][0] or 0)
