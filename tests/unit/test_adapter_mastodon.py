"""Mastodon webhooks.

All bodies here are CONSTRUCTED from Mastodon's documented webhook payload
(`{"event", "created_at", "object"}`, docs.joinmastodon.org "Webhooks") and Status entity fields
(`id`, `created_at`, `in_reply_to_id`, `in_reply_to_account_id`, `content`, `reblog`, `account`,
`mentions[]`, and the 4.4 `quote`). Ids are Mastodon-style 18-digit snowflake strings.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from events.adapters import ADAPTERS, mastodon
from events.adapters.base import AdapterResult, RejectedPayload
from events.envelope import RawEnvelope
from events.models import Direction, Identity, Intent, Kind
from rapport.workspaces import OwnedAccount, WorkspaceConfig

RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)
BRAND = "109348814457386410"
ALICE = "109351024773582190"
BOB = "110012349876543210"

ACME = WorkspaceConfig(
    name="acme", accounts=(OwnedAccount(platform="mastodon", user_id=BRAND, member="brand"),)
)


def mid(user_id: str) -> Identity:
    return Identity(platform="mastodon", user_id=user_id)


def account(account_id: str, username: str) -> dict[str, Any]:
    return {
        "id": account_id,
        "username": username,
        "acct": username,
        "url": f"https://mastodon.example/@{username}",
    }


def status(status_id: str, author: str, content: str, **fields: Any) -> dict[str, Any]:
    names = {BRAND: "acme", ALICE: "alice", BOB: "bob"}
    body: dict[str, Any] = {
        "id": status_id,
        "created_at": "2023-03-10T11:59:58.123Z",
        "in_reply_to_id": None,
        "in_reply_to_account_id": None,
        "sensitive": False,
        "visibility": "public",
        "language": "en",
        "uri": f"https://mastodon.example/users/{names[author]}/statuses/{status_id}",
        "content": content,
        "reblog": None,
        "account": account(author, names[author]),
        "mentions": [],
    }
    body.update(fields)
    return body


def webhook(obj: dict[str, Any], event: str = "status.created") -> dict[str, Any]:
    # the envelope's created_at is when the webhook fired, later than the status
    return {"event": event, "created_at": "2023-03-10T12:00:05.000Z", "object": obj}


def run(body: Any, workspace: WorkspaceConfig = ACME) -> AdapterResult:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    envelope = RawEnvelope(
        workspace=workspace.name, source="mastodon", received_at=RECEIVED, body=raw
    )
    return mastodon.normalize(workspace, envelope)


STATUS_AT = datetime(2023, 3, 10, 11, 59, 58, 123000, tzinfo=UTC)
MENTION_BRAND = [{"id": BRAND, "username": "acme", "acct": "acme", "url": "https://m.ex/@acme"}]


def test_reply_to_brand_is_inbound_reply_at_the_status_time() -> None:
    body = webhook(
        status(
            "109999999999999999",
            ALICE,
            '<p><span class="h-card"><a href="https://mastodon.example/@acme">@<span>acme</span>'
            "</a></span> Thank you, that fixed it!</p>",
            in_reply_to_id="109999999999990000",
            in_reply_to_account_id=BRAND,
            mentions=MENTION_BRAND,
        )
    )
    (event,) = run(body).events
    assert event.platform == "mastodon"
    assert event.kind is Kind.REPLY
    assert event.actor == mid(ALICE) and event.subject == mid(BRAND)
    assert event.direction is Direction.INBOUND and event.member == "brand"
    assert event.occurred_at == STATUS_AT
    assert event.object_id == "109999999999999999"
    assert event.in_reply_to == "109999999999990000"
    assert event.conversation_id is None  # a Status does not name its thread's root
    assert event.text == "@acme Thank you, that fixed it!"
    assert event.intent is Intent.THANKS


def test_mention_of_brand_in_a_new_status() -> None:
    body = webhook(
        status(
            "110000000000000001",
            BOB,
            "<p>Does anyone know if @acme ships to Canada?</p>",
            mentions=MENTION_BRAND,
        )
    )
    (event,) = run(body).events
    assert event.kind is Kind.MENTION
    assert event.actor == mid(BOB) and event.subject == mid(BRAND)
    assert event.direction is Direction.INBOUND
    assert event.conversation_id is None  # a Status names no thread root: not guessed
    assert event.intent is Intent.ASK


def test_contact_reply_to_contact_mentioning_brand_is_a_mention() -> None:
    body = webhook(
        status(
            "110000000000000002",
            BOB,
            "<p>@alice ask @acme</p>",
            in_reply_to_id="110000000000000000",
            in_reply_to_account_id=ALICE,
            mentions=[{"id": ALICE, "acct": "alice"}, *MENTION_BRAND],
        )
    )
    (event,) = run(body).events
    assert (event.kind, event.subject, event.direction) == (
        Kind.MENTION,
        mid(BRAND),
        Direction.INBOUND,
    )
    assert event.in_reply_to == "110000000000000000"


def test_boost_is_a_share_of_the_original_author() -> None:
    original = status("109000000000000001", BRAND, "<p>We shipped v2</p>")
    body = webhook(status("110000000000000003", ALICE, "", reblog=original))
    (event,) = run(body).events
    assert event.kind is Kind.SHARE
    assert event.actor == mid(ALICE) and event.subject == mid(BRAND)
    assert event.direction is Direction.INBOUND
    assert event.in_reply_to == "109000000000000001"
    assert event.intent is Intent.GIVE


def test_quote_of_brand_status() -> None:
    quoted = status("109000000000000001", BRAND, "<p>We shipped v2</p>")
    body = webhook(
        status(
            "110000000000000004",
            ALICE,
            "<p>Congrats on the release</p>",
            quote={"state": "accepted", "quoted_status": quoted},
        )
    )
    (event,) = run(body).events
    assert (event.kind, event.subject) == (Kind.QUOTE, mid(BRAND))
    assert event.in_reply_to == "109000000000000001"
    assert event.intent is Intent.GIVE


def test_brand_reply_to_contact_is_outbound_and_keeps_a_given_conversation() -> None:
    body = webhook(
        status(
            "110000000000000005",
            BRAND,
            "<p>@alice here&#39;s the guide: https://acme.example/guide</p>",
            in_reply_to_id="109999999999999999",
            in_reply_to_account_id=ALICE,
            conversation_id="109999999999990000",
        )
    )
    (event,) = run(body).events
    assert (event.kind, event.direction) == (Kind.REPLY, Direction.OUTBOUND)
    assert event.contact == mid(ALICE)
    assert event.conversation_id == "109999999999990000"
    assert event.text == "@alice here's the guide: https://acme.example/guide"
    assert event.intent is Intent.GIVE


def test_own_status_and_unrelated_status_are_not_interactions() -> None:
    own = run(webhook(status("110000000000000006", BRAND, "<p>Hiring!</p>")))
    assert own.events == () and [s.what for s in own.skipped] == ["mastodon.own_status"]
    other = run(webhook(status("110000000000000007", BOB, "<p>hello world</p>")))
    assert [s.what for s in other.skipped] == ["mastodon.status_without_subject"]


@pytest.mark.parametrize(
    ("event", "obj"),
    [
        ("status.updated", status("110000000000000008", ALICE, "<p>edited</p>")),
        ("account.created", account(BOB, "bob")),
        ("account.approved", account(BOB, "bob")),
        ("report.created", {"id": "1", "category": "spam"}),
    ],
)
def test_other_events_are_typed_non_interactions(event: str, obj: dict[str, Any]) -> None:
    result = run(webhook(obj, event))
    assert result.events == () and [s.what for s in result.skipped] == [f"mastodon.{event}"]


def test_retries_collapse_and_workspaces_do_not() -> None:
    body = webhook(status("110000000000000009", BOB, "@acme hi", mentions=MENTION_BRAND))
    first = run(body).events[0]
    assert run(body).events[0].event_id == first.event_id
    globex = WorkspaceConfig(
        name="globex", accounts=[OwnedAccount(platform="mastodon", user_id=BRAND)]
    )
    assert run(body, globex).events[0].event_id != first.event_id


def test_naive_and_offset_times() -> None:
    item = status("110000000000000010", BOB, "@acme hi", mentions=MENTION_BRAND)
    item["created_at"] = "2023-03-10T13:59:58.123+02:00"
    assert run(webhook(item)).events[0].occurred_at == STATUS_AT
    item["created_at"] = "2023-03-10T11:59:58.123"
    assert run(webhook(item)).events[0].occurred_at == STATUS_AT


@pytest.mark.parametrize(
    "body",
    [
        b"<html>",
        b"[]",
        b'{"object": {}}',
        b'{"event": 3}',
        b'{"event": "status.created", "object": []}',
        json.dumps(webhook({"id": "1", "account": account(BOB, "bob")})).encode(),
        json.dumps(webhook(status("1", BOB, "x", created_at="10 March 2023"))).encode(),
        json.dumps(webhook(status("1", BOB, "x", mentions=[{"acct": "acme"}]))).encode(),
    ],
)
def test_rejections(body: bytes) -> None:
    with pytest.raises(RejectedPayload):
        run(body)


def test_registered() -> None:
    assert ADAPTERS["mastodon"] is mastodon.normalize
