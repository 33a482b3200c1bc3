"""Rows for ClickHouse, from events and projection states (column order from schema.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from events.models import Interaction, parse_event
from projections.schema import RELATIONSHIP_COLUMNS, RELATIONSHIP_TIME_COLUMNS


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def interaction_row(event: Interaction, contact_id: str | None = None) -> tuple[Any, ...]:
    """A row of `interactions`; `contact_id` is the resolved contact (after identity links)."""
    if contact_id is None:
        contact_id = event.contact.key if event.contact is not None else ""
    return (
        event.event_id,
        event.workspace,
        contact_id,
        event.platform,
        event.kind.value,
        event.direction.value,
        event.intent.value,
        event.actor.user_id,
        event.subject.user_id if event.subject is not None else "",
        event.account.user_id if event.account is not None else "",
        event.member or "",
        event.occurred_at,
        event.received_at,
        event.conversation_id or "",
        event.object_id,
        event.in_reply_to or "",
        event.raw.partition if event.raw is not None else -1,
        event.raw.offset if event.raw is not None else -1,
        event.schema_version,
    )


def interaction_row_from_json(data: bytes, contact_id: str) -> tuple[Any, ...] | None:
    """The `interactions` row of a logged event, straight from its JSON (the sink's hot path).

    Equal to `interaction_row(parse_event(data), contact_id)` for current-version interactions
    (tested); anything else (older versions, other event types) goes through the full parser.
    """
    return interaction_row_from_doc(json.loads(data), data, contact_id)


def interaction_row_from_doc(
    doc: dict[str, Any], data: bytes, contact_id: str
) -> tuple[Any, ...] | None:
    """`interaction_row_from_json` of an event whose JSON `data` the caller already decoded."""
    if doc.get("type") != "interaction" or doc.get("schema_version") != 1:
        event = parse_event(data)
        return interaction_row(event, contact_id) if isinstance(event, Interaction) else None
    return tuple(interaction_fields(doc, contact_id, _iso))


def interaction_fields(
    doc: dict[str, Any], contact_id: str, when: Callable[[str], Any]
) -> list[Any]:
    """An `interactions` row (INTERACTION_COLUMNS order) of a decoded current-version event.

    `when` converts the ISO times (datetimes for the sink, epoch ms for replay's Arrow rows).
    """
    subject = doc.get("subject")
    account = doc.get("account")
    raw = doc.get("raw")
    return [
        doc["event_id"],
        doc["workspace"],
        contact_id,
        doc["platform"],
        doc["kind"],
        doc["direction"],
        doc.get("intent", "neutral"),
        doc["actor"]["user_id"],
        subject["user_id"] if subject else "",
        account["user_id"] if account else "",
        doc.get("member") or "",
        when(doc["occurred_at"]),
        when(doc["received_at"]),
        doc.get("conversation_id") or "",
        doc["object_id"],
        doc.get("in_reply_to") or "",
        raw["partition"] if raw else -1,
        raw["offset"] if raw else -1,
        1,
    ]


def _iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


DAY_MS = 86_400_000


def relationship_day(view: dict[str, Any]) -> int | None:
    """The UTC day number of a relationship view's last event (its `relationships_daily` key)."""
    last: int | None = view["last_contact_at"]
    return None if last is None else last // DAY_MS


def relationship_date(view: dict[str, Any]) -> date | None:
    """The UTC date of a relationship view's last event: the first column of its daily row."""
    day = relationship_day(view)
    return None if day is None else date.fromordinal(_EPOCH_ORDINAL + day)


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def relationship_row(view: dict[str, Any], updated_at: datetime) -> tuple[Any, ...]:
    """A row of `relationships` from `projections.relationship.view_row` (times in epoch ms)."""
    row = dict(view, updated_at=updated_at)
    row["last_platform"] = row["last_platform"] or ""
    row["qualified_at"] = [_dt(ms) for ms in row["qualified_at"]]
    for name in RELATIONSHIP_TIME_COLUMNS:
        row[name] = _dt(row[name])
    return tuple(row[name] for name in RELATIONSHIP_COLUMNS)
