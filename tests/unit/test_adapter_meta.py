"""The Meta adapter against all 184 restfb bodies, a hand-read table, batches, retries and fuzz.

Fixtures: tests/fixtures/webhooks/meta_restfb (MIT, restfb; see SOURCE.txt and LICENSE.restfb.txt).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.adapters import ADAPTERS
from events.adapters import normalize as dispatch
from events.adapters.base import AdapterResult, RejectedPayload
from events.adapters.meta import normalize
from events.envelope import RawEnvelope
from events.models import Direction, Interaction, Kind
from rapport.workspaces import OwnedAccount, WorkspaceConfig

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks" / "meta_restfb"
ALL_BODIES = sorted(p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*.json"))
RAW = {rel: (FIXTURES / rel).read_bytes() for rel in ALL_BODIES}
# Graph API objects (GET /{message-id}, /{conversation-id}) that restfb keeps beside the webhook
# bodies: nobody POSTs these to a webhook, so they are rejected (dead-lettered), not skipped.
NOT_WEBHOOKS = {
    "instagram/v10_0-instagram-conversation.json",
    "instagram/v10_0-instagram-message-story.json",
    "instagram/v10_0-instagram-message.json",
}
WEBHOOK_BODIES = [rel for rel in ALL_BODIES if rel not in NOT_WEBHOOKS]
RECEIVED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

PAGE = "1234567890321"  # the Page of most feed bodies
MSGR_PAGE = "12345654332"  # the Page of most Messenger bodies
IG = "17841452691600098"
WA_PHONE = "10634295353625"  # metadata.phone_number_id of most WhatsApp bodies
WA_BSUID_PHONE = "106540352242922"
WAMID = "wamid.HBgNNDkxNTIwOTgzMzM5OBUCABIYHGDEHJVFHJEVCFHJEVBCMTkyODk1OEIyAA=="
WAMID_BSUID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
IG_MID = (
    "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDUyNjkxNjAwMDk4OjM0MDI4MjM2Njg0MTcxMDMwMDk0OTEy"
    "ODUyNTYwOTEwODQ0ODU4MjozMDc2OTU4MTA5OTY0OTI5MzAzMjAwODc1MDUxMTE2MTM0NAZDZD"
)
BASIC_MID = "mid.1457764197618:41d102a3e1ae206a38"


def s(epoch_seconds: int) -> datetime:
    """Exact UTC datetime of epoch seconds (independent of the adapter's conversion)."""
    return EPOCH + timedelta(seconds=epoch_seconds)


def ms(epoch_ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=epoch_ms)


def workspace(*owned: tuple[str, str], name: str = "acme") -> WorkspaceConfig:
    return WorkspaceConfig(
        name=name, accounts=tuple(OwnedAccount(platform=p, user_id=u) for p, u in owned)
    )


def envelope(body: bytes, workspace_name: str = "acme") -> RawEnvelope:
    return RawEnvelope(workspace=workspace_name, source="meta", received_at=RECEIVED, body=body)


def run(body: bytes | dict[str, Any], *owned: tuple[str, str], name: str = "acme") -> AdapterResult:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return normalize(workspace(*owned, name=name), envelope(raw, name))


def fixture(rel: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(RAW[rel])
    return body


def count_items(body: dict[str, Any]) -> int:
    """How many results a body must give: one per change / messaging item / WhatsApp message."""
    total = 0
    for entry in body["entry"]:
        total += len(entry.get("messaging", [])) + len(entry.get("standby", []))
        for change in entry.get("changes", []):
            value = change.get("value")
            is_wa_messages = body["object"] == "whatsapp_business_account" and (
                change["field"] == "messages"
            )
            if is_wa_messages and isinstance(value, dict):
                total += max(1, len(value.get("messages", [])) + len(value.get("statuses", [])))
            else:
                total += 1
    return total


# --- every body -----------------------------------------------------------------------------------


def test_all_184_bodies_and_their_attribution_are_vendored() -> None:
    assert len(ALL_BODIES) == 184
    folders = [rel.split("/")[0] for rel in ALL_BODIES]
    assert (folders.count("instagram"), folders.count("page_feed_messenger")) == (10, 140)
    assert folders.count("whatsapp") == 34
    assert "MIT" in (FIXTURES / "SOURCE.txt").read_text()
    assert "Permission is hereby granted" in (FIXTURES / "LICENSE.restfb.txt").read_text()


@pytest.mark.parametrize("rel", ALL_BODIES)
def test_every_body_yields_interactions_or_typed_skips(rel: str) -> None:
    if rel in NOT_WEBHOOKS:
        with pytest.raises(RejectedPayload, match="not a Meta webhook body"):
            run(RAW[rel])
        return
    result = run(RAW[rel])
    assert result.events or result.skipped
    assert len(result.events) + len(result.skipped) == count_items(fixture(rel))
    assert all(skip.what.startswith("meta.") and skip.what[5:] for skip in result.skipped)
    for event in result.events:
        assert event.platform in ("facebook", "instagram", "whatsapp")
        assert isinstance(event.actor.user_id, str)
        assert event.subject is None or isinstance(event.subject.user_id, str)
        assert isinstance(event.object_id, str) and len(event.event_id) == 32
        assert event.received_at == RECEIVED and event.occurred_at.tzinfo is not None


def test_how_many_bodies_yield_interactions() -> None:
    outcomes = {"events": 0, "skips_only": 0}
    for rel in WEBHOOK_BODIES:
        outcomes["events" if run(RAW[rel]).events else "skips_only"] += 1
    assert outcomes == {"events": 78, "skips_only": 103}


# --- the hand-read table --------------------------------------------------------------------------


@dataclass(frozen=True)
class Ev:
    kind: Kind
    platform: str
    actor: str
    subject: str | None
    direction: Direction
    occurred_at: datetime
    object_id: str
    conversation_id: str | None = None
    in_reply_to: str | None = None
    text: str | None = "<unchecked>"


FB, IGP, WA = "facebook", "instagram", "whatsapp"
IN, OUT = Direction.INBOUND, Direction.OUTBOUND
POST_901 = "1234567890321_901097836652708"
COMMENT_903 = "901097836652708_903438993085259"
RATED_POST = "100002241334695_904801129604590"
POST_987 = "1234567890321_98735342324352"

# body -> (owned accounts, expected events), read from each body by hand.
EXPECTED: dict[str, tuple[tuple[tuple[str, str], ...], list[Ev]]] = {
    # The Page commenting under its own post: outbound; whom it addresses is not in the body.
    "page_feed_messenger/feed-comment-add-211.json": (
        ((FB, PAGE),),
        [Ev(Kind.COMMENT, FB, PAGE, None, OUT, s(1449135003), COMMENT_903, POST_901, POST_901,
            "and the next one")],
    ),
    "page_feed_messenger/feed-comment-add-25.json": (  # sender_id is a JSON number here
        ((FB, PAGE),),
        [Ev(Kind.COMMENT, FB, PAGE, None, OUT, s(1449135003), COMMENT_903, POST_901, POST_901)],
    ),
    "page_feed_messenger/feed-comment-add-with-photo.json": (
        ((FB, PAGE),),
        [Ev(Kind.COMMENT, FB, PAGE, None, OUT, s(1449135003), COMMENT_903, POST_901, POST_901)],
    ),
    "page_feed_messenger/feed-comment-add-with-video.json": (
        ((FB, PAGE),),
        [Ev(Kind.COMMENT, FB, PAGE, None, OUT, s(1449135003), COMMENT_903, POST_901, POST_901)],
    ),
    "page_feed_messenger/feed-like-add-25.json": (
        ((FB, PAGE),),
        [Ev(Kind.REACTION, FB, "909653922461664", PAGE, IN, s(1450701319),
            "like:909653922461664_940663242694065:909653922461664",
            "909653922461664_940663242694065", "909653922461664_940663242694065", None)],
    ),
    "page_feed_messenger/feed-like-add-comment-25.json": (
        ((FB, PAGE),),
        [Ev(Kind.REACTION, FB, "909653922461664", PAGE, IN, s(1450701319),
            "like:940663242694065_659751347534292:909653922461664",
            None, "940663242694065_659751347534292")],
    ),
    # A like of the Page itself: a follow. No created_time: entry.time is the last resort.
    "page_feed_messenger/feed-like-add-page-25.json": (
        ((FB, PAGE),),
        [Ev(Kind.FOLLOW, FB, "10201978818232600", PAGE, IN, s(1450720238),
            f"page_like:{PAGE}:10201978818232600")],
    ),
    # A visitor's post on the Page (no created_time: entry.time).
    "page_feed_messenger/feed-post-add-25.json": (
        ((FB, PAGE),),
        [Ev(Kind.MENTION, FB, "8423678347823", PAGE, IN, s(1454707020),
            "1234567890321_7293787835232", "1234567890321_7293787835232", None,
            "Let's check this")],
    ),
    # created_time 1475578854, entry.time 1449135003: the object's own time wins.
    "page_feed_messenger/feed-reaction-add.json": (
        ((FB, PAGE),),
        [Ev(Kind.REACTION, FB, PAGE, None, OUT, s(1475578854),
            f"love:{POST_987}:{PAGE}", POST_987, POST_987)],
    ),
    "page_feed_messenger/feed-reaction-add-comment.json": (
        ((FB, PAGE),),
        [Ev(Kind.REACTION, FB, PAGE, None, OUT, s(1475578854),
            f"love:1234567890321_1264545546974600:{PAGE}", POST_987,
            "1234567890321_1264545546974600")],
    ),
    "page_feed_messenger/feed-reaction-add-reply.json": (
        ((FB, PAGE),),
        [Ev(Kind.REACTION, FB, PAGE, None, OUT, s(1475578854),
            f"like:1234567890321_1357555177673636:{PAGE}", POST_987,
            "1234567890321_1357555177673636")],
    ),
    "page_feed_messenger/mention-post-add.json": (
        ((FB, PAGE),),
        [Ev(Kind.MENTION, FB, "44444444", PAGE, IN, s(1496349586),
            "44444444_444444444", "44444444_444444444", None)],
    ),
    "page_feed_messenger/ratings-comment-add-25.json": (
        ((FB, PAGE),),
        [Ev(Kind.COMMENT, FB, "705955836155788", PAGE, IN, s(1448795386),
            "904801129604590_904802532937783", RATED_POST, RATED_POST)],
    ),
    "page_feed_messenger/ratings-like-add-25.json": (
        ((FB, PAGE),),
        [Ev(Kind.REACTION, FB, "705955836155788", PAGE, IN, s(1451775296),
            f"like:{RATED_POST}:705955836155788", RATED_POST, RATED_POST)],
    ),
    "page_feed_messenger/ratings-like-add-40.json": (
        ((FB, PAGE),),
        [Ev(Kind.REACTION, FB, "705955836155788", PAGE, IN, s(1451775296),
            f"like:{RATED_POST}:705955836155788", RATED_POST, RATED_POST)],
    ),
    # open_graph_story_id is a JSON number; no created_time in the v2.5 shape: entry.time.
    "page_feed_messenger/ratings-rating-add-25.json": (
        ((FB, PAGE),),
        [Ev(Kind.MENTION, FB, "705955836155788", PAGE, IN, s(1448795002),
            "904801129604590", "904801129604590", None, "Ja ziemlich coole Sache")],
    ),
    "page_feed_messenger/ratings-rating-add-31.json": (  # created_time, not entry.time
        ((FB, PAGE),),
        [Ev(Kind.MENTION, FB, "705955836155788", PAGE, IN, s(1537369512),
            "904801129604590", "904801129604590", None)],
    ),
    "page_feed_messenger/ratings-reaction-add.json": (  # comment_id is null
        ((FB, PAGE),),
        [Ev(Kind.REACTION, FB, "705955836155788", PAGE, IN, s(1489617863),
            f"haha:{RATED_POST}:705955836155788", RATED_POST, RATED_POST)],
    ),
    "page_feed_messenger/messaging-message-basic.json": (
        ((FB, MSGR_PAGE),),
        [Ev(Kind.MESSAGE, FB, "987654321432", MSGR_PAGE, IN, ms(1457764197627), BASIC_MID,
            None, None, "hello, world!")],
    ),
    # An echo: the Page wrote it (this body has sender/recipient the wrong way round).
    "page_feed_messenger/messaging-message-basic-echo.json": (
        ((FB, MSGR_PAGE),),
        [Ev(Kind.MESSAGE, FB, MSGR_PAGE, "987654321432", OUT, ms(1457764197627), BASIC_MID,
            None, None, "hello, world!")],
    ),
    "page_feed_messenger/standby-message-basic-echo.json": (
        ((FB, MSGR_PAGE),),
        [Ev(Kind.MESSAGE, FB, MSGR_PAGE, "987654321432", OUT, ms(1457764197627), BASIC_MID)],
    ),
    "page_feed_messenger/messaging-message-reply-1.json": (
        ((FB, MSGR_PAGE),),
        [Ev(Kind.MESSAGE, FB, "987654321432", MSGR_PAGE, IN, ms(1457764197627), BASIC_MID,
            None, "very_long_id_representing_the_original_message")],
    ),
    "page_feed_messenger/messaging-message-reply-2.json": (  # a reply to a story
        ((FB, MSGR_PAGE),),
        [Ev(Kind.MESSAGE, FB, "987654321432", MSGR_PAGE, IN, ms(1457764197627), BASIC_MID,
            None, "STORY_ID")],
    ),
    # timestamp 1470779510432 vs entry.time 1458696618911: months apart.
    "page_feed_messenger/messaging-message-quickreply.json": (
        ((FB, PAGE),),
        [Ev(Kind.MESSAGE, FB, "987654321432", PAGE, IN, ms(1470779510432),
            "mid.1458696618141:b4ef9d19ec21086067", None, None, "quick reply text")],
    ),
    "page_feed_messenger/messaging-message-sticker.json": (
        ((FB, MSGR_PAGE),),
        [Ev(Kind.MESSAGE, FB, "987654321432", MSGR_PAGE, IN, ms(1476219900918),
            "mid.12345654332:226a70a704", None, None, None)],
    ),
    "page_feed_messenger/messaging-message-isunsupported.json": (
        ((FB, MSGR_PAGE),),
        [Ev(Kind.MESSAGE, FB, "987654321432", MSGR_PAGE, IN, ms(1457764197627), "message_id",
            None, None, None)],
    ),
    # entry.id is 349489628480201 but the recipient is 12345654332: the subject is the recipient.
    "page_feed_messenger/messaging-message-nlp-email-2.json": (
        ((FB, MSGR_PAGE),),
        [Ev(Kind.MESSAGE, FB, "987654321432", MSGR_PAGE, IN, ms(1546990267208),
            "-DpM1dbY54v72W76CMcpFC67x9QLy11IvvcmRE")],
    ),
    "page_feed_messenger/messaging-message-nlp-1.json": (
        ((FB, "349489628480201"),),
        [Ev(Kind.MESSAGE, FB, "968155906638513", "349489628480201", IN, ms(1501620894921),
            "mid.$cAAFnKHM6z25j0NnEyVdn5SGZ-6BD", None, None, "bye, see you tomorrow at 4pm")],
    ),
    "page_feed_messenger/messaging-airline-itinerary-template.json": (
        ((FB, MSGR_PAGE),),
        [Ev(Kind.MESSAGE, FB, "987654321432", MSGR_PAGE, IN, ms(1458692752478),
            "mid.1458668856218:ed81099e15d3f4f233")],
    ),
    "page_feed_messenger/messaging-reaction-1.json": (
        ((FB, "PAGE_ID"),),
        [Ev(Kind.REACTION, FB, "USER_ID", "PAGE_ID", IN, ms(1572465098502),
            "sad:original_message_id:USER_ID", None, "original_message_id")],
    ),
    "instagram/messaging-attachment-unsupported.json": (
        ((IGP, IG),),
        [Ev(Kind.MESSAGE, IGP, "5614879045272581", IG, IN, ms(1668022333735), IG_MID,
            None, None, None)],
    ),
    # Instagram comments carry no time: entry.time (1519399307) is the last resort.
    "instagram/wh-comments-2021.json": (
        ((IGP, "0"),),
        [Ev(Kind.REPLY, IGP, "1234536447", "0", IN, s(1519399307), "123456789", "76543987",
            "987654321", "This is an example.")],
    ),
    "whatsapp/webhook-incoming-message-text.json": (
        ((WA, WA_PHONE),),
        [Ev(Kind.MESSAGE, WA, "491234567890", WA_PHONE, IN, s(1653253313), WAMID, None, None,
            "Test")],
    ),
    "whatsapp/webhook-incoming-message-emoji.json": (
        ((WA, WA_PHONE),),
        [Ev(Kind.REACTION, WA, "491234567890", WA_PHONE, IN, s(1653253313), WAMID, None,
            "wamid.xxxxxxxx")],
    ),
    "whatsapp/webhook-incoming-message-button.json": (
        ((WA, WA_PHONE),),
        [Ev(Kind.MESSAGE, WA, "491234567890", WA_PHONE, IN, s(1653253313), WAMID, None,
            "wamid.ID", "No")],
    ),
    "whatsapp/webhook-incoming-message-interactive-list.json": (
        ((WA, WA_PHONE),),
        [Ev(Kind.MESSAGE, WA, "491234567890", WA_PHONE, IN, s(1653253313), WAMID, None, None,
            "list_reply_title")],
    ),
    "whatsapp/webhook-incoming-message-image.json": (
        ((WA, WA_PHONE),),
        [Ev(Kind.MESSAGE, WA, "491234567890", WA_PHONE, IN, s(1653253313), WAMID, None, None,
            "Some awesome image")],
    ),
    "whatsapp/webhook-incoming-message-error.json": (
        ((WA, WA_PHONE),),
        [Ev(Kind.MESSAGE, WA, "491234567890", WA_PHONE, IN, s(1653253313), WAMID, None, None,
            None)],
    ),
    "whatsapp/webhook-incoming-message-text-bsuid.json": (  # a group message, sender by BSUID
        ((WA, WA_BSUID_PHONE),),
        [Ev(Kind.MESSAGE, WA, "US.13491208655302741918", WA_BSUID_PHONE, IN, s(1749416383),
            WAMID_BSUID, "120363418770915618@g.us", None, "Does it come in another color?")],
    ),
    "whatsapp/webhook-incoming-message-contacts-request-bsuid.json": (  # no from: contacts[0]
        ((WA, WA_BSUID_PHONE),),
        [Ev(Kind.MESSAGE, WA, "US.13491208655302741918", WA_BSUID_PHONE, IN, s(1749416383),
            WAMID_BSUID)],
    ),
    "whatsapp/webhook-incoming-message-contacts.json": (
        ((WA, "1111111111111111"),),
        [Ev(Kind.MESSAGE, WA, "333333333333", "1111111111111111", IN, s(1701168528),
            "wamid.randomwhatsappmessageid")],
    ),
}  # fmt: skip

EXPECTED_SKIPS: dict[str, list[str]] = {
    "page_feed_messenger/feed-comment-edited-25.json": ["meta.comment_edited"],
    "page_feed_messenger/feed-comment-edited-with-photo.json": ["meta.comment_edited"],
    "page_feed_messenger/feed-comment-remove-25.json": ["meta.comment_removed"],
    "page_feed_messenger/feed-comment-hide.json": ["meta.comment_hidden"],
    "page_feed_messenger/feed-comment-unhide.json": ["meta.comment_unhidden"],
    "page_feed_messenger/feed-like-remove-25.json": ["meta.like_removed"],
    "page_feed_messenger/feed-reaction-edit.json": ["meta.reaction_edited"],
    "page_feed_messenger/feed-reaction-remove.json": ["meta.reaction_removed"],
    "page_feed_messenger/feed-status-add-25.json": ["meta.page_post"],
    "page_feed_messenger/feed-share-add-25.json": ["meta.page_post"],
    "page_feed_messenger/feed-photo-add-25.json": ["meta.page_post"],
    "page_feed_messenger/feed-video-add.json": ["meta.page_post"],
    "page_feed_messenger/feed-post-edit.json": ["meta.post_edited"],
    "page_feed_messenger/feed-video-block.json": ["meta.video_blocked"],
    "page_feed_messenger/feed-video-mute.json": ["meta.video_muted"],
    "page_feed_messenger/feed-album-add.json": ["meta.album"],
    "page_feed_messenger/feed-event-add.json": ["meta.event"],
    "page_feed_messenger/leadgen.json": ["meta.leadgen"],
    "page_feed_messenger/feed-two-entries-25.json": ["meta.parking", "meta.payment_options"],
    "page_feed_messenger/mention-comment-add.json": ["meta.mention_unattributed"],
    "page_feed_messenger/mention-post-add-real.json": ["meta.mention_unattributed"],
    "page_feed_messenger/ratings-rating-edit-25.json": ["meta.rating_edited"],
    "page_feed_messenger/unknown-change-value.json": ["meta.foo"],
    "page_feed_messenger/messaging-message-edits.json": ["meta.message_edited"],
    "page_feed_messenger/messaging-message-isdeleted.json": ["meta.message_deleted"],
    "page_feed_messenger/messaging-read-basic.json": ["meta.read_receipt"],
    "page_feed_messenger/messaging-delivery-basic.json": ["meta.delivery_receipt"],
    "page_feed_messenger/messaging-postback-basic.json": ["meta.postback"],
    "page_feed_messenger/messaging-reaction-2.json": ["meta.reaction_removed"],
    "page_feed_messenger/messaging-optin-basic.json": ["meta.optin"],
    "page_feed_messenger/messaging-pass-thread-control.json": ["meta.handover"],
    "page_feed_messenger/messaging-policy-callback-block.json": ["meta.policy_enforcement"],
    "page_feed_messenger/permission-granted.wh-1.json": ["meta.permissions"],
    "page_feed_messenger/user-email.json": ["meta.user"],
    "instagram/messaging-seen.json": ["meta.read_receipt"],
    "instagram/wh-comments.json": ["meta.comment_unattributed"],
    "instagram/wh-livecomments.json": ["meta.live_comment_unattributed"],
    "instagram/wh-mentions.json": ["meta.mention_unattributed"],
    "instagram/wh-story_insights.json": ["meta.story_insights"],
    "whatsapp/webhook-incoming-message-status-ui.json": ["meta.whatsapp_status"],
    "whatsapp/webhook-incoming-message-status-errors.json": ["meta.whatsapp_status"],
    "whatsapp/webhook-incoming-message-system.json": ["meta.whatsapp_system"],
    "whatsapp/webhook-accountUpdate-banned.json": ["meta.account_update"],
    "whatsapp/webhook-userIdUpdate.json": ["meta.user_id_update"],
}


def test_the_table_is_big_enough() -> None:
    assert len(EXPECTED) >= 40
    assert not set(EXPECTED) & set(EXPECTED_SKIPS)


def _check(event: Interaction, want: Ev) -> None:
    got = (
        event.kind,
        event.platform,
        event.actor.user_id,
        event.subject.user_id if event.subject else None,
        event.direction,
        event.occurred_at,
        event.object_id,
        event.conversation_id,
        event.in_reply_to,
    )
    assert got == (
        want.kind,
        want.platform,
        want.actor,
        want.subject,
        want.direction,
        want.occurred_at,
        want.object_id,
        want.conversation_id,
        want.in_reply_to,
    )
    assert event.actor.platform == want.platform
    if want.text != "<unchecked>":
        assert event.text == want.text


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_hand_read_expectations(rel: str) -> None:
    owned, wanted = EXPECTED[rel]
    result = run(RAW[rel], *owned)
    assert len(result.events) == len(wanted)
    for event, want in zip(result.events, wanted, strict=True):
        _check(event, want)
        contact = event.contact.user_id if event.contact else None
        if want.direction is IN:
            assert event.account is not None and event.account.user_id == want.subject
            assert contact == want.actor
        else:
            assert event.account is not None and event.account.user_id == want.actor
            assert contact == want.subject


@pytest.mark.parametrize("rel", sorted(EXPECTED_SKIPS))
def test_hand_read_non_interactions(rel: str) -> None:
    result = run(RAW[rel], (FB, PAGE))
    assert result.events == ()
    assert [skip.what for skip in result.skipped] == EXPECTED_SKIPS[rel]


def test_without_owned_accounts_everything_is_external() -> None:
    result = run(RAW["page_feed_messenger/messaging-message-basic.json"])
    assert result.events[0].direction is Direction.EXTERNAL and result.events[0].contact is None


# --- units, times and ids -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "iso", "entry_time_iso"),
    [
        # feed created_time is seconds
        ("page_feed_messenger/feed-reaction-add.json", "2016-10-04T11:00:54",
         "2015-12-03T09:30:03"),
        ("page_feed_messenger/ratings-rating-add-31.json", "2018-09-19T15:05:12",
         "2015-11-29T11:03:22"),
        ("page_feed_messenger/ratings-reaction-add.json", "2017-03-15T22:44:23",
         "2017-03-15T22:44:24"),
        # messaging timestamp is milliseconds (and entry.time too, there)
        ("page_feed_messenger/messaging-message-basic.json", "2016-03-12T06:29:57.627",
         "2016-03-12T06:29:58.246"),
        ("page_feed_messenger/messaging-message-quickreply.json", "2016-08-09T21:51:50.432",
         "2016-03-23T01:30:18.911"),
        ("instagram/messaging-attachment-unsupported.json", "2022-11-09T19:32:13.735",
         "2022-11-09T19:32:14.834"),
    ],
)  # fmt: skip
def test_event_time_is_the_objects_own_time_not_entry_time(
    rel: str, iso: str, entry_time_iso: str
) -> None:
    (event,) = run(RAW[rel]).events
    assert event.occurred_at == datetime.fromisoformat(iso).replace(tzinfo=UTC)
    assert event.occurred_at != datetime.fromisoformat(entry_time_iso).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "rel",
    [
        "page_feed_messenger/feed-like-add-page-25.json",
        "page_feed_messenger/feed-post-add-25.json",
        "page_feed_messenger/mention-post-add.json",
        "page_feed_messenger/ratings-rating-add-25.json",
        "instagram/wh-comments-2021.json",
    ],
)
def test_entry_time_is_the_last_resort_only_for_items_without_a_time(rel: str) -> None:
    body = fixture(rel)
    value = body["entry"][0]["changes"][0]["value"]
    assert "created_time" not in value and "timestamp" not in value
    (event,) = run(body).events
    assert event.occurred_at == s(body["entry"][0]["time"])
    del body["entry"][0]["time"]
    with pytest.raises(RejectedPayload, match="no time of its own"):
        run(body)


def test_ids_are_strings_even_where_meta_sends_numbers() -> None:
    page_like = fixture("page_feed_messenger/feed-like-add-page-25.json")
    number = page_like["entry"][0]["changes"][0]["value"]["user_id"]
    assert isinstance(number, int) and number > 2**53  # a double would round it
    (event,) = run(page_like).events
    assert event.actor.user_id == "10201978818232600"

    message = fixture("page_feed_messenger/messaging-message-basic.json")
    assert isinstance(message["entry"][0]["messaging"][0]["sender"]["id"], int)
    assert isinstance(message["entry"][0]["id"], int)
    (event,) = run(message, (FB, MSGR_PAGE)).events
    assert (event.actor.user_id, event.subject and event.subject.user_id) == (
        "987654321432",
        MSGR_PAGE,
    )

    rating = fixture("page_feed_messenger/ratings-rating-add-25.json")
    assert isinstance(rating["entry"][0]["changes"][0]["value"]["open_graph_story_id"], int)
    assert run(rating).events[0].object_id == "904801129604590"
    dumped = json.loads(run(rating).events[0].model_dump_json())
    assert dumped["actor"]["user_id"] == "705955836155788"


def test_seconds_timestamps_in_a_messaging_item_are_read_as_seconds() -> None:
    # The dashboard's test sample: a flat `messages` change with a seconds timestamp string.
    body = {
        "field": "messages",
        "value": {
            "sender": {"id": "12334"},
            "recipient": {"id": "23245"},
            "timestamp": "1527459824",
            "message": {"mid": "random_mid", "text": "random_text"},
        },
    }
    (event,) = run(body, (FB, "23245")).events
    assert (event.kind, event.direction, event.occurred_at) == (Kind.MESSAGE, IN, s(1527459824))


# --- behaviour not covered by a fixture -----------------------------------------------------------


def _feed_change(value: dict[str, Any], field: str = "feed") -> dict[str, Any]:
    change = {"field": field, "value": value}
    return {"object": "page", "entry": [{"id": PAGE, "time": 1700000999, "changes": [change]}]}


def test_a_users_comment_is_inbound_and_the_pages_reply_is_outbound() -> None:
    user_comment = _feed_change(
        {
            "item": "comment",
            "verb": "add",
            "comment_id": "901_1",
            "post_id": POST_901,
            "parent_id": POST_901,
            "from": {"id": 555, "name": "A User"},
            "created_time": "1700000000",
            "message": "Could you send me the price list?",
        }
    )
    (comment,) = run(user_comment, (FB, PAGE)).events
    assert (comment.kind, comment.direction, comment.intent.value) == (Kind.COMMENT, IN, "ask")
    assert comment.occurred_at == s(1700000000)  # created_time as a string
    page_reply = _feed_change(
        {
            "item": "comment",
            "verb": "add",
            "comment_id": "901_2",
            "post_id": POST_901,
            "parent_id": "901_1",
            "from": {"id": PAGE, "name": "The Page"},
            "created_time": 1700000600,
            "message": "Here's the list",
        }
    )
    (reply,) = run(page_reply, (FB, PAGE)).events
    assert (reply.kind, reply.direction, reply.subject) == (Kind.REPLY, OUT, None)
    assert (reply.in_reply_to, reply.conversation_id) == ("901_1", POST_901)
    assert reply.account is not None and reply.account.user_id == PAGE


def test_a_visitors_share_and_unliking_the_page() -> None:
    share = _feed_change(
        {
            "item": "share",
            "verb": "add",
            "share_id": 42,
            "post_id": "1234567890321_42",
            "from": {"id": "777"},
            "created_time": 1700000000,
        }
    )
    (event,) = run(share, (FB, PAGE)).events
    assert (event.kind, event.direction, event.object_id, event.intent.value) == (
        Kind.SHARE,
        IN,
        "42",
        "give",
    )
    unlike = _feed_change({"item": "like", "verb": "remove", "user_id": 777})
    (event,) = run(unlike, (FB, PAGE)).events
    assert (event.kind, event.direction, event.occurred_at) == (Kind.UNFOLLOW, IN, s(1700000999))


def test_a_like_and_its_like_reaction_are_one_event() -> None:
    like = {"item": "like", "verb": "add", "post_id": POST_901, "sender_id": 555}
    reaction = {**like, "item": "reaction", "reaction_type": "like", "from": {"id": "555"}}
    body = _feed_change(like)
    body["entry"][0]["changes"].append({"field": "feed", "value": reaction})
    result = run(body, (FB, PAGE))
    assert len(result.events) == 1 and result.events[0].kind is Kind.REACTION


def test_instagram_story_mention_dm_and_own_comment() -> None:
    story = {
        "object": "instagram",
        "entry": [
            {
                "id": IG,
                "time": 1700000001000,
                "messaging": [
                    {
                        "sender": {"id": "5614879045272581"},
                        "recipient": {"id": IG},
                        "timestamp": 1700000000123,
                        "message": {
                            "mid": "ig_mid_1",
                            "attachments": [{"type": "story_mention", "payload": {"url": "u"}}],
                        },
                    }
                ],
            }
        ],
    }
    (event,) = run(story, (IGP, IG)).events
    assert (event.kind, event.direction, event.occurred_at) == (Kind.MENTION, IN, ms(1700000000123))
    own = fixture("instagram/wh-comments-2021.json")
    own["entry"][0]["changes"][0]["value"]["from"]["id"] = "0"
    (event,) = run(own, (IGP, "0")).events
    assert (event.direction, event.subject) == (OUT, None)


def test_whatsapp_value_with_messages_and_statuses_and_a_removed_reaction() -> None:
    body = fixture("whatsapp/webhook-incoming-message-text.json")
    value = body["entry"][0]["changes"][0]["value"]
    value["messages"].append(
        {
            "from": "491234567890",
            "id": "wamid.2",
            "timestamp": "1653253400",
            "type": "reaction",
            "reaction": {"message_id": "wamid.1", "emoji": ""},
        }
    )
    value["statuses"] = [{"id": "wamid.3", "status": "read", "timestamp": "1653253401"}]
    result = run(body, (WA, WA_PHONE))
    assert [e.object_id for e in result.events] == [WAMID]
    assert [(k.what, k.detail) for k in result.skipped] == [
        ("meta.reaction_removed", ""),
        ("meta.whatsapp_status", "read"),
    ]


def test_flat_field_value_body() -> None:
    flat = {
        "field": "feed",
        "value": {
            "item": "comment",
            "verb": "add",
            "comment_id": "1_2",
            "post_id": "9_1",
            "from": {"id": "555"},
            "created_time": 1700000000,
        },
    }
    (event,) = run(flat).events
    assert (event.platform, event.kind, event.subject, event.occurred_at) == (
        FB,
        Kind.COMMENT,
        None,
        s(1700000000),
    )
    instagram_sample = {"field": "comments", "value": {"id": "1", "from": {"id": "2"}}}
    with pytest.raises(RejectedPayload, match="no time of its own"):
        run(instagram_sample)  # the dashboard sample has no time and no entry.time


# --- batches and redelivery -----------------------------------------------------------------------


def test_the_two_entry_batch_yields_one_result_per_entry() -> None:
    result = run(RAW["page_feed_messenger/feed-two-entries-25.json"])
    assert len(fixture("page_feed_messenger/feed-two-entries-25.json")["entry"]) == 2
    assert [k.what for k in result.skipped] == ["meta.parking", "meta.payment_options"]


def test_a_batch_of_fixture_entries_yields_one_event_per_item() -> None:
    parts = [
        "page_feed_messenger/feed-like-add-25.json",
        "page_feed_messenger/ratings-comment-add-25.json",
        "page_feed_messenger/feed-post-add-25.json",
        "page_feed_messenger/messaging-message-basic.json",
        "page_feed_messenger/messaging-reaction-1.json",
        "page_feed_messenger/feed-comment-edited-25.json",
    ]
    entries = [fixture(rel)["entry"][0] for rel in parts]
    reaction = fixture("page_feed_messenger/feed-reaction-add.json")["entry"][0]["changes"][0]
    entries[0]["changes"].append(reaction)
    second = copy.deepcopy(entries[3]["messaging"][0])
    second["message"]["mid"] = "mid.second"
    entries[3]["messaging"].append(second)
    result = run({"object": "page", "entry": entries}, (FB, PAGE), (FB, MSGR_PAGE))
    kinds = [e.kind for e in result.events]
    assert kinds == [
        Kind.REACTION,
        Kind.REACTION,
        Kind.COMMENT,
        Kind.MENTION,
        Kind.MESSAGE,
        Kind.MESSAGE,
        Kind.REACTION,
    ]
    assert len({e.event_id for e in result.events}) == 7
    assert [k.what for k in result.skipped] == ["meta.comment_edited"]


def test_redelivery_gives_identical_event_ids() -> None:
    for rel in WEBHOOK_BODIES:
        first = run(RAW[rel], (FB, PAGE))
        again = run(RAW[rel], (FB, PAGE))
        assert [e.event_id for e in first.events] == [e.event_id for e in again.events]
        assert first == again


def test_a_retry_36_hours_later_collapses_but_workspaces_do_not() -> None:
    body = fixture("page_feed_messenger/ratings-comment-add-25.json")
    (first,) = run(body, (FB, PAGE)).events
    body["entry"][0]["time"] += 36 * 3600  # Meta's retry carries a new send time
    (retry,) = run(body, (FB, PAGE)).events
    assert retry.event_id == first.event_id and retry.occurred_at == first.occurred_at
    (other,) = run(body, (FB, PAGE), name="globex").events
    assert other.event_id != first.event_id and other.object_id == first.object_id


def test_the_same_message_echoed_to_two_owned_accounts_of_one_workspace_collapses() -> None:
    inbound = run(RAW["page_feed_messenger/messaging-message-basic.json"], (FB, MSGR_PAGE))
    standby = run(RAW["page_feed_messenger/standby-message-basic-echo.json"], (FB, MSGR_PAGE))
    assert inbound.events[0].event_id == standby.events[0].event_id  # one mid, one event


# --- rejections and the registry ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe{", "not JSON"),
        (b"{nope", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"object": "page", "entry": {}}', "entry must be a list"),
        (b'{"object": "page", "entry": []}', "empty"),
        (b'{"entry": [{"id": "1"}]}', "string `object`"),
        (b'{"object": "page", "entry": [{"id": "1", "time": 1}]}', "no changes, messaging"),
        (b'{"object": "page", "entry": [7]}', "entry\\[0\\] must be an object"),
        (
            b'{"object":"page","entry":[{"id":"1","changes":[{"field":"feed","value":'
            b'{"item":"comment","verb":"add","from":{"id":"2"},"created_time":1}}]}]}',
            "comment_id",
        ),
        (
            b'{"object":"page","entry":[{"id":"1","messaging":[{"sender":{"id":"2"},'
            b'"recipient":{"id":"1"},"timestamp":1700000000000,"message":{"text":"hi"}}]}]}',
            "mid",
        ),
        (
            b'{"object":"page","entry":[{"id":"1","messaging":[{"recipient":{"id":"1"},'
            b'"timestamp":1700000000000,"message":{"mid":"m"}}]}]}',
            "sender",
        ),
        (
            b'{"object":"page","entry":[{"id":"1","messaging":[{"sender":{"id":"2"},'
            b'"recipient":{"id":"1"},"timestamp":Infinity,"message":{"mid":"m"}}]}]}',
            "finite",
        ),
        (
            b'{"object":"page","entry":[{"id":"1","messaging":[{"sender":{"id":true},'
            b'"recipient":{"id":"1"},"timestamp":1,"message":{"mid":"m"}}]}]}',
            "sender.id",
        ),
        (
            b'{"object":"page","entry":[{"id":"1","messaging":[{"sender":{"id":"'
            + b"9" * 600
            + b'"},"recipient":{"id":"1"},"timestamp":1700000000000,"message":{"mid":"m"}}]}]}',
            "not a valid user id",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    ],
)
def test_rejections_name_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(RejectedPayload, match=reason):
        run(body)


def test_registered_as_the_meta_source() -> None:
    assert ADAPTERS["meta"] is normalize
    raw = RAW["page_feed_messenger/messaging-message-basic.json"]
    result = dispatch(workspace((FB, MSGR_PAGE)), envelope(raw))
    assert result.events[0].direction is IN


# --- fuzz: any JSON gives a result or a RejectedPayload -------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["1700000000", "1700000000000", "1.5", "add", "comment", "page", ""])
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
KEYS = [
    "item", "verb", "comment_id", "post_id", "parent_id", "from", "id", "sender_id", "user_id",
    "created_time", "message", "reaction_type", "share_id", "open_graph_story_id", "reviewer_id",
    "media", "text", "sender", "recipient", "timestamp", "mid", "is_echo", "reply_to", "reaction",
    "action", "metadata", "phone_number_id", "messages", "statuses", "contacts", "type", "context",
    "emoji", "message_id", "wa_id", "from_user_id", "attachments", "story", "read", "postback",
]  # fmt: skip
META_DICTS = st.recursive(
    st.dictionaries(st.sampled_from(KEYS), JSON_SCALARS, max_size=6),
    lambda children: st.dictionaries(
        st.sampled_from(KEYS), children | st.lists(children, max_size=2) | JSON_SCALARS, max_size=6
    ),
    max_leaves=24,
)


def assert_total(body: bytes) -> None:
    try:
        result = normalize(workspace((FB, PAGE), (FB, MSGR_PAGE)), envelope(body))
    except RejectedPayload as exc:
        assert exc.reason
        return
    assert isinstance(result, AdapterResult)
    for event in result.events:
        assert isinstance(event.actor.user_id, str) and isinstance(event.object_id, str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSON_VALUES.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64)))
def test_arbitrary_json_never_raises_anything_else(body: bytes) -> None:
    assert_total(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    obj=st.sampled_from(["page", "instagram", "whatsapp_business_account", "user"]),
    field=st.sampled_from(["feed", "ratings", "mention", "comments", "mentions", "messages"]),
    value=META_DICTS,
    messaging=st.lists(META_DICTS, max_size=2),
    time=JSON_SCALARS,
)
def test_meta_shaped_json_never_raises_anything_else(
    obj: str, field: str, value: dict[str, Any], messaging: list[dict[str, Any]], time: Any
) -> None:
    entry = {"id": PAGE, "time": time, "changes": [{"field": field, "value": value}]}
    entry["messaging"] = messaging
    assert_total(json.dumps({"object": obj, "entry": [entry]}).encode())


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _paths(child, (*prefix, index))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), rel=st.sampled_from(WEBHOOK_BODIES))
def test_mutated_fixtures_never_raise_anything_else(data: st.DataObject, rel: str) -> None:
    body: Any = fixture(rel)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        paths = list(_paths(body))
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSON_VALUES)
    assert_total(json.dumps(body).encode())
