"""X (Twitter) Account Activity API: the body's quirks absorbed here.

Ids and `created_timestamp` are strings of epoch milliseconds; one delivery is sent per subscribed
`for_user_id`, so ids must not depend on it (two owned accounts in one DM collapse to one event).
"""

from __future__ import annotations

import json
from typing import Any

from events.adapters.base import (
    AdapterResult,
    Draft,
    NotAnInteraction,
    RejectedPayload,
    epoch_to_datetime,
    finish,
    id_str,
    require,
)
from events.envelope import RawEnvelope
from events.models import Identity, Kind, RawPointer
from rapport.workspaces import WorkspaceConfig

PLATFORM = "x"

# Recognised AAA arrays that never describe an interaction between two people.
NON_INTERACTIONS = {
    "direct_message_indicate_typing_events": "x.typing_indicator",
    "direct_message_mark_read_events": "x.read_receipt",
    "tweet_delete_events": "x.tweet_deleted",
    "user_event": "x.user_event",
    "block_events": "x.block",
    "mute_events": "x.mute",
}


def _identity(user_id: Any, what: str) -> Identity:
    return Identity(platform=PLATFORM, user_id=id_str(user_id, what))


def _direct_message(item: Any) -> Draft | NotAnInteraction:
    if require(item, "type", "direct_message_events[]") != "message_create":
        return NotAnInteraction("x.dm_event", str(item.get("type")))
    create = require(item, "message_create", "direct_message_events[]")
    target = require(create, "target", "message_create")
    dm_id = id_str(require(item, "id", "direct_message_events[]"), "DM id")
    text = (create.get("message_data") or {}).get("text")
    return Draft(
        platform=PLATFORM,
        kind=Kind.MESSAGE,
        actor=_identity(require(create, "sender_id", "message_create"), "sender_id"),
        subject=_identity(require(target, "recipient_id", "message_create.target"), "recipient_id"),
        occurred_at=epoch_to_datetime(require(item, "created_timestamp", "DM"), "ms"),
        object_key=f"dm:{dm_id}",
        object_id=dm_id,
        text=text if isinstance(text, str) else None,
    )


def normalize(
    workspace: WorkspaceConfig, envelope: RawEnvelope, raw: RawPointer | None = None
) -> AdapterResult:
    """All interactions in one Account Activity delivery."""
    try:
        body = json.loads(envelope.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RejectedPayload(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RejectedPayload("an Account Activity body is a JSON object")
    drafts: list[Draft] = []
    skipped: list[NotAnInteraction] = []
    for key, what in NON_INTERACTIONS.items():
        if key in body:
            skipped.append(NotAnInteraction(what))
    dms = body.get("direct_message_events", [])
    if not isinstance(dms, list):
        raise RejectedPayload("direct_message_events must be a list")
    for item in dms:
        result = _direct_message(item)
        (skipped if isinstance(result, NotAnInteraction) else drafts).append(result)  # type: ignore[arg-type]
    if not drafts and not skipped:
        raise RejectedPayload(
            "no Account Activity event array found (keys: " + ", ".join(sorted(body)[:10]) + ")"
        )
    return finish(workspace, envelope, drafts, skipped, raw)
