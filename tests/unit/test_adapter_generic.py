"""The generic JSON endpoint (schema in docs/generic-webhook.md). Bodies are constructed."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from events.adapters import ADAPTERS, generic
from events.adapters.base import AdapterResult, RejectedPayload
from events.envelope import RawEnvelope
from events.models import Direction, Identity, Intent, Kind
from rapport.workspaces import OwnedAccount, WorkspaceConfig

RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)
DOC = Path(__file__).parents[2] / "docs" / "generic-webhook.md"

ACME = WorkspaceConfig(
    name="acme",
    accounts=(
        OwnedAccount(platform="email", user_id="sam@acme.example", member="sam"),
        OwnedAccount(platform="phone", user_id="+14155550100", member="sam"),
        OwnedAccount(platform="calendar", user_id="sam@acme.example", member="sam"),
    ),
)


def run(body: Any, workspace: WorkspaceConfig = ACME) -> AdapterResult:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    envelope = RawEnvelope(
        workspace=workspace.name, source="generic", received_at=RECEIVED, body=raw
    )
    return generic.normalize(workspace, envelope)


def email(**fields: Any) -> dict[str, Any]:
    item = {
        "id": "msg-<CAF=1234@mail.example>",
        "platform": "email",
        "kind": "email",
        "occurred_at": "2024-05-02T09:15:00.250Z",
        "actor": "jo@client.example",
        "subject": "sam@acme.example",
        "conversation_id": "thread-77",
        "text": "Could you send the contract draft?",
    }
    item.update(fields)
    return item


def test_batch_of_email_meeting_call_introduction_and_note() -> None:
    body = {
        "events": [
            email(),
            {
                "id": "cal-evt-991",
                "platform": "calendar",
                "kind": "meeting",
                "occurred_at": 1714640400,
                "actor": "sam@acme.example",
                "subject": "jo@client.example",
            },
            {
                "id": "call-5521",
                "platform": "phone",
                "kind": "call",
                "occurred_at": "1714644000.5",
                "actor": "+14155550199",
                "subject": "+14155550100",
                "intent": "thanks",
            },
            {
                "id": "crm-intro-3",
                "platform": "email",
                "kind": "introduction",
                "occurred_at": "2024-05-03T10:00:00+02:00",
                "actor": "sam@acme.example",
                "subject": "kim@partner.example",
                "text": "Kim, meet Jo",
            },
            {
                "id": "crm-note-8",
                "platform": "crm",
                "kind": "note",
                "occurred_at": "2024-05-03T10:00:00Z",
                "actor": "sam",
            },
        ]
    }
    result = run(body)
    mail, meeting, call, intro = result.events
    assert (mail.kind, mail.direction) == (Kind.EMAIL, Direction.INBOUND)
    assert mail.actor == Identity(platform="email", user_id="jo@client.example")
    assert mail.subject == Identity(platform="email", user_id="sam@acme.example")
    assert mail.member == "sam"
    assert mail.occurred_at == datetime(2024, 5, 2, 9, 15, 0, 250000, tzinfo=UTC)
    assert mail.object_id == "msg-<CAF=1234@mail.example>"
    assert mail.conversation_id == "thread-77"
    assert mail.intent is Intent.ASK
    assert (meeting.kind, meeting.direction) == (Kind.MEETING, Direction.OUTBOUND)
    assert meeting.contact == Identity(platform="calendar", user_id="jo@client.example")
    assert meeting.occurred_at == datetime(2024, 5, 2, 9, 0, tzinfo=UTC)
    assert (call.kind, call.direction, call.intent) == (Kind.CALL, Direction.INBOUND, Intent.THANKS)
    assert call.occurred_at == datetime(2024, 5, 2, 10, 0, 0, 500000, tzinfo=UTC)
    assert (intro.kind, intro.direction, intro.intent) == (
        Kind.INTRODUCTION,
        Direction.OUTBOUND,
        Intent.GIVE,
    )
    assert intro.occurred_at == datetime(2024, 5, 3, 8, 0, tzinfo=UTC)
    assert [(s.what, s.detail) for s in result.skipped] == [("generic.note", "crm-note-8")]


def test_single_object_and_bare_list() -> None:
    (single,) = run(email()).events
    (listed,) = run([email()]).events
    assert single.event_id == listed.event_id


def test_ids_collapse_redeliveries_but_not_workspaces() -> None:
    a = run(email()).events[0]
    b = run({"events": [email(text="edited copy")]}).events[0]
    assert a.event_id == b.event_id
    other = WorkspaceConfig(name="globex", accounts=ACME.accounts)
    assert run(email(), other).events[0].event_id != a.event_id


def test_naive_iso_is_utc() -> None:
    (event,) = run(email(occurred_at="2024-05-02T09:15:00")).events
    assert event.occurred_at == datetime(2024, 5, 2, 9, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            email(kind="tweet"),
            r"kind: Value error, unknown kind 'tweet' \(one of: message, reply, .*, email, note\)",
        ),
        (email(actor=""), r"actor: String should have at least 1 character"),
        (email(occurred_at="last tuesday"), r"occurred_at: Input should be a valid datetime"),
        (email(occurred_at=1e20), r"occurred_at: Value error, epoch seconds out of range"),
        (email(platform="E-Mail"), r"platform: String should match pattern"),
        (email(colour="blue"), r"colour: Extra inputs are not permitted"),
        ({"events": [email(), email(id=None)]}, r"events\.1\.id: Input should be a valid string"),
        ({"events": "x"}, r"events: Input should be a valid list"),
        (b"{", r"body is not JSON"),
        (b"3", r"a generic body is an event object"),
    ],
)
def test_validation_failures_are_rejections_with_pydantics_reason(body: Any, reason: str) -> None:
    with pytest.raises(RejectedPayload) as caught:
        run(body)
    assert re.search(reason, caught.value.reason), caught.value.reason


def test_documented_example_is_valid() -> None:
    text = DOC.read_text()
    example = text.split("```json", 1)[1].split("```", 1)[0]
    result = run(json.loads(example))
    assert [e.kind for e in result.events] == [Kind.EMAIL, Kind.MEETING, Kind.INTRODUCTION]
    for header in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        assert header in text


def test_registered() -> None:
    assert ADAPTERS["generic"] is generic.normalize
