"""The adapter contract: (workspace config, raw envelope) -> events, pure and total.

An adapter reads one platform's verbatim body and returns an `AdapterResult`: the interactions it
holds plus a typed `NotAnInteraction` for every item that is recognised but means nothing to
relationships (typing indicators, read receipts, deletions). A body it cannot make sense of raises
`RejectedPayload` with the reason; the worker sends such bodies to the dead-letter topic.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from events.direction import classify
from events.envelope import RawEnvelope
from events.ids import event_id
from events.intent import RULES_VERSION, classify_intent
from events.models import Identity, Intent, Interaction, Kind, RawPointer
from rapport.workspaces import WorkspaceConfig


class RejectedPayload(ValueError):
    """An authentic body this adapter cannot turn into events; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NotAnInteraction:
    """A recognised item that yields no interaction, and why (e.g. `x.typing_indicator`)."""

    what: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Draft:
    """What a platform told us, before workspace-relative facts (direction, ids) are added."""

    platform: str
    kind: Kind
    actor: Identity
    subject: Identity | None
    occurred_at: datetime
    object_key: str = field(metadata={"doc": "unique per platform object, e.g. dm:<id>"})
    object_id: str
    conversation_id: str | None = None
    in_reply_to: str | None = None
    text: str | None = None
    intent: Intent | None = None


@dataclass(frozen=True, slots=True)
class AdapterResult:
    events: tuple[Interaction, ...] = ()
    skipped: tuple[NotAnInteraction, ...] = ()


Adapter = Callable[[WorkspaceConfig, RawEnvelope], AdapterResult]


def finish(
    workspace: WorkspaceConfig,
    envelope: RawEnvelope,
    drafts: list[Draft],
    skipped: list[NotAnInteraction],
    raw: RawPointer | None = None,
) -> AdapterResult:
    """Turn drafts into canonical interactions: direction, parties, intent, deterministic ids."""
    events: dict[str, Interaction] = {}
    for draft in drafts:
        parties = classify(workspace, draft.actor, draft.subject)
        intent = draft.intent or Intent(classify_intent(draft.kind, draft.text))
        eid = event_id(workspace.name, draft.platform, draft.object_key)
        events[eid] = Interaction(
            event_id=eid,
            workspace=workspace.name,
            platform=draft.platform,
            kind=draft.kind,
            actor=draft.actor,
            subject=draft.subject,
            direction=parties.direction,
            contact=parties.contact,
            account=parties.account,
            member=parties.member,
            occurred_at=draft.occurred_at,
            received_at=envelope.received_at,
            conversation_id=draft.conversation_id,
            object_id=draft.object_id,
            in_reply_to=draft.in_reply_to,
            intent=intent,
            intent_rules=RULES_VERSION,
            text=draft.text,
            raw=raw,
        )
    return AdapterResult(tuple(events.values()), tuple(skipped))


# --- helpers for the quirks every platform has -------------------------------------------------


def epoch_to_datetime(value: Any, unit: str) -> datetime:
    """Epoch seconds/milliseconds/microseconds, as a number or a numeric string, to UTC."""
    if isinstance(value, bool) or value is None:
        raise RejectedPayload(f"expected an epoch timestamp in {unit}, got {value!r}")
    try:
        number = float(value) if isinstance(value, str) and "." in value else int(value)
    except (TypeError, ValueError):
        raise RejectedPayload(f"expected an epoch timestamp in {unit}, got {value!r}") from None
    divisor = {"s": 1, "ms": 1_000, "us": 1_000_000}[unit]
    try:
        return datetime.fromtimestamp(number / divisor, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise RejectedPayload(f"timestamp {value!r} ({unit}) is out of range") from None


def id_str(value: Any, what: str) -> str:
    """Platform ids as strings; numbers are accepted (some vendors send both), floats are not."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise RejectedPayload(f"{what} must be a non-empty string id, got {value!r}")


def require(mapping: Any, key: str, where: str) -> Any:
    """`mapping[key]`, or a RejectedPayload naming what is missing where."""
    if not isinstance(mapping, dict):
        raise RejectedPayload(f"{where} must be an object, got {type(mapping).__name__}")
    if key not in mapping:
        raise RejectedPayload(f"{where} has no {key!r}")
    return mapping[key]


def json_body(raw: bytes) -> Any:
    """The decoded body, or a RejectedPayload (not JSON, not UTF-8, nested too deep)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RejectedPayload(f"body is not JSON: {exc}") from None


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    """The decoded body when it is a JSON object; `what` names the expected body in the error."""
    body = json_body(raw)
    if not isinstance(body, dict):
        raise RejectedPayload(f"{what} is a JSON object")
    return body
