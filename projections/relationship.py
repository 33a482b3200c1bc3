"""The relationship projection: a pure fold over one relationship's interactions.

`apply(state, event) -> state` has no clock and no I/O, so the live Faust agent and replay share
it. Duplicates (same `event_id`) count once however late they arrive: the state keeps a 64-bit
fingerprint of every event id it has applied (8 bytes an interaction), besides the ids of the
lateness window.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from events.models import Direction, Interaction, epoch_ms

DEFAULT_LATENESS_MS = 7 * 24 * 3600 * 1000


def relationship_key(workspace: str, contact_id: str) -> str:
    """The Kafka key and table key of a relationship."""
    return f"{workspace}|{contact_id}"


@dataclass(frozen=True, slots=True)
class RelationshipState:
    """Latest known facts about one (workspace, contact); times are epoch milliseconds."""

    workspace: str
    contact_id: str
    first_contact_at: int | None = None
    last_contact_at: int | None = None
    last_inbound_at: int | None = None
    last_outbound_at: int | None = None
    last_platform: str | None = None
    last_event_id: str | None = None
    interactions: int = 0
    revision: int = 0
    recent_ids: tuple[tuple[int, str], ...] = ()
    seen: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "contact_id": self.contact_id,
            "first_contact_at": self.first_contact_at,
            "last_contact_at": self.last_contact_at,
            "last_inbound_at": self.last_inbound_at,
            "last_outbound_at": self.last_outbound_at,
            "last_platform": self.last_platform,
            "last_event_id": self.last_event_id,
            "interactions": self.interactions,
            "revision": self.revision,
            "recent_ids": [list(item) for item in self.recent_ids],
            "seen": sorted(self.seen),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RelationshipState:
        fields = dict(data)
        fields["recent_ids"] = tuple((int(t), str(i)) for t, i in fields.get("recent_ids", ()))
        fields["seen"] = frozenset(fields.get("seen", ()))
        return cls(**fields)


def _later(a: int | None, b: int) -> int:
    return b if a is None or b > a else a


def apply(
    state: RelationshipState | None,
    event: Interaction,
    *,
    lateness_ms: int = DEFAULT_LATENESS_MS,
) -> RelationshipState:
    """Fold one interaction into its relationship. Events without a contact change nothing."""
    if event.contact is None or not event.direction.counts:
        if state is None:
            raise ValueError("an interaction without a contact has no relationship")
        return state
    if state is None:
        state = RelationshipState(workspace=event.workspace, contact_id=event.contact.key)
    at = epoch_ms(event.occurred_at)
    fingerprint = event.event_id[:16]
    if fingerprint in state.seen:
        return state
    newest = max(at, state.last_contact_at or at)
    recent = tuple(
        sorted(
            item
            for item in (*state.recent_ids, (at, event.event_id))
            if item[0] >= newest - lateness_ms
        )
    )
    is_last = (
        state.last_contact_at is None
        or at > state.last_contact_at
        or (at == state.last_contact_at and event.event_id > (state.last_event_id or ""))
    )
    return replace(
        state,
        first_contact_at=at if state.first_contact_at is None else min(state.first_contact_at, at),
        last_contact_at=_later(state.last_contact_at, at),
        last_inbound_at=(
            _later(state.last_inbound_at, at)
            if event.direction is Direction.INBOUND
            else state.last_inbound_at
        ),
        last_outbound_at=(
            _later(state.last_outbound_at, at)
            if event.direction is Direction.OUTBOUND
            else state.last_outbound_at
        ),
        last_platform=event.platform if is_last else state.last_platform,
        last_event_id=event.event_id if is_last else state.last_event_id,
        interactions=state.interactions + 1,
        revision=state.revision + 1,
        recent_ids=recent,
        seen=state.seen | {fingerprint},
    )


def fold(events: list[Interaction]) -> dict[str, RelationshipState]:
    """The whole projection of a list of events, in memory (tests, replay baseline)."""
    states: dict[str, RelationshipState] = {}
    for event in events:
        if event.contact is None or not event.direction.counts:
            continue
        key = relationship_key(event.workspace, event.contact.key)
        states[key] = apply(states.get(key), event)
    return states
