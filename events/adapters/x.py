"""X (Twitter) Account Activity API: the body's quirks absorbed here.

One delivery is sent per subscribed `for_user_id`, so event ids never depend on it: a DM between
two owned accounts, or a tweet mentioning both, collapses to one event per workspace. Ids are
always read from the string fields (`id_str`, DM `id`): numeric tweet ids overflow doubles.

What each array becomes:

* `tweet_create_events`: a retweet (`retweeted_status`) is a `share` of the original author's
  tweet. Otherwise the tweet may relate to someone in three ways, tried in this order: a `reply`
  (`in_reply_to_status_id_str`, subject `in_reply_to_user_id_str`), a `quote` (`is_quote_status`
  with `quoted_status`, subject the quoted author) and a `mention` (`entities.user_mentions`; for a
  contact's tweet the subject is the mentioned owned account, preferring the delivery's
  `for_user_id`; for an owned account's tweet, the first mentioned contact). The first relation
  that puts exactly one owned account on one side wins, so a contact's reply to another contact
  that names the brand is a mention of the brand rather than an external reply; when none does,
  the first relation found is kept (an internal or external interaction). A tweet relating to
  nobody but its author is `x.own_tweet` (an owned account posting) or `x.tweet_without_subject`.
* `favorite_events`: a `reaction` from `user` to the favorited tweet's author, at `timestamp_ms`
  (the favorite's own time; the favorited tweet's `created_at` is when the tweet was written).
* `follow_events`: `follow` / `unfollow` from `source` to `target` at `created_timestamp`.
* `direct_message_events`: a `message` from `sender_id` to `target.recipient_id`. The `users`
  map is not read (the vendor's own example nests it inside `apps`).
* typing, read receipts, deletions, `user_event` (revocations), blocks and mutes: typed
  `NotAnInteraction` items.

Tweet time is `timestamp_ms` (epoch ms, string or number) when present, else the Twitter-format
`created_at` ("Mon Mar 26 16:33:26 +0000 2018"). `conversation_id` is `conversation_id_str` when
the body has it, else unknown (the projection then groups turns by time).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
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

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}


def _identity(user_id: Any, what: str) -> Identity:
    return Identity(platform=PLATFORM, user_id=id_str(user_id, what))


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RejectedPayload(f"{where} must be an object, got {type(value).__name__}")
    return value


def _list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key, [])
    if not isinstance(value, list):
        raise RejectedPayload(f"{key} must be a list")
    return value


def _opt_str(value: Any) -> str | None:
    """A string id field that may be absent or null (`in_reply_to_status_id_str`)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RejectedPayload(f"expected a string id or null, got {value!r}")
    return value


def _user(user: Any, where: str) -> Identity:
    """A User object's id: `id_str`, or `id` when that is a string (DM-era user maps)."""
    user = _obj(user, where)
    if "id_str" in user:
        return _identity(user["id_str"], f"{where}.id_str")
    if isinstance(user.get("id"), str):
        return _identity(user["id"], f"{where}.id")
    raise RejectedPayload(f"{where} has no string 'id_str'")


def parse_twitter_time(value: Any) -> datetime:
    """`Mon Mar 26 16:33:26 +0000 2018` to an aware UTC datetime (locale-independent)."""
    if not isinstance(value, str):
        raise RejectedPayload(f"expected a Twitter-format created_at, got {value!r}")
    parts = value.split()
    try:
        _, month, day, clock, offset, year = parts
        hour, minute, second = (int(p) for p in clock.split(":"))
        sign = -1 if offset[0] == "-" else 1
        if offset[0] not in "+-" or len(offset) != 5 or not offset[1:].isdigit():
            raise ValueError(offset)
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        zone = timezone(sign * delta)
        moment = datetime(int(year), _MONTHS[month], int(day), hour, minute, second, tzinfo=zone)
        return moment.astimezone(UTC)
    except (ValueError, KeyError, IndexError, OverflowError):
        raise RejectedPayload(f"not a Twitter-format created_at: {value!r}") from None


def _tweet_time(tweet: dict[str, Any]) -> datetime:
    if tweet.get("timestamp_ms") is not None:
        return epoch_to_datetime(tweet["timestamp_ms"], "ms")
    return parse_twitter_time(require(tweet, "created_at", "tweet"))


def _tweet_id(tweet: dict[str, Any], where: str) -> str:
    return id_str(require(tweet, "id_str", where), f"{where}.id_str")


def _conversation(tweet: dict[str, Any], tweet_id: str) -> str | None:
    """`conversation_id_str` when X sends it, else unknown (never guessed).

    A guess (the root tweet's own id) would give a thread's first tweet a conversation and its
    replies none, splitting one exchange in two; unknown lets the projection group the whole
    exchange by time (SPEC: a run of interactions with gaps under 7 days).
    """
    for key in ("conversation_id_str", "conversation_id"):
        value = tweet.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _text(tweet: dict[str, Any]) -> str | None:
    extended = tweet.get("extended_tweet")
    if isinstance(extended, dict) and isinstance(extended.get("full_text"), str):
        return str(extended["full_text"])
    for key in ("full_text", "text"):
        if isinstance(tweet.get(key), str):
            return str(tweet[key])
    return None


def _mentioned(tweet: dict[str, Any]) -> list[Identity]:
    entities = tweet.get("entities")
    if entities is None:
        return []
    mentions = _obj(entities, "tweet.entities").get("user_mentions") or []
    if not isinstance(mentions, list):
        raise RejectedPayload("entities.user_mentions must be a list")
    return [_user(m, "user_mentions[]") for m in mentions]


def _mention_subject(
    workspace: WorkspaceConfig, actor: Identity, mentioned: list[Identity], for_user: str | None
) -> Identity | None:
    others = [m for m in mentioned if m != actor]
    if workspace.owned(PLATFORM, actor.user_id) is not None:
        return next((m for m in others if workspace.owned(PLATFORM, m.user_id) is None), None)
    owned = [m for m in others if workspace.owned(PLATFORM, m.user_id) is not None]
    preferred = [m for m in owned if m.user_id == for_user]
    if preferred:
        return preferred[0]
    return owned[0] if owned else None


def _tweet(workspace: WorkspaceConfig, item: Any, for_user: str | None) -> Draft | NotAnInteraction:
    tweet = _obj(item, "tweet_create_events[]")
    tweet_id = _tweet_id(tweet, "tweet")
    actor = _user(require(tweet, "user", "tweet"), "tweet.user")
    occurred_at = _tweet_time(tweet)
    conversation = _conversation(tweet, tweet_id)
    reply_to = _opt_str(tweet.get("in_reply_to_status_id_str"))

    original = tweet.get("retweeted_status")
    if original is not None:
        original = _obj(original, "retweeted_status")
        original_id = _tweet_id(original, "retweeted_status")
        return Draft(
            platform=PLATFORM,
            kind=Kind.SHARE,
            actor=actor,
            subject=_user(require(original, "user", "retweeted_status"), "retweeted_status.user"),
            occurred_at=occurred_at,
            object_key=f"tweet:{tweet_id}",
            object_id=tweet_id,
            conversation_id=_conversation(original, original_id),
            in_reply_to=original_id,
        )

    # (kind, subject, in_reply_to) for every relation the tweet has, in order of precedence.
    relations: list[tuple[Kind, Identity, str | None]] = []
    if reply_to is not None:
        replied_user = _opt_str(tweet.get("in_reply_to_user_id_str"))
        if replied_user is not None and replied_user != actor.user_id:
            relations.append((Kind.REPLY, _identity(replied_user, "in_reply_to_user_id"), reply_to))
    quoted = tweet.get("quoted_status")
    if tweet.get("is_quote_status") is True and isinstance(quoted, dict):
        quoted_author = _user(require(quoted, "user", "quoted_status"), "quoted_status.user")
        if quoted_author != actor:
            relations.append((Kind.QUOTE, quoted_author, _tweet_id(quoted, "quoted_status")))
    mentioned = _mention_subject(workspace, actor, _mentioned(tweet), for_user)
    if mentioned is not None:
        relations.append((Kind.MENTION, mentioned, reply_to))

    if not relations:
        if workspace.owned(PLATFORM, actor.user_id) is not None:
            return NotAnInteraction("x.own_tweet", tweet_id)
        return NotAnInteraction("x.tweet_without_subject", tweet_id)
    kind, subject, in_reply_to = counting_relation(workspace, actor, relations)
    return Draft(
        platform=PLATFORM,
        kind=kind,
        actor=actor,
        subject=subject,
        occurred_at=occurred_at,
        object_key=f"tweet:{tweet_id}",
        object_id=tweet_id,
        conversation_id=conversation,
        in_reply_to=in_reply_to,
        text=_text(tweet),
    )


def _favorite(item: Any) -> Draft:
    favorite = _obj(item, "favorite_events[]")
    favorite_id = id_str(require(favorite, "id", "favorite_events[]"), "favorite id")
    status = _obj(require(favorite, "favorited_status", "favorite"), "favorited_status")
    status_id = _tweet_id(status, "favorited_status")
    if favorite.get("timestamp_ms") is not None:
        occurred_at = epoch_to_datetime(favorite["timestamp_ms"], "ms")
    else:  # the favorite's own created_at, never the favorited tweet's
        occurred_at = parse_twitter_time(require(favorite, "created_at", "favorite"))
    return Draft(
        platform=PLATFORM,
        kind=Kind.REACTION,
        actor=_user(require(favorite, "user", "favorite"), "favorite.user"),
        subject=_user(require(status, "user", "favorited_status"), "favorited_status.user"),
        occurred_at=occurred_at,
        object_key=f"favorite:{favorite_id}",
        object_id=favorite_id,
        conversation_id=_conversation(status, status_id),
        in_reply_to=status_id,
    )


def _follow(item: Any) -> Draft | NotAnInteraction:
    follow = _obj(item, "follow_events[]")
    kind = {"follow": Kind.FOLLOW, "unfollow": Kind.UNFOLLOW}.get(
        str(require(follow, "type", "follow_events[]"))
    )
    if kind is None:
        return NotAnInteraction("x.follow_event", str(follow["type"]))
    source = _user(require(follow, "source", "follow"), "follow.source")
    target = _user(require(follow, "target", "follow"), "follow.target")
    raw_ts = require(follow, "created_timestamp", "follow")
    occurred_at = epoch_to_datetime(raw_ts, "ms")
    stamp = id_str(raw_ts, "created_timestamp")
    object_id = f"{source.user_id}:{target.user_id}:{kind.value}:{stamp}"
    return Draft(
        platform=PLATFORM,
        kind=kind,
        actor=source,
        subject=target,
        occurred_at=occurred_at,
        object_key=f"follow:{object_id}",
        object_id=object_id,
    )


def _direct_message(item: Any) -> Draft | NotAnInteraction:
    if require(item, "type", "direct_message_events[]") != "message_create":
        return NotAnInteraction("x.dm_event", str(item.get("type")))
    create = require(item, "message_create", "direct_message_events[]")
    target = require(create, "target", "message_create")
    dm_id = id_str(require(item, "id", "direct_message_events[]"), "DM id")
    data = create.get("message_data")
    text = data.get("text") if isinstance(data, dict) else None
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


def _drafts(
    workspace: WorkspaceConfig, body: dict[str, Any]
) -> tuple[list[Draft], list[NotAnInteraction]]:
    for_user = body.get("for_user_id")
    for_user = str(for_user) if isinstance(for_user, str | int) else None
    drafts: list[Draft] = []
    skipped: list[NotAnInteraction] = []
    for key, what in NON_INTERACTIONS.items():
        if key in body:
            skipped.append(NotAnInteraction(what))
    results: list[Draft | NotAnInteraction] = []
    results += [_tweet(workspace, item, for_user) for item in _list(body, "tweet_create_events")]
    results += [_favorite(item) for item in _list(body, "favorite_events")]
    results += [_follow(item) for item in _list(body, "follow_events")]
    results += [_direct_message(item) for item in _list(body, "direct_message_events")]
    for result in results:
        if isinstance(result, Draft):
            drafts.append(result)
        else:
            skipped.append(result)
    return drafts, skipped


EVENT_ARRAYS = ("tweet_create_events", "favorite_events", "follow_events", "direct_message_events")


def normalize(
    workspace: WorkspaceConfig, envelope: RawEnvelope, raw: RawPointer | None = None
) -> AdapterResult:
    """All interactions in one Account Activity delivery."""
    body = json_object(envelope.body, "an Account Activity body")
    if not any(key in body for key in (*EVENT_ARRAYS, *NON_INTERACTIONS)):
        raise RejectedPayload(
            "no Account Activity event array found (keys: " + ", ".join(sorted(body)[:10]) + ")"
        )
    try:
        drafts, skipped = _drafts(workspace, body)
        return finish(workspace, envelope, drafts, skipped, raw)
    except ValidationError as exc:
        raise RejectedPayload(f"invalid field: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return ".".join(str(p) for p in error["loc"]) + ": " + error["msg"]
