"""Rows of the versioned tables a replay writes, and the records that carry them to the worker.

Times are epoch milliseconds (ints) end to end: Arrow reads them straight into ClickHouse's
`DateTime64(3, 'UTC')`, and they travel as JSON unchanged. Otherwise the values are those of
`projections.rows.relationship_row` and `interaction_row_from_json` (tested).

A record of the replay topic is one chunk of rows of one table of one build:
`{"build": B, "table": "relationships_v3", "rows": [[...], ...]}`; the worker's replay sink
inserts it only into a table prepared for build B (docs/replay.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.models import Interaction, epoch_ms, parse_event
from projections.rows import interaction_fields, interaction_row
from projections.schema import INTERACTION_COLUMNS, RELATIONSHIP_COLUMNS
from rapport.settings import Settings
from streams.versions import VERSIONED_TABLE

CHUNK_BYTES = 256 * 1024  # one replay record; the worker inserts several at once


def replay_topic(settings: Settings) -> str:
    """`rapport.replay` next to `rapport.events` (`<prefix>.replay` for a `<prefix>.events`)."""
    events = settings.topic_events
    prefix = events[: -len(".events")] if events.endswith(".events") else events
    return f"{prefix}.replay"


def columns_of(table: str) -> tuple[str, ...]:
    """The column order of a versioned table (ValueError for any other name)."""
    found = VERSIONED_TABLE.match(table)
    if found is None:
        raise ValueError(f"{table!r} is not a versioned projection table")
    return RELATIONSHIP_COLUMNS if found.group(1) == "relationships" else INTERACTION_COLUMNS


def relationship_values(view: dict[str, Any], updated_at_ms: int) -> list[Any]:
    """A `relationships` row (RELATIONSHIP_COLUMNS order) from `view_row`, times in ms."""
    out: list[Any] = []
    for name in RELATIONSHIP_COLUMNS:
        if name == "updated_at":
            out.append(updated_at_ms)
        elif name == "last_platform":
            out.append(view["last_platform"] or "")
        else:
            out.append(view[name])
    return out


def _ms(text: str) -> int:
    return epoch_ms(datetime.fromisoformat(text))


def interaction_values(doc: dict[str, Any], contact_id: str) -> list[Any]:
    """An `interactions` row (INTERACTION_COLUMNS order) of a decoded current-version event."""
    return interaction_fields(doc, contact_id, _ms)


def interaction_values_of(event: Interaction, contact_id: str) -> list[Any]:
    """The same row from a parsed (e.g. upcast) interaction."""
    row = list(interaction_row(event, contact_id))
    for index, name in enumerate(INTERACTION_COLUMNS):
        if isinstance(row[index], datetime):
            row[index] = epoch_ms(row[index])
        elif name == "schema_version":
            row[index] = int(row[index])
    return row


def interaction_values_from_json(data: bytes, contact_id: str) -> list[Any] | None:
    """Row of a logged event's JSON, any stored version; None for other event types."""
    doc = json.loads(data)
    if doc.get("type") == "interaction" and doc.get("schema_version") == 1:
        return interaction_values(doc, contact_id)
    event = parse_event(data)
    return interaction_values_of(event, contact_id) if isinstance(event, Interaction) else None


@dataclass(frozen=True)
class Chunk:
    build: str
    table: str
    rows: list[list[Any]]


def encode_chunks(
    build: str, table: str, rows: Iterable[Sequence[Any]], limit: int = CHUNK_BYTES
) -> Iterator[bytes]:
    """Records of at most about `limit` bytes each (one row always fits in one record)."""
    columns_of(table)  # validates the name
    head = f'{{"build":{json.dumps(build)},"table":{json.dumps(table)},"rows":['
    parts: list[str] = []
    size = 0
    for row in rows:
        text = json.dumps(row, separators=(",", ":"))
        if parts and size + len(text) > limit:
            yield (head + ",".join(parts) + "]}").encode()
            parts, size = [], 0
        parts.append(text)
        size += len(text) + 1
    if parts:
        yield (head + ",".join(parts) + "]}").encode()


def decode_chunk(data: bytes) -> Chunk:
    """A replay record; ValueError when it is not one (or names a table it may not write)."""
    try:
        doc = json.loads(data)
        build, table, rows = str(doc["build"]), str(doc["table"]), doc["rows"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a replay record: {exc}") from None
    width = len(columns_of(table))
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == width for r in rows):
        raise ValueError(f"rows of {table} must be lists of {width} values")
    return Chunk(build, table, rows)
