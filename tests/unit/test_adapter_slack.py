"""Slack Events API adapter.

Vendor body: tests/fixtures/webhooks/slack_docs/reaction_added.event_callback.json (Slack's own
documentation example, see SOURCE.txt). The message, app_mention and subtype bodies below are
CONSTRUCTED from the fields Slack documents for those events (`channel`, `channel_type`, `user`,
`text`, `ts`, `thread_ts`, `parent_user_id`, `event_ts`, `subtype`, `authorizations[]`); the
message.im values follow Slack's message.im reference example.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from events.adapters import ADAPTERS, slack
from events.adapters.base import AdapterResult, RejectedPayload
from events.envelope import RawEnvelope
from events.models import Direction, Identity, Intent, Kind
from rapport.workspaces import OwnedAccount, WorkspaceConfig

FIXTURE = Path(__file__).parents[1] / "fixtures" / "webhooks" / "slack_docs"
RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)

OWNED = "U0OWNED01"  # a team member acting for the workspace
BOT = "U0LAN0Z89"  # the app's bot user, also owned
CONTACT = "U061F7AUR"
OTHER = "U2147483697"

ACME = WorkspaceConfig(
    name="acme",
    accounts=(
        OwnedAccount(platform="slack", user_id=OWNED, member="sam"),
        OwnedAccount(platform="slack", user_id=BOT, member="brand"),
    ),
)


def sid(user_id: str) -> Identity:
    return Identity(platform="slack", user_id=user_id)


def run(
    body: Any, workspace: WorkspaceConfig = ACME, headers: dict[str, str] | None = None
) -> AdapterResult:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    envelope = RawEnvelope(
        workspace=workspace.name,
        source="slack",
        received_at=RECEIVED,
        headers=headers or {},
        body=raw,
    )
    return slack.normalize(workspace, envelope)


def callback(event: dict[str, Any], event_id: str = "Ev0PV52K21", **extra: Any) -> dict[str, Any]:
    return {
        "token": "XXYYZZ",
        "team_id": "T123ABC456",
        "api_app_id": "A123ABC456",
        "event": event,
        "type": "event_callback",
        "authorizations": [
            {
                "team_id": "T123ABC456",
                "user_id": BOT,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "event_id": event_id,
        "event_time": 1482960137,
        **extra,
    }


# --- the vendor example ------------------------------------------------------------------------


def test_vendor_reaction_added_example() -> None:
    workspace = WorkspaceConfig(
        name="acme", accounts=[OwnedAccount(platform="slack", user_id="U222222222")]
    )
    result = run((FIXTURE / "reaction_added.event_callback.json").read_bytes(), workspace)
    (event,) = result.events
    assert event.platform == "slack"
    assert event.kind is Kind.REACTION
    assert event.actor == sid("U123ABC456")
    assert event.subject == sid("U222222222")
    assert event.direction is Direction.INBOUND
    # event.event_ts, not the envelope's event_time (123456789 = 1973 in the vendor example)
    assert event.occurred_at == datetime(2013, 2, 13, 19, 13, 24, 83000, tzinfo=UTC)
    assert event.object_id == "U123ABC456:thumbsup:C123ABC456:1360782400.498405"
    assert event.in_reply_to == "C123ABC456:1360782400.498405"
    assert event.intent is Intent.GIVE


def test_vendor_reaction_retry_and_other_workspace() -> None:
    body = (FIXTURE / "reaction_added.event_callback.json").read_bytes()
    first = run(body).events[0]
    retry = run(body, headers={"x-slack-retry-num": "1", "x-slack-retry-reason": "http_timeout"})
    assert retry.events[0].event_id == first.event_id
    other = run(body, WorkspaceConfig(name="globex")).events[0]
    assert other.event_id != first.event_id
    assert other.direction is Direction.EXTERNAL


# --- messages (constructed) --------------------------------------------------------------------


def test_direct_message_to_the_bot_is_inbound_message() -> None:
    event = {
        "type": "message",
        "channel": "D024BE91L",
        "user": OTHER,
        "text": "Hello hello can you hear me?",
        "ts": "1355517523.000005",
        "event_ts": "1355517523.000005",
        "channel_type": "im",
    }
    (out,) = run(callback(event)).events
    assert out.kind is Kind.MESSAGE
    assert out.actor == sid(OTHER) and out.subject == sid(BOT)
    assert out.direction is Direction.INBOUND
    assert out.member == "brand"
    assert out.occurred_at == datetime(2012, 12, 14, 20, 38, 43, 0, tzinfo=UTC)
    assert out.object_id == "D024BE91L:1355517523.000005"
    assert out.conversation_id is None
    assert out.intent is Intent.GREETING


def test_direct_message_from_the_authorised_party_has_unknown_recipient() -> None:
    event = {"type": "message", "channel": "D024BE91L", "user": BOT, "text": "On it!"}
    (out,) = run(callback({**event, "ts": "1355517524.000001"})).events
    assert out.kind is Kind.MESSAGE and out.subject is None
    assert out.direction is Direction.OUTBOUND and out.contact is None


def test_thread_reply_to_owned_member_is_inbound_reply() -> None:
    event = {
        "type": "message",
        "channel": "C123ABC456",
        "channel_type": "channel",
        "user": CONTACT,
        "text": "Could you send me the pricing sheet?",
        "ts": "1482960137.003543",
        "thread_ts": "1482960000.000010",
        "parent_user_id": OWNED,
        "event_ts": "1482960137.003543",
    }
    (out,) = run(callback(event)).events
    assert out.kind is Kind.REPLY
    assert out.actor == sid(CONTACT) and out.subject == sid(OWNED)
    assert out.direction is Direction.INBOUND and out.member == "sam"
    assert out.occurred_at == datetime(2016, 12, 28, 21, 22, 17, 3000, tzinfo=UTC)
    assert out.conversation_id == "C123ABC456:1482960000.000010"
    assert out.in_reply_to == "C123ABC456:1482960000.000010"
    assert out.object_id == "C123ABC456:1482960137.003543"
    assert out.intent is Intent.ASK


def test_thread_broadcast_from_owned_member_is_outbound_reply() -> None:
    event = {
        "type": "message",
        "subtype": "thread_broadcast",
        "channel": "C123ABC456",
        "user": OWNED,
        "text": "Here's the pricing sheet: https://example.com/p.pdf",
        "ts": "1482960200.000100",
        "thread_ts": "1482960000.000010",
        "parent_user_id": CONTACT,
    }
    (out,) = run(callback(event)).events
    assert (out.kind, out.direction) == (Kind.REPLY, Direction.OUTBOUND)
    assert out.subject == sid(CONTACT) and out.contact == sid(CONTACT)
    assert out.intent is Intent.GIVE


def test_channel_message_mentioning_owned_member_is_mention() -> None:
    event = {
        "type": "message",
        "channel": "C123ABC456",
        "channel_type": "channel",
        "user": CONTACT,
        "text": "<@U0OWNED01> any tips for onboarding?",
        "ts": "1482960300.000200",
    }
    (out,) = run(callback(event)).events
    assert out.kind is Kind.MENTION
    assert out.actor == sid(CONTACT) and out.subject == sid(OWNED)
    assert out.direction is Direction.INBOUND
    assert out.conversation_id == "C123ABC456:1482960300.000200"
    assert out.in_reply_to is None
    assert out.intent is Intent.ASK


def test_top_level_channel_message_without_mention_is_not_an_interaction() -> None:
    event = {
        "type": "message",
        "channel": "C123ABC456",
        "user": CONTACT,
        "text": "lunch?",
        "ts": "1482960400.000300",
    }
    result = run(callback(event))
    assert result.events == ()
    assert [(s.what, s.detail) for s in result.skipped] == [
        ("slack.channel_message", "C123ABC456:1482960400.000300")
    ]


def test_message_and_app_mention_of_one_message_are_one_event() -> None:
    common = {
        "user": CONTACT,
        "text": "<@U0LAN0Z89> is it everything a river should be?",
        "ts": "1515449522.000016",
        "channel": "C0LAN2Q65",
        "event_ts": "1515449522000016",
    }
    as_message = run(callback({"type": "message", "channel_type": "channel", **common}, "Ev1"))
    as_mention = run(callback({"type": "app_mention", **common}, "Ev2"))
    (a,) = as_message.events
    (b,) = as_mention.events
    assert a.event_id == b.event_id
    assert a.kind is b.kind is Kind.MENTION
    assert a.subject == b.subject == sid(BOT)
    assert a.occurred_at == b.occurred_at == datetime(2018, 1, 8, 22, 12, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("subtype", "extra"),
    [
        ("message_changed", {"message": {"type": "message", "user": CONTACT, "text": "edited"}}),
        ("message_deleted", {"deleted_ts": "1358878749.000002"}),
        ("bot_message", {"bot_id": "B0BOT", "username": "deploybot"}),
        ("channel_join", {"user": CONTACT}),
    ],
)
def test_message_subtypes_are_not_interactions(subtype: str, extra: dict[str, Any]) -> None:
    event = {
        "type": "message",
        "subtype": subtype,
        "channel": "C123ABC456",
        "ts": "1358878755.000001",
        **extra,
    }
    result = run(callback(event))
    assert result.events == ()
    assert [s.what for s in result.skipped] == [f"slack.message_{subtype}"]


def test_url_verification_and_other_events() -> None:
    verification = {
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        "challenge": "3eZbrw1a",
        "type": "url_verification",
    }
    assert [s.what for s in run(verification).skipped] == ["slack.url_verification"]
    removed = {
        "type": "reaction_removed",
        "user": CONTACT,
        "reaction": "thumbsup",
        "item_user": OWNED,
        "item": {"type": "message", "channel": "C1", "ts": "1360782400.498405"},
        "event_ts": "1360782804.083113",
    }
    assert [s.what for s in run(callback(removed)).skipped] == ["slack.reaction_removed"]
    joined = {"type": "member_joined_channel", "user": CONTACT, "channel": "C1"}
    assert [s.what for s in run(callback(joined)).skipped] == ["slack.member_joined_channel"]


def test_event_time_is_used_only_without_an_own_timestamp() -> None:
    event = {
        "type": "reaction_added",
        "user": CONTACT,
        "reaction": "tada",
        "item_user": OWNED,
        "item": {"type": "message", "channel": "C1", "ts": "1360782400.498405"},
    }
    (out,) = run(callback(event)).events
    assert out.occurred_at == datetime(2016, 12, 28, 21, 22, 17, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"token": "x"}',
        json.dumps(callback({"type": "message", "user": CONTACT, "text": "hi"})).encode(),
        json.dumps(
            callback({"type": "message", "user": CONTACT, "channel": "C1", "ts": "x"})
        ).encode(),
    ],
)
def test_rejections(body: bytes) -> None:
    with pytest.raises(RejectedPayload):
        run(body)


def test_registered() -> None:
    assert ADAPTERS["slack"] is slack.normalize
