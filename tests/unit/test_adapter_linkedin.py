"""LinkedIn organization social action notifications.

All bodies here are CONSTRUCTED from the shape LinkedIn documents for
ORGANIZATION_SOCIAL_ACTION_NOTIFICATIONS pushes (learn.microsoft.com, "Organization Social Action
Notifications": `type`, `notifications[]` with `notificationId`, `organizationalEntity`,
`action`, `actor`, `sourcePost`, `decoratedSourcePost`, `generatedActivity`,
`decoratedGeneratedActivity`, `lastModifiedAt`, `subscriber`); LinkedIn publishes no complete
captured body. URNs follow LinkedIn's formats.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from events.adapters import ADAPTERS, linkedin
from events.adapters.base import AdapterResult, RejectedPayload
from events.envelope import RawEnvelope
from events.models import Direction, Identity, Intent, Kind
from rapport.workspaces import OwnedAccount, WorkspaceConfig

RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)
ORG = "urn:li:organization:2414183"
MEMBER = "urn:li:person:Jk4Ab3xYz1"
OTHER = "urn:li:person:qT9_w2LmZk"
POST = "urn:li:share:6762088049394880512"
ACTIVITY = "urn:li:activity:6762088039496687616"
COMMENT = f"urn:li:comment:({ACTIVITY},6762089029496688620)"

ACME = WorkspaceConfig(
    name="acme", accounts=(OwnedAccount(platform="linkedin", user_id=ORG, member="brand"),)
)


def lid(urn: str) -> Identity:
    return Identity(platform="linkedin", user_id=urn)


def run(body: Any, workspace: WorkspaceConfig = ACME) -> AdapterResult:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    envelope = RawEnvelope(
        workspace=workspace.name, source="linkedin", received_at=RECEIVED, body=raw
    )
    return linkedin.normalize(workspace, envelope)


def note(action: str, **fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "lastModifiedAt": 1612213238346,
        "notificationId": 1090,
        "organizationalEntity": ORG,
        "action": action,
        "actor": MEMBER,
        "sourcePost": POST,
        "decoratedSourcePost": {"owner": ORG, "entity": POST},
        "subscriber": "urn:li:person:AdminA1b2",
    }
    item.update(fields)
    return {k: v for k, v in item.items() if v is not None}


def batch(*items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "ORGANIZATION_SOCIAL_ACTION_NOTIFICATIONS", "notifications": list(items)}


AT = datetime(2021, 2, 1, 21, 0, 38, 346000, tzinfo=UTC)


def test_comment_on_the_organizations_post_is_inbound() -> None:
    item = note(
        "COMMENT",
        generatedActivity=COMMENT,
        decoratedGeneratedActivity={
            "comment": {
                "entity": COMMENT,
                "owner": MEMBER,
                "text": "Congratulations on the launch!",
            }
        },
    )
    (event,) = run(batch(item)).events
    assert event.platform == "linkedin"
    assert event.kind is Kind.COMMENT
    assert event.actor == lid(MEMBER) and event.subject == lid(ORG)
    assert event.direction is Direction.INBOUND and event.member == "brand"
    assert event.occurred_at == AT
    assert event.object_id == COMMENT
    assert event.conversation_id == POST and event.in_reply_to == POST
    assert event.text == "Congratulations on the launch!"
    assert event.intent is Intent.GIVE


def test_batch_of_like_share_and_mention() -> None:
    mention_post = "urn:li:share:6762100000000000001"
    body = batch(
        note("LIKE", notificationId=1091, lastModifiedAt=1612213300000),
        note("SHARE", notificationId=1092, actor=OTHER, generatedActivity="urn:li:share:67621"),
        note(
            "SHARE_MENTION",
            notificationId=1093,
            actor=OTHER,
            sourcePost=None,
            decoratedSourcePost=None,
            generatedActivity=mention_post,
            decoratedGeneratedActivity={
                "share": {"owner": OTHER, "text": "Can you introduce me to the team at Acme?"}
            },
        ),
    )
    like, share, mention = run(body).events
    assert (like.kind, like.actor, like.subject) == (Kind.REACTION, lid(MEMBER), lid(ORG))
    assert like.occurred_at == datetime(2021, 2, 1, 21, 1, 40, tzinfo=UTC)
    assert like.object_id == "1091" and like.intent is Intent.GIVE and like.text is None
    assert (share.kind, share.actor, share.subject) == (Kind.SHARE, lid(OTHER), lid(ORG))
    assert share.in_reply_to == POST
    assert (mention.kind, mention.actor, mention.subject) == (Kind.MENTION, lid(OTHER), lid(ORG))
    assert mention.conversation_id == mention_post and mention.in_reply_to is None
    assert mention.intent is Intent.ASK
    assert {e.direction for e in (like, share, mention)} == {Direction.INBOUND}


def test_actor_falls_back_to_the_generated_activitys_owner() -> None:
    item = note(
        "COMMENT",
        actor=None,
        generatedActivity=COMMENT,
        decoratedGeneratedActivity={"comment": {"owner": OTHER, "text": "Nice"}},
    )
    (event,) = run(item).events  # a single notification without the wrapper
    assert event.actor == lid(OTHER)


def test_admin_comment_is_the_organization_speaking_outbound() -> None:
    on_members_post = note(
        "ADMIN_COMMENT",
        notificationId=2001,
        sourcePost="urn:li:share:7000000000000000001",
        decoratedSourcePost={"owner": MEMBER},
        generatedActivity="urn:li:comment:(urn:li:activity:7000,7001)",
        decoratedGeneratedActivity={"comment": {"text": "Thanks for sharing our story!"}},
    )
    in_own_thread = note(
        "ADMIN_COMMENT",
        notificationId=2002,
        generatedActivity="urn:li:comment:(urn:li:activity:7000,7002)",
    )
    first, second = run(batch(on_members_post, in_own_thread)).events
    assert (first.kind, first.actor, first.subject) == (Kind.COMMENT, lid(ORG), lid(MEMBER))
    assert first.direction is Direction.OUTBOUND and first.contact == lid(MEMBER)
    assert first.intent is Intent.THANKS
    assert second.actor == lid(ORG) and second.subject is None
    assert second.direction is Direction.OUTBOUND and second.contact is None


@pytest.mark.parametrize(
    ("action", "what"),
    [("COMMENT_EDIT", "linkedin.comment_edit"), ("COMMENT_DELETE", "linkedin.comment_delete")],
)
def test_edits_and_deletes_are_not_interactions(action: str, what: str) -> None:
    result = run(batch(note(action, generatedActivity=COMMENT)))
    assert result.events == ()
    assert [(s.what, s.detail) for s in result.skipped] == [(what, "1090")]


def test_unknown_action_is_a_typed_non_interaction() -> None:
    result = run(batch(note("SOMETHING_NEW")))
    assert [(s.what, s.detail) for s in result.skipped] == [("linkedin.action", "SOMETHING_NEW")]


def test_retries_and_two_subscribers_collapse_workspaces_do_not() -> None:
    item = note("COMMENT", generatedActivity=COMMENT)
    first = run(batch(item)).events[0]
    retry = run(batch(item)).events[0]
    other_admin = run(batch({**item, "notificationId": 5555, "subscriber": OTHER})).events[0]
    assert first.event_id == retry.event_id == other_admin.event_id
    other_workspace = run(batch(item), WorkspaceConfig(name="globex")).events[0]
    assert other_workspace.event_id != first.event_id


def test_likes_key_on_member_and_post() -> None:
    a = run(batch(note("LIKE", notificationId=1))).events[0]
    b = run(batch(note("LIKE", notificationId=2))).events[0]
    c = run(batch(note("LIKE", notificationId=3, actor=OTHER))).events[0]
    assert a.event_id == b.event_id != c.event_id


def test_without_generated_activity_the_notification_id_keys_comments() -> None:
    a = run(batch(note("COMMENT", notificationId=10))).events[0]
    b = run(batch(note("COMMENT", notificationId=11))).events[0]
    assert a.event_id != b.event_id
    assert a.object_id == "10"


@pytest.mark.parametrize(
    "body",
    [
        b"nope",
        b"[]",
        b'{"type": "ORGANIZATION_SOCIAL_ACTION_NOTIFICATIONS"}',
        b'{"notifications": {}}',
        b'{"notifications": [1]}',
        json.dumps(batch(note("LIKE", organizationalEntity=None))).encode(),
        json.dumps(batch(note("LIKE", actor=None))).encode(),
        json.dumps(batch(note("LIKE", lastModifiedAt="yesterday"))).encode(),
        json.dumps(batch(note("COMMENT", sourcePost=None, notificationId=None))).encode(),
    ],
)
def test_rejections(body: bytes) -> None:
    with pytest.raises(RejectedPayload):
        run(body)


def test_registered() -> None:
    assert ADAPTERS["linkedin"] is linkedin.normalize
