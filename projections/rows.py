"""Rows for ClickHouse, from events and projection states (column order from schema.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from events.models import Interaction
from projections.relationship import RelationshipState


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def interaction_row(event: Interaction) -> tuple[Any, ...]:
    return (
        event.event_id,
        event.workspace,
        event.contact.key if event.contact is not None else "",
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


def relationship_row(state: RelationshipState, updated_at: datetime) -> tuple[Any, ...]:
    return (
        state.workspace,
        state.contact_id,
        _dt(state.first_contact_at),
        _dt(state.last_contact_at),
        _dt(state.last_inbound_at),
        _dt(state.last_outbound_at),
        state.last_platform or "",
        state.interactions,
        state.revision,
        updated_at,
    )
