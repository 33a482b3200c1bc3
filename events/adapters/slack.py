"""Slack Events API (`event_callback` bodies): messages, app mentions and reactions.

What each event becomes:

* `message` in a direct-message channel (`channel_type: im`, or a `D…` channel id): a `message`
  from `event.user` to the other party, which is the authorised user or bot of the delivery
  (`authorizations[].user_id`) that is not the sender; when the sender is that authorised party
  the recipient is not in the body and the subject stays unknown.
* `message` or `app_mention` in a channel: it may relate to someone in two ways, tried in this
  order: a thread `reply` (`thread_ts` set and different from `ts`; subject `parent_user_id`)
  and a `mention` (`<@U…>` in the text; for a contact's message the subject is the mentioned owned
  account, else the mentioned authorised bot; for an owned account's message, the first
  mentioned contact). The first relation that puts exactly one owned account on one side wins
  (a contact's thread reply to another contact that names the brand is a mention of the brand);
  when none does, the first relation found is kept. A top-level channel message that mentions
  nobody is addressed to no one: `slack.channel_message`, not an interaction. (A `comment` kind
  was considered for it, but with no subject it could never be inbound or outbound.) The same
  message delivered as both `message` and `app_mention` is classified by the same rule and has
  the same object key, so the two deliveries are one event.
* `reaction_added`: a `reaction` from `user` to `item_user` (the reacted item's author).
* `url_verification`, `reaction_removed`, message subtypes (`message_changed`,
  `message_deleted`, `bot_message`, joins, …), messages without a human `user`, and any other
  event type: typed `NotAnInteraction` items.

Event time is the event's own timestamp: the message `ts` (the message's creation time; equal to
`event_ts` for a new message) and the reaction's `event_ts`. The envelope's `event_time` is when
Slack dispatched the event, in whole seconds (and in Slack's own example a placeholder), so it is
used only when the event carries no timestamp of its own.

Object keys do not use `event_id`: it identifies one dispatch, and the same message reaches an
app once as `message` and once as `app_mention`. Messages are keyed by `(channel, ts)` and
reactions by `(user, reaction, channel, item ts)`, so retries (`X-Slack-Retry-Num`) and the two
dispatches collapse. The team id is left out: a Slack Connect channel keeps its id across teams.
"""

from __future__ import annotations

import re
from datetime import datetime
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
from events.direction import counting_relation
from events.envelope import RawEnvelope
from events.models import Identity, Kind, RawPointer
from rapport.workspaces import WorkspaceConfig

PLATFORM = "slack"

# Message subtypes that still carry a person's new message; every other subtype is an edit, a
# deletion, a bot post or a channel event.
CONVERSATIONAL_SUBTYPES = frozenset({None, "thread_broadcast", "file_share", "me_message"})

_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


def _identity(user_id: Any, what: str) -> Identity:
    return Identity(platform=PLATFORM, user_id=id_str(user_id, what))


def _opt_id(value: Any, what: str) -> str | None:
    return None if value is None or value == "" else id_str(value, what)


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RejectedPayload(f"{where} must be an object, got {type(value).__name__}")
    return value


def slack_ts(value: Any, what: str) -> datetime:
    """A Slack timestamp (`"1360782804.083113"`, epoch seconds with microseconds) to UTC."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise RejectedPayload(f"{what} must be a Slack timestamp string, got {value!r}")
    return epoch_to_datetime(value, "s")


def _event_time(event: dict[str, Any], body: dict[str, Any], *keys: str) -> datetime:
    for key in keys:
        if event.get(key) is not None:
            return slack_ts(event[key], f"event.{key}")
    return epoch_to_datetime(require(body, "event_time", "event_callback"), "s")


def _authorized(body: dict[str, Any]) -> list[str]:
    """User ids the delivery is for (the installing user or the app's bot user)."""
    out: list[str] = []
    authorizations = body.get("authorizations")
    if isinstance(authorizations, list):
        for item in authorizations:
            if isinstance(item, dict) and isinstance(item.get("user_id"), str):
                out.append(item["user_id"])
    return out


def _mention_subject(
    workspace: WorkspaceConfig, actor: Identity, text: str | None, authorized: list[str]
) -> Identity | None:
    mentioned = [uid for uid in _MENTION.findall(text or "") if uid != actor.user_id]
    if not mentioned:
        return None
    if workspace.owned(PLATFORM, actor.user_id) is not None:
        contacts = [uid for uid in mentioned if workspace.owned(PLATFORM, uid) is None]
        return _identity(contacts[0], "mention") if contacts else None
    owned = [uid for uid in mentioned if workspace.owned(PLATFORM, uid) is not None]
    bots = [uid for uid in mentioned if uid in authorized]
    return _identity((owned or bots or mentioned)[0], "mention")


def _message(
    workspace: WorkspaceConfig, body: dict[str, Any], event: dict[str, Any]
) -> Draft | NotAnInteraction:
    subtype = event.get("subtype")
    if subtype not in CONVERSATIONAL_SUBTYPES:
        return NotAnInteraction(f"slack.message_{subtype}")
    if event.get("user") is None:
        return NotAnInteraction("slack.message_without_user", str(event.get("bot_id") or ""))
    actor = _identity(event["user"], "event.user")
    channel = id_str(require(event, "channel", "event"), "event.channel")
    ts = id_str(require(event, "ts", "event"), "event.ts")
    occurred_at = _event_time(event, body, "ts", "event_ts")
    thread_ts = _opt_id(event.get("thread_ts"), "event.thread_ts")
    text = event.get("text") if isinstance(event.get("text"), str) else None
    authorized = _authorized(body)
    is_dm = event.get("channel_type") == "im" or channel.startswith("D")
    object_id = f"{channel}:{ts}"

    if is_dm:
        other = next((uid for uid in authorized if uid != actor.user_id), None)
        return Draft(
            platform=PLATFORM,
            kind=Kind.MESSAGE,
            actor=actor,
            subject=_identity(other, "authorizations[].user_id") if other else None,
            occurred_at=occurred_at,
            object_key=f"message:{object_id}",
            object_id=object_id,
            conversation_id=f"{channel}:{thread_ts}" if thread_ts else None,
            in_reply_to=f"{channel}:{thread_ts}" if thread_ts and thread_ts != ts else None,
            text=text,
        )

    relations: list[tuple[Kind, Identity]] = []
    is_reply = thread_ts is not None and thread_ts != ts
    parent_user = _opt_id(event.get("parent_user_id"), "event.parent_user_id")
    if is_reply and parent_user is not None and parent_user != actor.user_id:
        relations.append((Kind.REPLY, _identity(parent_user, "event.parent_user_id")))
    mentioned = _mention_subject(workspace, actor, text, authorized)
    if mentioned is not None:
        relations.append((Kind.MENTION, mentioned))
    if not relations:
        return NotAnInteraction(
            "slack.thread_reply_without_parent" if is_reply else "slack.channel_message", object_id
        )
    kind, subject = counting_relation(workspace, actor, relations)
    return Draft(
        platform=PLATFORM,
        kind=kind,
        actor=actor,
        subject=subject,
        occurred_at=occurred_at,
        object_key=f"message:{object_id}",
        object_id=object_id,
        conversation_id=f"{channel}:{thread_ts or ts}",
        in_reply_to=f"{channel}:{thread_ts}" if is_reply else None,
        text=text,
    )


def _reaction(body: dict[str, Any], event: dict[str, Any]) -> Draft | NotAnInteraction:
    actor = _identity(require(event, "user", "reaction_added"), "event.user")
    reaction = id_str(require(event, "reaction", "reaction_added"), "event.reaction")
    item = _obj(require(event, "item", "reaction_added"), "event.item")
    if item.get("type") == "message":
        channel = id_str(require(item, "channel", "event.item"), "event.item.channel")
        target = f"{channel}:{id_str(require(item, 'ts', 'event.item'), 'event.item.ts')}"
    else:  # a file or file comment
        target = id_str(item.get("file_comment") or item.get("file"), "event.item.file")
    if event.get("item_user") is None:
        return NotAnInteraction("slack.reaction_without_item_user", target)
    object_id = f"{actor.user_id}:{reaction}:{target}"
    return Draft(
        platform=PLATFORM,
        kind=Kind.REACTION,
        actor=actor,
        subject=_identity(event["item_user"], "event.item_user"),
        occurred_at=_event_time(event, body, "event_ts"),
        object_key=f"reaction:{object_id}",
        object_id=object_id,
        conversation_id=target if item.get("type") == "message" else None,
        in_reply_to=target,
        text=f":{reaction}:",
    )


def _callback(workspace: WorkspaceConfig, body: dict[str, Any]) -> Draft | NotAnInteraction:
    event = _obj(require(body, "event", "event_callback"), "event")
    kind = require(event, "type", "event")
    if kind in ("message", "app_mention"):
        return _message(workspace, body, event)
    if kind == "reaction_added":
        return _reaction(body, event)
    return NotAnInteraction(f"slack.{kind}" if isinstance(kind, str) else "slack.event")


def normalize(
    workspace: WorkspaceConfig, envelope: RawEnvelope, raw: RawPointer | None = None
) -> AdapterResult:
    """The interaction (if any) in one Events API delivery."""
    body = json_object(envelope.body, "a Slack Events API body")
    kind = require(body, "type", "Slack body")
    if kind == "url_verification":
        return AdapterResult(skipped=(NotAnInteraction("slack.url_verification"),))
    if kind != "event_callback":
        return AdapterResult(skipped=(NotAnInteraction(f"slack.{kind}"[:64]),))
    try:
        result = _callback(workspace, body)
        if isinstance(result, NotAnInteraction):
            return AdapterResult(skipped=(result,))
        return finish(workspace, envelope, [result], [], raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise RejectedPayload(f"invalid field: {where}: {error['msg']}") from None
