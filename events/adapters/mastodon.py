"""Mastodon webhooks: `{"event": "status.created", "created_at": ..., "object": <Status>}`.

What a `status.created` status becomes:

* a boost (`reblog` set): a `share` of the boosted status's author.
* otherwise the status may relate to someone in three ways, tried in this order: a `reply`
  (`in_reply_to_id`, subject `in_reply_to_account_id`), a `quote` (Mastodon 4.4+ `quote` with an
  accepted `quoted_status`) and a `mention` (`mentions[].id`; for a contact's status the
  subject is the mentioned owned account, for an owned account's status the first mentioned
  contact). The first relation that puts exactly one owned account on one side wins (a contact's
  reply to another contact that mentions the brand is a mention of the brand); when none does,
  the first relation found is kept. A status relating to nobody but its author is
  `mastodon.own_status` (an owned account posting) or `mastodon.status_without_subject`.

`status.updated` (edits), account and report events and any other event are typed
`NotAnInteraction` items. Account ids are the instance's string ids.

Event time is the status's own `created_at` (ISO 8601), never the envelope's `created_at` (when
the webhook fired). A Status does not name its thread's root, so `conversation_id` stays unknown
unless the body carries one (the projection then groups turns by time). The object key is the
status id (`status:<id>`), so the 16 retries collapse.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from events.adapters.base import (
    AdapterResult,
    Draft,
    NotAnInteraction,
    RejectedPayload,
    finish,
    id_str,
    json_object,
    require,
)
from events.direction import counting_relation
from events.envelope import RawEnvelope
from events.models import Identity, Kind, RawPointer
from rapport.workspaces import WorkspaceConfig

PLATFORM = "mastodon"

_TAG = re.compile(r"<[^>]*>")
_BREAK = re.compile(r"<br\s*/?>|</p>", re.IGNORECASE)


def _identity(user_id: Any, what: str) -> Identity:
    return Identity(platform=PLATFORM, user_id=id_str(user_id, what))


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RejectedPayload(f"{where} must be an object, got {type(value).__name__}")
    return value


def _opt_id(value: Any, what: str) -> str | None:
    return None if value is None or value == "" else id_str(value, what)


def parse_iso(value: Any, what: str) -> datetime:
    """ISO 8601 (`2023-01-01T12:00:00.000Z`) to UTC; a time without a zone is taken as UTC."""
    if not isinstance(value, str):
        raise RejectedPayload(f"{what} must be an ISO 8601 string, got {value!r}")
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise RejectedPayload(f"{what} is not ISO 8601: {value!r}") from None


def plain_text(content: Any) -> str | None:
    """A status's HTML `content` as plain text (for intent rules)."""
    if not isinstance(content, str):
        return None
    return html.unescape(_TAG.sub("", _BREAK.sub("\n", content))).strip()


def _account(status: dict[str, Any], where: str) -> Identity:
    account = _obj(require(status, "account", where), f"{where}.account")
    return _identity(require(account, "id", f"{where}.account"), f"{where}.account.id")


def _mention_subject(
    workspace: WorkspaceConfig, actor: Identity, status: dict[str, Any]
) -> Identity | None:
    mentions = status.get("mentions") or []
    if not isinstance(mentions, list):
        raise RejectedPayload("status.mentions must be a list")
    ids = [id_str(require(m, "id", "mentions[]"), "mentions[].id") for m in mentions]
    ids = [uid for uid in ids if uid != actor.user_id]
    actor_owned = workspace.owned(PLATFORM, actor.user_id) is not None
    chosen = [uid for uid in ids if (workspace.owned(PLATFORM, uid) is None) == actor_owned]
    return _identity(chosen[0], "mentions[].id") if chosen else None


def _quoted(status: dict[str, Any]) -> dict[str, Any] | None:
    quote = status.get("quote")
    if not isinstance(quote, dict) or quote.get("state", "accepted") != "accepted":
        return None
    quoted = quote.get("quoted_status")
    return quoted if isinstance(quoted, dict) else None


def _status(workspace: WorkspaceConfig, status: dict[str, Any]) -> Draft | NotAnInteraction:
    status_id = id_str(require(status, "id", "status"), "status.id")
    actor = _account(status, "status")
    occurred_at = parse_iso(require(status, "created_at", "status"), "status.created_at")
    reply_to = _opt_id(status.get("in_reply_to_id"), "in_reply_to_id")
    # Only an id the server sends: a guessed root id would split a thread (see x.py).
    conversation = _opt_id(status.get("conversation_id"), "conversation_id")

    boosted = status.get("reblog")
    if boosted is not None:
        boosted = _obj(boosted, "status.reblog")
        boosted_id = id_str(require(boosted, "id", "reblog"), "reblog.id")
        return Draft(
            platform=PLATFORM,
            kind=Kind.SHARE,
            actor=actor,
            subject=_account(boosted, "reblog"),
            occurred_at=occurred_at,
            object_key=f"status:{status_id}",
            object_id=status_id,
            conversation_id=None,
            in_reply_to=boosted_id,
        )

    relations: list[tuple[Kind, Identity, str | None]] = []
    replied = _opt_id(status.get("in_reply_to_account_id"), "in_reply_to_account_id")
    if reply_to is not None and replied is not None and replied != actor.user_id:
        relations.append((Kind.REPLY, _identity(replied, "in_reply_to_account_id"), reply_to))
    quoted = _quoted(status)
    if quoted is not None:
        quoted_author = _account(quoted, "quoted_status")
        if quoted_author != actor:
            quoted_id = id_str(require(quoted, "id", "quoted_status"), "quoted_status.id")
            relations.append((Kind.QUOTE, quoted_author, quoted_id))
    mentioned = _mention_subject(workspace, actor, status)
    if mentioned is not None:
        relations.append((Kind.MENTION, mentioned, reply_to))
    if not relations:
        if workspace.owned(PLATFORM, actor.user_id) is not None:
            return NotAnInteraction("mastodon.own_status", status_id)
        return NotAnInteraction("mastodon.status_without_subject", status_id)
    kind, subject, in_reply_to = counting_relation(workspace, actor, relations)
    return Draft(
        platform=PLATFORM,
        kind=kind,
        actor=actor,
        subject=subject,
        occurred_at=occurred_at,
        object_key=f"status:{status_id}",
        object_id=status_id,
        conversation_id=conversation,
        in_reply_to=in_reply_to,
        text=plain_text(status.get("content")),
    )


def normalize(
    workspace: WorkspaceConfig, envelope: RawEnvelope, raw: RawPointer | None = None
) -> AdapterResult:
    """The interaction (if any) in one Mastodon webhook delivery."""
    body = json_object(envelope.body, "a Mastodon webhook body")
    event = require(body, "event", "Mastodon webhook")
    if not isinstance(event, str):
        raise RejectedPayload(f"event must be a string, got {event!r}")
    if event != "status.created":
        return AdapterResult(skipped=(NotAnInteraction(f"mastodon.{event}"[:80]),))
    try:
        result = _status(workspace, _obj(require(body, "object", "status.created"), "object"))
        if isinstance(result, NotAnInteraction):
            return AdapterResult(skipped=(result,))
        return finish(workspace, envelope, [result], [], raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise RejectedPayload(f"invalid field: {where}: {error['msg']}") from None
