"""Canonical events: immutable, past-tense, versioned. The event log holds only these.

Every event has a `type` discriminator and a `schema_version`; `events.upcasting` turns an older
stored version into the current model, so an old log still replays.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from events.upcasting import upcast

PLATFORM_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"


class Kind(StrEnum):
    """What the interaction was."""

    MESSAGE = "message"
    REPLY = "reply"
    COMMENT = "comment"
    MENTION = "mention"
    QUOTE = "quote"
    SHARE = "share"
    REACTION = "reaction"
    FOLLOW = "follow"
    UNFOLLOW = "unfollow"
    INTRODUCTION = "introduction"
    MEETING = "meeting"
    CALL = "call"
    EMAIL = "email"

    @property
    def conversational(self) -> bool:
        return self in CONVERSATIONAL_KINDS


CONVERSATIONAL_KINDS = frozenset(
    {
        Kind.MESSAGE,
        Kind.REPLY,
        Kind.COMMENT,
        Kind.MENTION,
        Kind.QUOTE,
        Kind.INTRODUCTION,
        Kind.MEETING,
        Kind.CALL,
        Kind.EMAIL,
    }
)


class Direction(StrEnum):
    """Who spoke to whom, seen from the workspace. Only inbound and outbound count."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"
    EXTERNAL = "external"

    @property
    def counts(self) -> bool:
        return self in (Direction.INBOUND, Direction.OUTBOUND)


class Intent(StrEnum):
    GIVE = "give"
    ASK = "ask"
    THANKS = "thanks"
    GREETING = "greeting"
    NEUTRAL = "neutral"


def to_utc_ms(value: datetime) -> datetime:
    """Event times are UTC with millisecond precision; naive datetimes are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.replace(microsecond=(value.microsecond // 1000) * 1000)


def epoch_ms(value: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    seconds = value.timestamp()
    return int(seconds * 1000 + (0.5 if seconds >= 0 else -0.5))


class Identity(BaseModel):
    """A platform identity. User ids are strings: X ids overflow floats."""

    model_config = ConfigDict(frozen=True)

    platform: str = Field(pattern=PLATFORM_PATTERN)
    user_id: str = Field(min_length=1, max_length=512)

    @field_validator("user_id", mode="before")
    @classmethod
    def _no_floats(cls, value: Any) -> Any:
        if isinstance(value, bool | float):
            raise ValueError("user ids must be strings (or integers), never floats or booleans")
        if isinstance(value, int):
            return str(value)
        return value

    @property
    def key(self) -> str:
        """`<platform>:<user_id>`, also the contact id of an unlinked identity."""
        return f"{self.platform}:{self.user_id}"


class RawPointer(BaseModel):
    """Where the raw envelope an event came from sits in Kafka."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(min_length=8, max_length=128)
    workspace: str
    occurred_at: datetime

    @field_validator("occurred_at")
    @classmethod
    def _utc_ms(cls, value: datetime) -> datetime:
        return to_utc_ms(value)


class Interaction(_Event):
    """Somebody did something to somebody on a platform: the canonical event."""

    type: Literal["interaction"] = "interaction"
    schema_version: Literal[1] = 1
    platform: str = Field(pattern=PLATFORM_PATTERN)
    kind: Kind
    actor: Identity
    subject: Identity | None = None
    direction: Direction
    contact: Identity | None = Field(
        None, description="the non-owned party of an inbound/outbound interaction"
    )
    account: Identity | None = Field(None, description="the owned account involved")
    member: str | None = None
    received_at: datetime
    conversation_id: str | None = None
    object_id: str
    in_reply_to: str | None = None
    intent: Intent = Intent.NEUTRAL
    intent_rules: str = "intent-v1"
    text: str | None = None
    raw: RawPointer | None = None

    @field_validator("received_at")
    @classmethod
    def _received_utc_ms(cls, value: datetime) -> datetime:
        return to_utc_ms(value)


class IdentityLinked(_Event):
    """An operator stated that two identities are the same person."""

    type: Literal["identity.linked"] = "identity.linked"
    schema_version: Literal[1] = 1
    identity: Identity
    contact_id: str = Field(description="the contact the identity now belongs to")


class IdentityUnlinked(_Event):
    """An earlier link was wrong: the identity is its own contact again."""

    type: Literal["identity.unlinked"] = "identity.unlinked"
    schema_version: Literal[1] = 1
    identity: Identity


class AccountAdded(_Event):
    """The workspace now owns this identity (a brand account or an advocate)."""

    type: Literal["account.added"] = "account.added"
    schema_version: Literal[1] = 1
    account: Identity
    member: str


class AccountRemoved(_Event):
    type: Literal["account.removed"] = "account.removed"
    schema_version: Literal[1] = 1
    account: Identity


class PolicyChanged(_Event):
    """The workspace's scoring policy moved to a new version (a reason to replay)."""

    type: Literal["policy.changed"] = "policy.changed"
    schema_version: Literal[1] = 1
    policy_version: str
    policy: dict[str, Any] = Field(default_factory=dict)


Event = Annotated[
    Interaction | IdentityLinked | IdentityUnlinked | AccountAdded | AccountRemoved | PolicyChanged,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: bytes | str) -> Event:
    """Decode one event from the log (JSON); older schema versions are upcast first.

    Current-version events validate straight from JSON (the hot path); only an event that does
    not is decoded, upcast and validated again, so a truly invalid event still raises.
    """
    try:
        return EVENT_ADAPTER.validate_json(data)
    except ValidationError:
        return EVENT_ADAPTER.validate_python(upcast(json.loads(data)))


def dump_event(event: Event) -> bytes:
    """Encode one event for the log (JSON, stable field names)."""
    return event.model_dump_json(exclude_none=True).encode()
