"""The generic signed JSON endpoint: email, calls, meetings, introductions, notes from any system.

The schema is documented in `docs/generic-webhook.md`. A body is `{"events": [...]}`, a bare list
of events, or one event object. The whole body is validated first and is accepted or rejected as a
unit (a `RejectedPayload` carrying pydantic's reason), so a sender never has half a batch stored.

Direction comes from the workspace's owned accounts like everywhere else: a meeting or call counts
as outbound when an owned account is the `actor` (the organiser, the caller) and inbound when the
contact is. Kind `note` is accepted and yields `generic.note` (a note records no interaction by
itself; send the interaction it describes with its own kind).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from events.adapters.base import AdapterResult, Draft, NotAnInteraction, RejectedPayload, finish
from events.envelope import RawEnvelope
from events.models import PLATFORM_PATTERN, Identity, Intent, Kind, RawPointer
from rapport.workspaces import WorkspaceConfig

UserId = Annotated[str, Field(min_length=1, max_length=512)]
KINDS = (*(kind.value for kind in Kind), "note")


class GenericEvent(BaseModel):
    """One interaction reported by another system."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="the sender's id for this interaction; redeliveries with it collapse"
    )
    platform: str = Field(pattern=PLATFORM_PATTERN, description="e.g. email, phone, zoom, crm")
    kind: str = Field(description="a canonical kind, or `note`")
    occurred_at: datetime = Field(description="ISO 8601 (no zone = UTC) or epoch seconds")
    actor: UserId = Field(description="who acted (sender, organiser, caller, introducer)")
    subject: UserId | None = Field(None, description="to whom (recipient, attendee, introducee)")
    conversation_id: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    in_reply_to: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    text: Annotated[str, Field(max_length=100_000)] | None = None
    intent: Intent | None = Field(None, description="overrides the intent rules when given")
    metadata: dict[str, Any] = Field(default_factory=dict, description="kept in the raw body only")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in KINDS:
            raise ValueError(f"unknown kind {value!r} (one of: {', '.join(KINDS)})")
        return value

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _epoch_seconds(cls, value: Any) -> Any:
        """Numbers (and numeric strings) are epoch seconds, never pydantic's ms guess."""
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError("epoch seconds must be finite")
            try:
                return datetime.fromtimestamp(value, tz=UTC)
            except (OverflowError, OSError, ValueError):
                raise ValueError("epoch seconds out of range") from None
        return value

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class GenericBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    events: list[GenericEvent] = Field(max_length=10_000)


_EVENTS: TypeAdapter[list[GenericEvent]] = TypeAdapter(list[GenericEvent])


def parse_body(body: bytes) -> list[GenericEvent]:
    """Validate a body; any problem is a `RejectedPayload` with pydantic's reason."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RejectedPayload(f"body is not JSON: {exc}") from None
    try:
        if isinstance(data, list):
            return _EVENTS.validate_python(data)
        if isinstance(data, dict) and "events" in data:
            return GenericBatch.model_validate(data).events
        if isinstance(data, dict):
            return [GenericEvent.model_validate(data)]
    except ValidationError as exc:
        raise RejectedPayload(_reason(exc)) from None
    raise RejectedPayload("a generic body is an event object, a list of them or {events: [...]}")


def _reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _draft(event: GenericEvent) -> Draft | NotAnInteraction:
    if event.kind == "note":
        return NotAnInteraction("generic.note", event.id)
    return Draft(
        platform=event.platform,
        kind=Kind(event.kind),
        actor=Identity(platform=event.platform, user_id=event.actor),
        subject=Identity(platform=event.platform, user_id=event.subject) if event.subject else None,
        occurred_at=event.occurred_at,
        object_key=f"generic:{event.id}",
        object_id=event.id,
        conversation_id=event.conversation_id,
        in_reply_to=event.in_reply_to,
        text=event.text,
        intent=event.intent,
    )


def normalize(
    workspace: WorkspaceConfig, envelope: RawEnvelope, raw: RawPointer | None = None
) -> AdapterResult:
    """All interactions in one generic delivery."""
    drafts: list[Draft] = []
    skipped: list[NotAnInteraction] = []
    for event in parse_body(envelope.body):
        result = _draft(event)
        if isinstance(result, Draft):
            drafts.append(result)
        else:
            skipped.append(result)
    try:
        return finish(workspace, envelope, drafts, skipped, raw)
    except ValidationError as exc:
        raise RejectedPayload(_reason(exc)) from None
