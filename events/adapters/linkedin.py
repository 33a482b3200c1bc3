"""LinkedIn organization social action notifications (`ORGANIZATION_SOCIAL_ACTION_NOTIFICATIONS`).

A body is `{"type": ..., "notifications": [...]}` (LinkedIn batches up to 10) or one notification.
Identities are URNs kept verbatim as user ids (`urn:li:person:…`, `urn:li:organization:…`).

What each `action` becomes (the organization is `organizationalEntity`; the acting member is
`actor`, or the owner/actor of `decoratedGeneratedActivity` when `actor` is absent):

* `LIKE`: a `reaction` from the member to the liked post's owner (`decoratedSourcePost.owner`,
  else the organization).
* `COMMENT`: a `comment` from the member to the post's owner (likewise).
* `SHARE`: a `share` (reshare) of the organization's post by the member.
* `SHARE_MENTION` (also `COMMENT_MENTION`): a `mention` of the organization by the member.
* `ADMIN_COMMENT`: the organization itself commenting, through an admin: a `comment` whose actor
  is the organization (outbound). Its subject is the post's owner when that is someone else; a
  comment in the organization's own thread answers a commenter the notification does not name,
  so the subject stays unknown.
* `COMMENT_EDIT`, `COMMENT_DELETE` and any other action: typed `NotAnInteraction` items.

Event time is `lastModifiedAt` (epoch ms). Object keys come from the content of the notification
where it identifies the action: `<action>:<generatedActivity>` (a comment or share URN is unique)
and `LIKE:<actor>:<sourcePost>` (a member likes a post once); otherwise `notificationId` (what
LinkedIn says to deduplicate on), and without that `<action>:<actor>:<sourcePost>`. Content keys
collapse retries and also the same action notified to two subscribed admins of one organization,
even if LinkedIn numbered their notifications differently.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from events.adapters.base import (
    AdapterResult,
    Draft,
    NotAnInteraction,
    RejectedPayload,
    epoch_to_datetime,
    finish,
    id_str,
    json_object,
    require,
)
from events.envelope import RawEnvelope
from events.models import Identity, Kind, RawPointer
from rapport.workspaces import WorkspaceConfig

PLATFORM = "linkedin"

KINDS = {
    "LIKE": Kind.REACTION,
    "COMMENT": Kind.COMMENT,
    "ADMIN_COMMENT": Kind.COMMENT,
    "SHARE": Kind.SHARE,
    "SHARE_MENTION": Kind.MENTION,
    "COMMENT_MENTION": Kind.MENTION,
}
NON_INTERACTIONS = {
    "COMMENT_EDIT": "linkedin.comment_edit",
    "COMMENT_DELETE": "linkedin.comment_delete",
}


def _identity(urn: Any, what: str) -> Identity:
    return Identity(platform=PLATFORM, user_id=id_str(urn, what))


def _urn(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RejectedPayload(f"{what} must be a URN string, got {value!r}")
    return value


def _decorated(notification: dict[str, Any]) -> dict[str, Any]:
    """The comment or share object of `decoratedGeneratedActivity` (empty when absent)."""
    decorated = notification.get("decoratedGeneratedActivity")
    if not isinstance(decorated, dict):
        return {}
    for key in ("comment", "share"):
        if isinstance(decorated.get(key), dict):
            return dict(decorated[key])
    return decorated


def _text(activity: dict[str, Any]) -> str | None:
    for key in ("text", "commentary", "fullText"):
        if isinstance(activity.get(key), str):
            return str(activity[key])
    message = activity.get("message")
    if isinstance(message, dict) and isinstance(message.get("text"), str):
        return str(message["text"])
    return None


def _post_owner(notification: dict[str, Any]) -> str | None:
    decorated = notification.get("decoratedSourcePost")
    if isinstance(decorated, dict):
        return _urn(decorated.get("owner") or decorated.get("author"), "decoratedSourcePost.owner")
    return None


def _notification(item: Any) -> Draft | NotAnInteraction:
    if not isinstance(item, dict):
        raise RejectedPayload(f"a notification must be an object, got {type(item).__name__}")
    action = require(item, "action", "notification")
    if not isinstance(action, str):
        raise RejectedPayload(f"notification.action must be a string, got {action!r}")
    if action in NON_INTERACTIONS:
        return NotAnInteraction(NON_INTERACTIONS[action], str(item.get("notificationId") or ""))
    kind = KINDS.get(action)
    if kind is None:
        return NotAnInteraction("linkedin.action", action[:64])

    organization = _urn(require(item, "organizationalEntity", "notification"), "organization")
    source_post = _urn(item.get("sourcePost"), "sourcePost")
    generated = _urn(item.get("generatedActivity"), "generatedActivity")
    activity = _decorated(item)
    member = _urn(item.get("actor"), "actor") or _urn(
        activity.get("owner") or activity.get("actor") or activity.get("author"), "activity owner"
    )
    post_owner = _post_owner(item)

    if action == "ADMIN_COMMENT":
        actor = organization
        subject = post_owner if post_owner != organization else None
    elif member is None:
        raise RejectedPayload(f"{action} notification names no actor")
    elif kind == Kind.MENTION or kind == Kind.SHARE:
        actor, subject = member, organization
    else:  # LIKE, COMMENT: to the post's owner
        actor, subject = member, post_owner or organization
    if actor is None:
        raise RejectedPayload("notification has no organizationalEntity")

    notification_id = item.get("notificationId")
    if generated is not None:
        object_key = f"{action}:{generated}"
    elif action == "LIKE" and source_post is not None:
        object_key = f"{action}:{actor}:{source_post}"
    elif notification_id is not None:
        object_key = f"notification:{id_str(notification_id, 'notificationId')}"
    elif source_post is not None:
        object_key = f"{action}:{actor}:{source_post}"
    else:
        raise RejectedPayload(f"{action} notification has no generatedActivity or sourcePost")
    object_id = generated or (
        id_str(notification_id, "notificationId") if notification_id is not None else object_key
    )
    if action == "SHARE_MENTION":  # the mentioning post starts its own conversation
        conversation = generated or source_post
    else:
        conversation = source_post or generated
    return Draft(
        platform=PLATFORM,
        kind=kind,
        actor=_identity(actor, "actor"),
        subject=_identity(subject, "subject") if subject else None,
        occurred_at=epoch_to_datetime(require(item, "lastModifiedAt", "notification"), "ms"),
        object_key=object_key,
        object_id=object_id,
        conversation_id=conversation,
        in_reply_to=None if action == "SHARE_MENTION" else source_post,
        text=_text(activity) if kind != Kind.REACTION else None,
    )


def normalize(
    workspace: WorkspaceConfig, envelope: RawEnvelope, raw: RawPointer | None = None
) -> AdapterResult:
    """All interactions in one organization social action delivery."""
    body = json_object(envelope.body, "a LinkedIn notification body")
    if "notifications" in body:
        items = body["notifications"]
        if not isinstance(items, list):
            raise RejectedPayload("notifications must be a list")
    elif "action" in body:
        items = [body]
    else:
        raise RejectedPayload("no notifications[] and no single notification (action) found")
    drafts: list[Draft] = []
    skipped: list[NotAnInteraction] = []
    try:
        for item in items:
            result = _notification(item)
            if isinstance(result, Draft):
                drafts.append(result)
            else:
                skipped.append(result)
        return finish(workspace, envelope, drafts, skipped, raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise RejectedPayload(f"invalid field: {where}: {error['msg']}") from None
