"""Meta webhooks: Facebook Page feed, Messenger, Instagram and WhatsApp Cloud API bodies.

One POST batches up to 1000 items: `entry[]`, each with `changes[]` (`field`/`value`),
`messaging[]` or `standby[]`; the dashboard's test button also posts a bare `{field, value}`.
Every item becomes exactly one `Draft` or one typed `NotAnInteraction`, so a batch of n items
yields n results. Meta retries for up to 36 hours, unordered, so ids never depend on the delivery:

* Messenger / Instagram message: `message:<mid>`; WhatsApp message: `message:<wamid>`.
* comment: `comment:<comment_id>:<verb>`; Page/Instagram mention: `mention:<object id>:add`
  (kept apart from the comment key: a comment that also @mentions the Page is two acts to Meta).
* reaction or like: `reaction:<type>:<target id>:<actor id>:<verb>`. A Facebook `like` and the
  `reaction` of type `like` Meta may send for the same tap share that key and collapse.
* Only `add` verbs become events (below), so the verb in a key is always `add`; it stays in the
  key so that an edit could never collide with the act it edits.

Platforms: `facebook` (object `page`: feed and Messenger), `instagram`, `whatsapp`. Ids are
strings even where Meta sends numbers. The subject is the account the webhook is for (`entry.id`,
or `recipient.id` in messaging, or WhatsApp's `metadata.phone_number_id`); when the account itself
acts in its feed (the page replying to a user's comment, reacting to it) the addressee is not in
the body, so the subject is None and `in_reply_to` names the object answered: with the page owned
that is an outbound interaction whose contact a projection can resolve through `in_reply_to`.

Decisions, and why:

* Event time is the item's own time: feed `created_time` in epoch seconds (number or string),
  messaging `timestamp` in epoch milliseconds, WhatsApp `timestamp` in seconds. `entry.time` is
  when Meta sent the batch and is used only as a last resort for items that carry no time at all
  (Instagram comments and live comments, a like of the Page, visitor posts, Page mentions and
  ratings without `created_time`); it is seconds for changes and milliseconds for messaging, read
  by magnitude. A messaging `timestamp` under 1e11 (before March 1973 in ms) is the seconds the
  dashboard's test samples use.
* Only new acts count. An edit (`edited`/`edit`, Messenger `message_edit`) re-describes an act
  already counted; a removal (`remove`, `unreact`, an empty WhatsApp reaction, a deleted message)
  does not undo that it happened, and the log is append-only; hide/unhide/block/mute are
  moderation. All are typed `meta.<item>_<edited|removed|hidden|...>`. (An edit whose `add`
  was never delivered is therefore lost; the raw body is kept.)
* Removing the like of the Page itself is the one removal that is a new act: `unfollow`
  (liking the Page is `follow`).
* A Page's own post/status/photo/video/share is a broadcast to nobody in particular:
  `meta.page_post`. A visitor's post on the Page speaks to it publicly: `mention` (a visitor's
  `share` is `share`). A rating is a public statement about the Page: `mention`.
* Echoes (`is_echo`) are messages the Page sent, the only trace of our own Messenger/Instagram
  replies: an outbound `message` authored by the Page (`entry.id`), whichever of sender/recipient
  the body puts it in. Postbacks (button taps carrying a developer payload, with no `mid`),
  opt-ins, referrals, read and delivery receipts, handover and policy callbacks are bot plumbing,
  not conversation turns: typed skips. A quick reply is a message (it has a `mid` and text). An
  Instagram story mention sent as a DM is a `mention`; an unsupported attachment is still a
  message somebody sent.
* WhatsApp `statuses` (sent/delivered/read/failed receipts) are `meta.whatsapp_status`; a button
  or list reply and a shared contact are messages (WhatsApp shows them as the user's turn);
  `system` messages are `meta.whatsapp_system`. The sender is `from` (the phone's wa_id), else
  `from_user_id`, else the one entry of `contacts[]`. WhatsApp never echoes what the business
  sends, so its outbound side is invisible here (a `sent` status is the only trace).
* Meta omits the author of some public items (Instagram `mentions` never name one; comments
  without the permission to see authors): typed `meta.<item>_unattributed`, since the raw body
  is kept and can be re-read after a Graph API lookup. A private message without a sender, or any
  item without the object id its identity needs, is malformed: `RejectedPayload`.
* Anything recognised but unrelated to people (leadgen, albums, events, story insights, page
  settings, account/template updates, `permissions`/`user` objects, unknown fields) is
  `meta.<field or item>`. A body that is no webhook at all (a Graph API object) is rejected.

Total for any JSON: every failure is a `RejectedPayload` with the path of what was wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
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
    json_body,
    require,
)
from events.envelope import RawEnvelope
from events.models import Identity, Kind, RawPointer
from rapport.workspaces import WorkspaceConfig

Item = Draft | NotAnInteraction

PLATFORMS = {"page": "facebook", "instagram": "instagram", "whatsapp_business_account": "whatsapp"}

# Page `feed`/`ratings`/`mention` items that can be an interaction; any other is `meta.<item>`.
FEED_ITEMS = frozenset({"comment", "like", "reaction", "post", "status", "photo", "video", "share"})
POST_ITEMS = frozenset({"post", "status", "photo", "video", "share"})
VERB_PARTICIPLES = {
    "edit": "edited",
    "edited": "edited",
    "remove": "removed",
    "delete": "removed",
    "hide": "hidden",
    "unhide": "unhidden",
    "block": "blocked",
    "unblock": "unblocked",
    "mute": "muted",
    "unmute": "unmuted",
}
# `changes[]` fields whose value is one messaging item (the dashboard's test samples).
MESSAGING_FIELDS = frozenset(
    {
        "messages",
        "message_echoes",
        "message_edits",
        "message_reactions",
        "messaging_seen",
        "messaging_postbacks",
        "messaging_referral",
        "messaging_optins",
        "messaging_handovers",
        "standby",
    }
)
INSTAGRAM_FIELDS = frozenset({"comments", "live_comments", "mentions", "story_insights"})
# Messaging items that are recognised and never an interaction, by their distinguishing key.
MESSAGING_SKIPS = {
    "read": "meta.read_receipt",
    "delivery": "meta.delivery_receipt",
    "message_edit": "meta.message_edited",
    "postback": "meta.postback",
    "optin": "meta.optin",
    "referral": "meta.referral",
    "account_linking": "meta.account_linking",
    "pass_thread_control": "meta.handover",
    "take_thread_control": "meta.handover",
    "request_thread_control": "meta.handover",
    "app_roles": "meta.handover",
    "policy-enforcement": "meta.policy_enforcement",
    "payment": "meta.payment",
    "checkout_update": "meta.checkout_update",
    "pre_checkout": "meta.checkout_update",
    "game_play": "meta.game_play",
}
WHATSAPP_SKIPS = {"system": "meta.whatsapp_system", "request_welcome": "meta.whatsapp_welcome"}
MS_THRESHOLD = 100_000_000_000  # 1e11: as ms, 1973-03-03; as seconds, year 5138
_SLUG = re.compile(r"[a-z][a-z0-9_]{0,39}")


@dataclass(frozen=True, slots=True)
class _Entry:
    """What one `entry[]` says about all its items."""

    platform: str
    account_id: str | None  # entry.id: the Page, Instagram account or WhatsApp business account
    time: Any  # entry.time: the send time; only a last resort for items without their own


# --- small total helpers ------------------------------------------------------------------------


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RejectedPayload(f"{where} must be an object, got {type(value).__name__}")
    return value


def _opt_obj(mapping: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """`mapping[key]` as an object; {} when absent or null."""
    value = mapping.get(key)
    return {} if value is None else _obj(value, f"{where}.{key}")


def _opt_list(mapping: dict[str, Any], key: str, where: str) -> list[Any]:
    value = mapping.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RejectedPayload(f"{where}.{key} must be a list, got {type(value).__name__}")
    return value


def _opt_id(mapping: dict[str, Any], key: str, where: str) -> str | None:
    value = mapping.get(key)
    return None if value is None else id_str(value, f"{where}.{key}")


def _req_id(mapping: dict[str, Any], key: str, where: str) -> str:
    return id_str(require(mapping, key, where), f"{where}.{key}")


def _text(mapping: dict[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    return value if isinstance(value, str) and value else None


def _slug(value: Any) -> str:
    """A bounded, safe name for `meta.<name>` from body text."""
    if isinstance(value, str) and _SLUG.fullmatch(value):
        return value
    return "unknown"


def _skip(thing: Any, detail: Any = "") -> NotAnInteraction:
    return NotAnInteraction(f"meta.{_slug(thing)}", detail if isinstance(detail, str) else "")


def _identity(platform: str, user_id: str) -> Identity:
    try:
        return Identity(platform=platform, user_id=user_id)
    except ValidationError:
        raise RejectedPayload(f"{platform} id {user_id[:40]!r}... is not a valid user id") from None


def _epoch(value: Any, unit: str, where: str) -> datetime:
    if isinstance(value, float) and not math.isfinite(value):
        raise RejectedPayload(f"{where} is not a finite timestamp")
    if not isinstance(value, int | str | float) or isinstance(value, bool):
        raise RejectedPayload(f"{where} must be an epoch timestamp, got {type(value).__name__}")
    try:
        return epoch_to_datetime(value, unit)
    except (ArithmeticError, ValueError) as exc:
        if isinstance(exc, RejectedPayload):
            raise RejectedPayload(f"{where}: {exc.reason}") from None
        raise RejectedPayload(f"{where} is not a usable timestamp: {value!r:.40}") from None


def _unit_by_magnitude(value: Any) -> str:
    """`s` or `ms` for an epoch Meta sends in either unit (entry.time, test-sample timestamps)."""
    try:
        return "ms" if abs(float(value)) >= MS_THRESHOLD else "s"
    except (TypeError, ValueError, OverflowError):
        return "s"  # _epoch rejects the value with its reason


def _last_resort_time(entry: _Entry, where: str) -> datetime:
    """entry.time, for an item with no time of its own; see the module docstring for which."""
    if entry.time is None:
        raise RejectedPayload(f"{where} has no time of its own and the body has no entry.time")
    return _epoch(entry.time, _unit_by_magnitude(entry.time), "entry.time")


def _own_time(entry: _Entry, value: dict[str, Any], key: str, where: str) -> datetime:
    """The item's `key` in epoch seconds, else (last resort) entry.time."""
    if value.get(key) is None:
        return _last_resort_time(entry, where)
    return _epoch(value[key], "s", f"{where}.{key}")


def _subject(entry: _Entry, actor_id: str) -> Identity | None:
    """The account the webhook is for, unless it is the actor (then the addressee is unknown)."""
    if entry.account_id is None or entry.account_id == actor_id:
        return None
    return _identity(entry.platform, entry.account_id)


def _feed_actor(value: dict[str, Any], where: str) -> str | None:
    """`from.id`, else `sender_id`, `reviewer_id` or `user_id`; None when Meta names nobody."""
    sender = _opt_obj(value, "from", where)
    if sender.get("id") is not None:
        return id_str(sender["id"], f"{where}.from.id")
    for key in ("sender_id", "reviewer_id", "user_id"):
        if value.get(key) is not None:
            return id_str(value[key], f"{where}.{key}")
    return None


# --- Page feed, ratings and mentions ------------------------------------------------------------


def _feed(entry: _Entry, field: str, raw_value: Any) -> Item:
    """One `feed`, `ratings` or `mention` change: dispatch on `item` and `verb`."""
    where = f"{field} value"
    value = _obj(raw_value, where)
    item = require(value, "item", where)
    verb = require(value, "verb", where)
    if not isinstance(item, str) or not isinstance(verb, str):
        raise RejectedPayload(f"{where} item and verb must be strings")
    is_page_like = item == "like" and all(
        value.get(k) is None for k in ("post_id", "comment_id", "parent_id")
    )
    if is_page_like:
        return _page_like(entry, value, verb, where)
    if field != "mention" and item not in FEED_ITEMS and item != "rating":
        return _skip(item, verb)
    thing = "mention" if field == "mention" else item
    if verb != "add":
        return _skip(f"{thing}_{VERB_PARTICIPLES.get(verb, _slug(verb))}")
    if field == "mention":
        return _page_mention(entry, value, item, where)
    if item == "comment":
        return _feed_comment(entry, value, where)
    if item in ("like", "reaction"):
        return _feed_reaction(entry, value, item, where)
    if item == "rating":
        return _rating(entry, value, where)
    return _feed_post(entry, value, item, where)


def _feed_comment(entry: _Entry, value: dict[str, Any], where: str) -> Item:
    """A comment on a post (`comment`) or on a comment (`reply`: parent_id is not the post)."""
    actor_id = _feed_actor(value, where)
    if actor_id is None:
        return _skip("comment_unattributed")
    comment_id = _req_id(value, "comment_id", where)
    post_id = _opt_id(value, "post_id", where)
    parent_id = _opt_id(value, "parent_id", where)
    is_reply = parent_id is not None and parent_id != post_id
    return Draft(
        platform=entry.platform,
        kind=Kind.REPLY if is_reply else Kind.COMMENT,
        actor=_identity(entry.platform, actor_id),
        subject=_subject(entry, actor_id),
        occurred_at=_own_time(entry, value, "created_time", where),
        object_key=f"comment:{comment_id}:add",
        object_id=comment_id,
        conversation_id=post_id,
        in_reply_to=parent_id or post_id,
        text=_text(value, "message"),
    )


def _feed_reaction(entry: _Entry, value: dict[str, Any], item: str, where: str) -> Item:
    """A like or reaction on a post or comment: the (type, target, actor, verb) tuple is the id."""
    actor_id = _feed_actor(value, where)
    if actor_id is None:
        return _skip(f"{item}_unattributed")
    target = (
        _opt_id(value, "comment_id", where)
        or _opt_id(value, "post_id", where)
        or _opt_id(value, "parent_id", where)
    )
    if target is None:
        raise RejectedPayload(f"{where} ({item}) has no comment_id, post_id or parent_id")
    reaction = _text(value, "reaction_type") or "like"
    return Draft(
        platform=entry.platform,
        kind=Kind.REACTION,
        actor=_identity(entry.platform, actor_id),
        subject=_subject(entry, actor_id),
        occurred_at=_own_time(entry, value, "created_time", where),
        object_key=f"reaction:{reaction}:{target}:{actor_id}:add",
        object_id=f"{reaction}:{target}:{actor_id}",
        conversation_id=_opt_id(value, "post_id", where),
        in_reply_to=target,
    )


def _page_like(entry: _Entry, value: dict[str, Any], verb: str, where: str) -> Item:
    """A like of the Page itself (no post or comment): `follow`, and its removal `unfollow`."""
    if verb not in ("add", "remove"):
        return _skip(f"page_like_{VERB_PARTICIPLES.get(verb, _slug(verb))}")
    actor_id = _feed_actor(value, where)
    if actor_id is None:
        return _skip("page_like_unattributed")
    return Draft(
        platform=entry.platform,
        kind=Kind.FOLLOW if verb == "add" else Kind.UNFOLLOW,
        actor=_identity(entry.platform, actor_id),
        subject=_subject(entry, actor_id),
        occurred_at=_own_time(entry, value, "created_time", where),
        object_key=f"page_like:{entry.account_id}:{actor_id}:{verb}",
        object_id=f"page_like:{entry.account_id}:{actor_id}",
    )


def _feed_post(entry: _Entry, value: dict[str, Any], item: str, where: str) -> Item:
    """The Page's own post is a broadcast (skip); a visitor's post on the Page is a mention."""
    actor_id = _feed_actor(value, where)
    if actor_id is None:
        return _skip(f"{item}_unattributed")
    if entry.account_id is None or actor_id == entry.account_id:
        return _skip("page_post", item)
    keys = ("share_id", "post_id") if item == "share" else ("post_id", "photo_id", "video_id")
    object_id = next((_opt_id(value, k, where) for k in keys if value.get(k) is not None), None)
    if object_id is None:
        raise RejectedPayload(f"{where} ({item}) has none of {', '.join(keys)}")
    return Draft(
        platform=entry.platform,
        kind=Kind.SHARE if item == "share" else Kind.MENTION,
        actor=_identity(entry.platform, actor_id),
        subject=_subject(entry, actor_id),
        occurred_at=_own_time(entry, value, "created_time", where),
        object_key=f"post:{object_id}:add",
        object_id=object_id,
        conversation_id=_opt_id(value, "post_id", where),
        text=_text(value, "message"),
    )


def _rating(entry: _Entry, value: dict[str, Any], where: str) -> Item:
    """A review of the Page: a public statement about it, so a `mention`."""
    actor_id = _feed_actor(value, where)
    if actor_id is None:
        return _skip("rating_unattributed")
    story_id = _req_id(value, "open_graph_story_id", where)
    return Draft(
        platform=entry.platform,
        kind=Kind.MENTION,
        actor=_identity(entry.platform, actor_id),
        subject=_subject(entry, actor_id),
        occurred_at=_own_time(entry, value, "created_time", where),
        object_key=f"rating:{story_id}:add",
        object_id=story_id,
        conversation_id=story_id,
        text=_text(value, "review_text"),
    )


def _page_mention(entry: _Entry, value: dict[str, Any], item: str, where: str) -> Item:
    """The Page was @mentioned in a post or a comment."""
    actor_id = _feed_actor(value, where)
    if actor_id is None:
        return _skip("mention_unattributed")
    post_id = _opt_id(value, "post_id", where)
    if item == "comment":
        object_id = _req_id(value, "comment_id", where)
        in_reply_to = _opt_id(value, "parent_id", where) or post_id
    else:
        object_id = _req_id(value, "post_id", where)
        in_reply_to = None
    return Draft(
        platform=entry.platform,
        kind=Kind.MENTION,
        actor=_identity(entry.platform, actor_id),
        subject=_subject(entry, actor_id),
        occurred_at=_own_time(entry, value, "created_time", where),
        object_key=f"mention:{object_id}:add",
        object_id=object_id,
        conversation_id=post_id,
        in_reply_to=in_reply_to,
        text=_text(value, "message"),
    )


# --- Instagram changes --------------------------------------------------------------------------


def _ig_comment(entry: _Entry, field: str, raw_value: Any) -> Item:
    """A comment (or live comment) on media; with `parent_id` a reply to a comment.

    Instagram comment webhooks carry no time: entry.time is the last resort here.
    """
    where = f"{field} value"
    value = _obj(raw_value, where)
    sender = _opt_obj(value, "from", where)
    thing = "live_comment" if field == "live_comments" else "comment"
    if sender.get("id") is None:
        return _skip(f"{thing}_unattributed")
    actor_id = id_str(sender["id"], f"{where}.from.id")
    comment_id = _req_id(value, "id", where)
    media_id = _opt_id(_opt_obj(value, "media", where), "id", f"{where}.media")
    parent_id = _opt_id(value, "parent_id", where)
    return Draft(
        platform=entry.platform,
        kind=Kind.REPLY if parent_id else Kind.COMMENT,
        actor=_identity(entry.platform, actor_id),
        subject=_subject(entry, actor_id),
        occurred_at=_own_time(entry, value, "created_time", where),
        object_key=f"comment:{comment_id}:add",
        object_id=comment_id,
        conversation_id=media_id,
        in_reply_to=parent_id or media_id,
        text=_text(value, "text"),
    )


def _ig_mention(entry: _Entry, raw_value: Any) -> Item:
    """The account was @mentioned; Meta names only the comment/media, never the author."""
    value = _obj(raw_value, "mentions value")
    sender = _opt_obj(value, "from", "mentions value")
    if sender.get("id") is None:
        return _skip("mention_unattributed", "Instagram mentions carry no author")
    actor_id = id_str(sender["id"], "mentions value.from.id")
    object_id = _opt_id(value, "comment_id", "mentions value") or _req_id(
        value, "media_id", "mentions value"
    )
    return Draft(
        platform=entry.platform,
        kind=Kind.MENTION,
        actor=_identity(entry.platform, actor_id),
        subject=_subject(entry, actor_id),
        occurred_at=_own_time(entry, value, "created_time", "mentions value"),
        object_key=f"mention:{object_id}:add",
        object_id=object_id,
        conversation_id=_opt_id(value, "media_id", "mentions value"),
        text=_text(value, "text"),
    )


# --- Messenger and Instagram messaging ----------------------------------------------------------


def _party(item: dict[str, Any], key: str) -> str:
    """`sender`/`recipient` id (a customer-chat guest has only a `user_ref`)."""
    party = _obj(require(item, key, "messaging[]"), f"messaging[].{key}")
    if party.get("id") is not None:
        return id_str(party["id"], f"messaging[].{key}.id")
    return id_str(require(party, "user_ref", f"messaging[].{key}"), f"messaging[].{key}.user_ref")


def _messaging_time(item: dict[str, Any]) -> datetime:
    """Messaging `timestamp` is epoch ms; below 1e11 it is the seconds of a test sample."""
    value = require(item, "timestamp", "messaging[]")
    return _epoch(value, _unit_by_magnitude(value), "messaging[].timestamp")


def _messaging(entry: _Entry, raw_item: Any) -> Item:
    """One `messaging[]`/`standby[]` item: a message, a reaction, or a typed non-interaction."""
    item = _obj(raw_item, "messaging[]")
    if "message" in item:
        return _message(entry, item)
    if "reaction" in item:
        return _message_reaction(entry, item)
    for key, what in MESSAGING_SKIPS.items():
        if key in item:
            return NotAnInteraction(what)
    return NotAnInteraction("meta.messaging_other", ",".join(sorted(map(str, item))[:8]))


def _message(entry: _Entry, item: dict[str, Any]) -> Item:
    """A message; an echo is one the Page sent, so the Page is its author."""
    message = _obj(item["message"], "messaging[].message")
    if message.get("is_deleted") is True:
        return NotAnInteraction("meta.message_deleted")
    mid = _req_id(message, "mid", "messaging[].message")
    actor_id, subject_id = _party(item, "sender"), _party(item, "recipient")
    is_echo = message.get("is_echo") is True
    if is_echo and subject_id == entry.account_id and actor_id != entry.account_id:
        actor_id, subject_id = subject_id, actor_id  # the roles reversed: the Page wrote it
    reply_to = _opt_obj(message, "reply_to", "messaging[].message")
    story = _opt_obj(reply_to, "story", "messaging[].message.reply_to")
    attachments = _opt_list(message, "attachments", "messaging[].message")
    is_story_mention = any(
        isinstance(a, dict) and a.get("type") == "story_mention" for a in attachments
    )
    return Draft(
        platform=entry.platform,
        kind=Kind.MENTION if is_story_mention else Kind.MESSAGE,
        actor=_identity(entry.platform, actor_id),
        subject=_identity(entry.platform, subject_id),
        occurred_at=_messaging_time(item),
        object_key=f"message:{mid}",
        object_id=mid,
        in_reply_to=_opt_id(reply_to, "mid", "reply_to") or _opt_id(story, "id", "reply_to.story"),
        text=_text(message, "text"),
    )


def _message_reaction(entry: _Entry, item: dict[str, Any]) -> Item:
    """A reaction to a message; `unreact` takes one back and is not a new act."""
    reaction = _obj(item["reaction"], "messaging[].reaction")
    action = reaction.get("action", "react")
    if action != "react":
        return _skip("reaction_removed" if action == "unreact" else f"reaction_{_slug(action)}")
    mid = _req_id(reaction, "mid", "messaging[].reaction")
    actor_id, subject_id = _party(item, "sender"), _party(item, "recipient")
    kind_of = _text(reaction, "reaction") or _text(reaction, "emoji") or "reaction"
    return Draft(
        platform=entry.platform,
        kind=Kind.REACTION,
        actor=_identity(entry.platform, actor_id),
        subject=_identity(entry.platform, subject_id),
        occurred_at=_messaging_time(item),
        object_key=f"reaction:{kind_of}:{mid}:{actor_id}:add",
        object_id=f"{kind_of}:{mid}:{actor_id}",
        in_reply_to=mid,
    )


# --- WhatsApp -----------------------------------------------------------------------------------


def _whatsapp(entry: _Entry, raw_value: Any) -> list[Item]:
    """A `messages` change: one result per message and per status receipt."""
    where = "messages value"
    value = _obj(raw_value, where)
    metadata = _opt_obj(value, "metadata", where)
    business_id = _opt_id(metadata, "phone_number_id", f"{where}.metadata") or entry.account_id
    contacts = _opt_list(value, "contacts", where)
    items: list[Item] = [
        _whatsapp_message(entry, business_id, contacts, message)
        for message in _opt_list(value, "messages", where)
    ]
    for status in _opt_list(value, "statuses", where):
        items.append(_skip("whatsapp_status", _obj(status, f"{where}.statuses[]").get("status")))
    if not items:
        items.append(_skip("whatsapp_error" if "errors" in value else "whatsapp_other"))
    return items


def _whatsapp_sender(message: dict[str, Any], contacts: list[Any], where: str) -> str:
    """`from` (wa_id), else `from_user_id` (business-scoped id), else the single contact."""
    for key in ("from", "from_user_id"):
        if message.get(key) is not None:
            return id_str(message[key], f"{where}.{key}")
    if len(contacts) == 1 and isinstance(contacts[0], dict):
        for key in ("wa_id", "user_id"):
            if contacts[0].get(key) is not None:
                return id_str(contacts[0][key], f"contacts[0].{key}")
    raise RejectedPayload(f"{where} names no sender (from, from_user_id or one contact)")


def _whatsapp_text(message: dict[str, Any], msg_type: str) -> str | None:
    """The words of a text, button or list reply, or a media caption."""
    body = message.get(msg_type)
    if not isinstance(body, dict):
        return None
    if msg_type == "interactive":
        reply = body.get("button_reply") or body.get("list_reply")
        return _text(reply, "title") if isinstance(reply, dict) else None
    return _text(body, "body") or _text(body, "text") or _text(body, "caption")


def _whatsapp_message(
    entry: _Entry, business_id: str | None, contacts: list[Any], raw_message: Any
) -> Item:
    where = "messages[]"
    message = _obj(raw_message, where)
    wamid = _req_id(message, "id", where)
    msg_type = _text(message, "type") or "unknown"
    if msg_type in WHATSAPP_SKIPS:
        return NotAnInteraction(WHATSAPP_SKIPS[msg_type])
    actor_id = _whatsapp_sender(message, contacts, where)
    actor = _identity(entry.platform, actor_id)
    subject = None if business_id in (None, actor_id) else _identity(entry.platform, business_id)
    occurred_at = _epoch(require(message, "timestamp", where), "s", f"{where}.timestamp")
    context = _opt_obj(message, "context", where)
    if msg_type == "reaction":
        reaction = _obj(require(message, "reaction", where), f"{where}.reaction")
        emoji = _text(reaction, "emoji")
        if emoji is None:
            return _skip("reaction_removed")
        target = _req_id(reaction, "message_id", f"{where}.reaction")
        return Draft(
            platform=entry.platform,
            kind=Kind.REACTION,
            actor=actor,
            subject=subject,
            occurred_at=occurred_at,
            object_key=f"reaction:{emoji}:{target}:{actor_id}:add",
            object_id=wamid,
            in_reply_to=target,
        )
    return Draft(
        platform=entry.platform,
        kind=Kind.MESSAGE,
        actor=actor,
        subject=subject,
        occurred_at=occurred_at,
        object_key=f"message:{wamid}",
        object_id=wamid,
        conversation_id=_opt_id(message, "group_id", where),
        in_reply_to=_opt_id(context, "id", f"{where}.context"),
        text=_whatsapp_text(message, msg_type),
    )


# --- the body -----------------------------------------------------------------------------------


def _change(entry: _Entry, raw_change: Any) -> list[Item]:
    """One `changes[]` item (or a flat `{field, value}` body)."""
    change = _obj(raw_change, "changes[]")
    field = require(change, "field", "changes[]")
    if not isinstance(field, str):
        raise RejectedPayload("changes[].field must be a string")
    value = change.get("value")
    if entry.platform == "whatsapp":
        return _whatsapp(entry, value) if field == "messages" else [_skip(field)]
    if field in MESSAGING_FIELDS:
        return [_messaging(entry, value)]
    if entry.platform == "facebook" and field in ("feed", "ratings", "mention"):
        return [_feed(entry, field, value)]
    if entry.platform == "instagram" and field in ("comments", "live_comments"):
        return [_ig_comment(entry, field, value)]
    if entry.platform == "instagram" and field == "mentions":
        return [_ig_mention(entry, value)]
    return [_skip(field)]


def _entry(obj: str, raw_entry: Any, index: int) -> list[Item]:
    where = f"entry[{index}]"
    entry_body = _obj(raw_entry, where)
    platform = PLATFORMS.get(obj)
    if platform is None:  # `permissions`, `user`, ...: recognised, about nobody's relationship
        changes = entry_body.get("changes")
        if not isinstance(changes, list) or not changes:
            return [_skip(obj)]
        return [_skip(obj, c.get("field") if isinstance(c, dict) else "") for c in changes]
    entry = _Entry(platform, _opt_id(entry_body, "id", where), entry_body.get("time"))
    items: list[Item] = []
    for change in _opt_list(entry_body, "changes", where):
        items.extend(_change(entry, change))
    for key in ("messaging", "standby"):
        items.extend(_messaging(entry, item) for item in _opt_list(entry_body, key, where))
    if "field" in entry_body:
        items.extend(_change(entry, entry_body))
    if not items:
        raise RejectedPayload(f"{where} has no changes, messaging or standby items")
    return items


def _flat_object(body: dict[str, Any]) -> str:
    """The `object` of a bare `{field, value}` body, which may not say."""
    obj = body.get("object")
    if isinstance(obj, str):
        return obj
    value = body.get("value")
    if isinstance(value, dict) and value.get("messaging_product") == "whatsapp":
        return "whatsapp_business_account"
    field = body.get("field")
    return "instagram" if isinstance(field, str) and field in INSTAGRAM_FIELDS else "page"


def _items(body: Any) -> list[Item]:
    if not isinstance(body, dict):
        raise RejectedPayload(f"a Meta webhook body is a JSON object, got {type(body).__name__}")
    if "entry" not in body:
        if "field" in body:
            return _flat(body)
        keys = ", ".join(sorted(map(str, body))[:10])
        raise RejectedPayload(f"not a Meta webhook body: no entry[] or field/value (keys: {keys})")
    obj, entries = body.get("object"), body["entry"]
    if not isinstance(obj, str):
        raise RejectedPayload("a Meta webhook body needs a string `object`")
    if not isinstance(entries, list):
        raise RejectedPayload(f"entry must be a list, got {type(entries).__name__}")
    if not entries:
        raise RejectedPayload("entry[] is empty")
    return [item for index, raw in enumerate(entries) for item in _entry(obj, raw, index)]


def _flat(body: dict[str, Any]) -> list[Item]:
    """The dashboard's test delivery: one change, no entry (so no account id and no entry.time)."""
    obj = _flat_object(body)
    platform = PLATFORMS.get(obj)
    if platform is None:
        return [_skip(obj)]
    return _change(_Entry(platform, None, None), body)


def normalize(
    workspace: WorkspaceConfig, envelope: RawEnvelope, raw: RawPointer | None = None
) -> AdapterResult:
    """All interactions in one Meta webhook delivery, one result per item."""
    body = json_body(envelope.body)
    drafts: list[Draft] = []
    skipped: list[NotAnInteraction] = []
    for item in _items(body):
        if isinstance(item, Draft):
            drafts.append(item)
        else:
            skipped.append(item)
    try:
        return finish(workspace, envelope, drafts, skipped, raw)
    except ValidationError as exc:
        raise RejectedPayload(f"an item does not fit the event model: {exc.errors()[:1]}") from None
