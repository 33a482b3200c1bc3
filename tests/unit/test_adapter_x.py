"""X Account Activity adapter.

Vendor bodies: tests/fixtures/webhooks/x_account_activity/ (verbatim copies, see SOURCE.txt).
Tweet, favorite and follow bodies below are CONSTRUCTED: the vendor documents those only as
shapes with `<Tweet Object>` placeholders (envelopes_with_placeholders.txt), so they are built
from X's documented Tweet/User object fields (id_str, created_at, timestamp_ms, user.id_str,
in_reply_to_status_id_str, in_reply_to_user_id_str, is_quote_status, quoted_status,
retweeted_status, entities.user_mentions). Ids are realistic 19-digit snowflakes (> 2**53).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from events.adapters import ADAPTERS, x
from events.adapters.base import AdapterResult, RejectedPayload
from events.envelope import RawEnvelope
from events.models import Direction, Identity, Intent, Interaction, Kind
from rapport.workspaces import OwnedAccount, WorkspaceConfig

FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks" / "x_account_activity"
RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)

BRAND = "783214"  # owned (the brand)
ADVOCATE = "2244994945"  # owned (an employee advocate)
ALICE = "1267551934620164096"  # contacts
BOB = "1177300102465372160"

ACME = WorkspaceConfig(
    name="acme",
    accounts=(
        OwnedAccount(platform="x", user_id=BRAND, member="brand"),
        OwnedAccount(platform="x", user_id=ADVOCATE, member="dana"),
    ),
)


def xid(user_id: str) -> Identity:
    return Identity(platform="x", user_id=user_id)


def run(body: Any, workspace: WorkspaceConfig = ACME) -> AdapterResult:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    envelope = RawEnvelope(workspace=workspace.name, source="x", received_at=RECEIVED, body=raw)
    return x.normalize(workspace, envelope)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def user(user_id: str, screen_name: str) -> dict[str, Any]:
    # `id` as a JavaScript client would have rounded it: the adapter must never read it.
    return {"id": float(user_id), "id_str": user_id, "screen_name": screen_name}


def tweet(tweet_id: str, author: dict[str, Any], text: str, **fields: Any) -> dict[str, Any]:
    body = {
        "created_at": "Tue Oct 09 17:20:00 +0000 2018",
        "id": float(tweet_id),
        "id_str": tweet_id,
        "text": text,
        "user": author,
        "in_reply_to_status_id_str": None,
        "in_reply_to_user_id_str": None,
        "is_quote_status": False,
        "entities": {"hashtags": [], "urls": [], "user_mentions": []},
        "timestamp_ms": "1539105600123",
    }
    body.update(fields)
    return body


def mentions(*users: dict[str, Any]) -> dict[str, Any]:
    return {
        "hashtags": [],
        "urls": [],
        "user_mentions": [{"id_str": u["id_str"], "screen_name": u["screen_name"]} for u in users],
    }


ALICE_U = user(ALICE, "alice")
BOB_U = user(BOB, "bob")
BRAND_U = user(BRAND, "acme")
ADVOCATE_U = user(ADVOCATE, "dana_at_acme")
AT_1539105600123 = datetime(2018, 10, 9, 17, 20, 0, 123000, tzinfo=UTC)


# --- vendor examples ---------------------------------------------------------------------------


def test_vendor_dm_example_inbound_to_owned_recipient() -> None:
    workspace = WorkspaceConfig(
        name="acme", accounts=[OwnedAccount(platform="x", user_id="4337869213")]
    )
    result = run(fixture("direct_message_events.json"), workspace)
    assert result.skipped == ()
    (event,) = result.events
    assert event.platform == "x"
    assert event.kind is Kind.MESSAGE
    assert event.actor == xid("3001969357")
    assert event.subject == xid("4337869213")
    assert event.direction is Direction.INBOUND
    assert event.contact == xid("3001969357")
    assert event.account == xid("4337869213")
    assert event.member == "brand"
    assert event.occurred_at == datetime(2018, 1, 19, 23, 12, 40, 557000, tzinfo=UTC)
    assert event.received_at == RECEIVED
    assert event.object_id == "954491830116155396"
    assert event.text == "Hello World!"
    assert event.intent is Intent.GREETING
    assert isinstance(event.actor.user_id, str) and isinstance(event.object_id, str)


def test_vendor_dm_users_nested_in_apps_is_not_needed() -> None:
    body = json.loads(fixture("direct_message_events.json"))
    assert "users" in body["apps"] and "users" not in body  # the vendor's doc quirk
    del body["apps"]
    (event,) = run(body).events
    assert event.actor == xid("3001969357")


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("direct_message_indicate_typing_events.json", "x.typing_indicator"),
        ("direct_message_mark_read_events.json", "x.read_receipt"),
        ("tweet_delete_events.json", "x.tweet_deleted"),
        ("user_event_revoke.json", "x.user_event"),
    ],
)
def test_other_vendor_examples_are_typed_non_interactions(name: str, what: str) -> None:
    result = run(fixture(name))
    assert result.events == ()
    assert [s.what for s in result.skipped] == [what]


def test_placeholder_shapes_are_not_a_body() -> None:
    with pytest.raises(RejectedPayload, match="not JSON"):
        run(fixture("envelopes_with_placeholders.txt"))


def test_one_dm_seen_by_two_owned_accounts_collapses_but_workspaces_stay_apart() -> None:
    both = WorkspaceConfig(
        name="acme",
        accounts=[
            OwnedAccount(platform="x", user_id="4337869213", member="brand"),
            OwnedAccount(platform="x", user_id="3001969357", member="jordan"),
        ],
    )
    for_recipient = json.loads(fixture("direct_message_events.json"))
    for_sender = copy.deepcopy(for_recipient)
    for_sender["for_user_id"] = "3001969357"
    (a,) = run(for_recipient, both).events
    (b,) = run(for_sender, both).events
    assert a.event_id == b.event_id
    assert a.direction is Direction.INTERNAL
    other = WorkspaceConfig(
        name="globex", accounts=[OwnedAccount(platform="x", user_id="4337869213")]
    )
    (c,) = run(for_recipient, other).events
    assert c.event_id != a.event_id
    assert c.direction is Direction.INBOUND
    assert len({a.event_id, c.event_id}) == 2


def test_redelivery_is_the_same_event() -> None:
    body = fixture("direct_message_events.json")
    assert run(body).events[0] == run(body).events[0]


# --- tweets (constructed) ----------------------------------------------------------------------


def test_reply_from_contact_to_brand_is_inbound_reply() -> None:
    body = {
        "for_user_id": BRAND,
        "tweet_create_events": [
            tweet(
                "1049391520151883776",
                ALICE_U,
                "@acme could you share the slides from today?",
                in_reply_to_status_id_str="1049390000000000001",
                in_reply_to_user_id_str=BRAND,
                conversation_id_str="1049390000000000001",
                entities=mentions(BRAND_U),
            )
        ],
    }
    (event,) = run(body).events
    assert event.kind is Kind.REPLY
    assert event.actor == xid(ALICE)
    assert event.subject == xid(BRAND)
    assert event.direction is Direction.INBOUND
    assert event.occurred_at == AT_1539105600123
    assert event.object_id == "1049391520151883776"
    assert event.in_reply_to == "1049390000000000001"
    assert event.conversation_id == "1049390000000000001"
    assert event.intent is Intent.ASK


def test_reply_without_conversation_id_has_unknown_conversation() -> None:
    body = {
        "tweet_create_events": [
            tweet(
                "1049391520151883776",
                BRAND_U,
                "@alice here's the deck: https://t.co/x",
                in_reply_to_status_id_str="1049391000000000002",
                in_reply_to_user_id_str=ALICE,
            )
        ]
    }
    (event,) = run(body).events
    assert (event.kind, event.direction) == (Kind.REPLY, Direction.OUTBOUND)
    assert event.actor == xid(BRAND) and event.subject == xid(ALICE)
    assert event.contact == xid(ALICE) and event.account == xid(BRAND)
    assert event.conversation_id is None
    assert event.intent is Intent.GIVE


def test_quote_of_brand_tweet() -> None:
    quoted = tweet("1049000000000000003", BRAND_U, "We shipped v2")
    body = {
        "for_user_id": BRAND,
        "tweet_create_events": [
            tweet(
                "1049391520151883777",
                BOB_U,
                "Great work on this release",
                is_quote_status=True,
                quoted_status_id_str="1049000000000000003",
                quoted_status=quoted,
            )
        ],
    }
    (event,) = run(body).events
    assert event.kind is Kind.QUOTE
    assert event.actor == xid(BOB) and event.subject == xid(BRAND)
    assert event.direction is Direction.INBOUND
    assert event.in_reply_to == "1049000000000000003"
    assert event.conversation_id is None  # not guessed: AAA v1.1 tweets carry no conversation
    assert event.intent is Intent.GIVE


def test_retweet_is_a_share_of_the_original_author() -> None:
    original = tweet("1049000000000000003", BRAND_U, "We shipped v2")
    body = {
        "for_user_id": BRAND,
        "tweet_create_events": [
            tweet(
                "1049391520151883778",
                ALICE_U,
                "RT @acme: We shipped v2",
                retweeted_status=original,
                entities=mentions(BRAND_U),
            )
        ],
    }
    (event,) = run(body).events
    assert event.kind is Kind.SHARE
    assert event.actor == xid(ALICE) and event.subject == xid(BRAND)
    assert event.direction is Direction.INBOUND
    assert event.object_id == "1049391520151883778"
    assert event.in_reply_to == "1049000000000000003"
    assert event.conversation_id is None
    assert event.intent is Intent.GIVE


def test_mention_prefers_the_delivery_account_and_collapses_across_deliveries() -> None:
    mention = tweet(
        "1049391520151883779",
        ALICE_U,
        "Thanks @dana_at_acme and @acme for the help",
        entities=mentions(BRAND_U, ADVOCATE_U),
    )
    to_advocate = run({"for_user_id": ADVOCATE, "tweet_create_events": [mention]}).events[0]
    to_brand = run({"for_user_id": BRAND, "tweet_create_events": [mention]}).events[0]
    assert to_advocate.kind is Kind.MENTION
    assert to_advocate.subject == xid(ADVOCATE) and to_advocate.member == "dana"
    assert to_brand.subject == xid(BRAND) and to_brand.member == "brand"
    assert to_advocate.event_id == to_brand.event_id
    assert to_advocate.direction is Direction.INBOUND
    assert to_advocate.intent is Intent.THANKS
    assert to_advocate.conversation_id is None
    assert to_advocate.in_reply_to is None


def test_contact_reply_to_contact_that_names_the_brand_is_a_mention() -> None:
    body = {
        "for_user_id": BRAND,
        "tweet_create_events": [
            tweet(
                "1049391520151883780",
                BOB_U,
                "@alice you should ask @acme about this",
                in_reply_to_status_id_str="1049391000000000009",
                in_reply_to_user_id_str=ALICE,
                entities=mentions(ALICE_U, BRAND_U),
            )
        ],
    }
    (event,) = run(body).events
    assert event.kind is Kind.MENTION
    assert event.actor == xid(BOB) and event.subject == xid(BRAND)
    assert event.direction is Direction.INBOUND
    assert event.in_reply_to == "1049391000000000009"


def test_contact_reply_to_contact_without_brand_is_external() -> None:
    body = {
        "tweet_create_events": [
            tweet(
                "1049391520151883781",
                BOB_U,
                "@alice agreed",
                in_reply_to_status_id_str="1049391000000000009",
                in_reply_to_user_id_str=ALICE,
                entities=mentions(ALICE_U),
            )
        ]
    }
    (event,) = run(body).events
    assert (event.kind, event.direction) == (Kind.REPLY, Direction.EXTERNAL)
    assert event.contact is None and event.account is None


def test_owned_accounts_plain_tweet_is_not_an_interaction() -> None:
    result = run({"tweet_create_events": [tweet("1049391520151883782", BRAND_U, "Hiring!")]})
    assert result.events == ()
    assert [(s.what, s.detail) for s in result.skipped] == [("x.own_tweet", "1049391520151883782")]


def test_owned_account_thread_continuation_is_own_tweet() -> None:
    body = {
        "tweet_create_events": [
            tweet(
                "1049391520151883783",
                BRAND_U,
                "2/ and more",
                in_reply_to_status_id_str="1049391520151883782",
                in_reply_to_user_id_str=BRAND,
            )
        ]
    }
    assert [s.what for s in run(body).skipped] == ["x.own_tweet"]


def test_owned_account_mentioning_a_contact_is_outbound_mention() -> None:
    body = {
        "tweet_create_events": [
            tweet(
                "1049391520151883784",
                ADVOCATE_U,
                "Congrats @alice on the launch!",
                entities=mentions(ALICE_U),
            )
        ]
    }
    (event,) = run(body).events
    assert (event.kind, event.direction) == (Kind.MENTION, Direction.OUTBOUND)
    assert event.subject == xid(ALICE) and event.member == "dana"


def test_tweet_time_falls_back_to_twitter_created_at() -> None:
    item = tweet("1049391520151883785", ALICE_U, "hi @acme", entities=mentions(BRAND_U))
    del item["timestamp_ms"]
    item["created_at"] = "Mon Mar 26 16:33:26 +0000 2018"
    (event,) = run({"tweet_create_events": [item]}).events
    assert event.occurred_at == datetime(2018, 3, 26, 16, 33, 26, tzinfo=UTC)


def test_numeric_timestamp_ms_equals_string_timestamp_ms() -> None:
    item = tweet("1049391520151883786", ALICE_U, "hi @acme", entities=mentions(BRAND_U))
    as_string = run({"tweet_create_events": [item]}).events[0]
    item["timestamp_ms"] = 1539105600123
    as_number = run({"tweet_create_events": [item]}).events[0]
    assert as_string.occurred_at == as_number.occurred_at == AT_1539105600123


def test_tweet_ids_come_from_id_str_only() -> None:
    item = tweet("1049391520151883787", ALICE_U, "hi @acme", entities=mentions(BRAND_U))
    assert int(item["id"]) != 1049391520151883787  # the float copy really is wrong
    (event,) = run({"tweet_create_events": [item]}).events
    assert event.object_id == "1049391520151883787"
    assert event.actor.user_id == ALICE
    del item["id_str"]
    with pytest.raises(RejectedPayload, match="id_str"):
        run({"tweet_create_events": [item]})


def test_bad_created_at_is_rejected() -> None:
    item = tweet("1049391520151883788", ALICE_U, "x", entities=mentions(BRAND_U))
    del item["timestamp_ms"]
    item["created_at"] = "2018-03-26T16:33:26Z"
    with pytest.raises(RejectedPayload, match="Twitter-format"):
        run({"tweet_create_events": [item]})


# --- favorites and follows (constructed) -------------------------------------------------------


def favorite_body() -> dict[str, Any]:
    return {
        "for_user_id": BRAND,
        "favorite_events": [
            {
                "id": "a7ba59eab0bfcba386f7acedac279542",
                "created_at": "Mon Mar 26 16:33:26 +0000 2018",
                "timestamp_ms": 1522082006140,
                "favorited_status": tweet(
                    "976482131345858560",
                    BRAND_U,
                    "We shipped v2",
                    created_at="Wed Mar 21 15:00:00 +0000 2018",
                    timestamp_ms="1521644400000",
                ),
                "user": ALICE_U,
            }
        ],
    }


def test_favorite_is_an_inbound_reaction_at_the_like_time() -> None:
    (event,) = run(favorite_body()).events
    assert event.kind is Kind.REACTION
    assert event.actor == xid(ALICE) and event.subject == xid(BRAND)
    assert event.direction is Direction.INBOUND
    assert event.occurred_at == datetime(2018, 3, 26, 16, 33, 26, 140000, tzinfo=UTC)
    assert event.object_id == "a7ba59eab0bfcba386f7acedac279542"
    assert event.in_reply_to == "976482131345858560"
    assert event.intent is Intent.GIVE


def test_favorite_without_timestamp_ms_uses_its_own_created_at() -> None:
    body = favorite_body()
    del body["favorite_events"][0]["timestamp_ms"]
    (event,) = run(body).events
    assert event.occurred_at == datetime(2018, 3, 26, 16, 33, 26, tzinfo=UTC)


@pytest.mark.parametrize("kind", ["follow", "unfollow"])
def test_follow_events(kind: str) -> None:
    body = {
        "for_user_id": BRAND,
        "follow_events": [
            {
                "type": kind,
                "created_timestamp": "1517588749178",
                "target": BRAND_U,
                "source": ALICE_U,
            }
        ],
    }
    (event,) = run(body).events
    assert event.kind is Kind(kind)
    assert event.actor == xid(ALICE) and event.subject == xid(BRAND)
    assert event.direction is Direction.INBOUND
    assert event.occurred_at == datetime(2018, 2, 2, 16, 25, 49, 178000, tzinfo=UTC)
    assert event.object_id == f"{ALICE}:{BRAND}:{kind}:1517588749178"
    assert event.intent is (Intent.GIVE if kind == "follow" else Intent.NEUTRAL)


def test_follow_then_unfollow_are_two_events() -> None:
    events: list[Interaction] = []
    for kind in ("follow", "unfollow"):
        item = {"type": kind, "created_timestamp": "1517588749178", "target": BRAND_U}
        events += run({"follow_events": [{**item, "source": ALICE_U}]}).events
    assert len({e.event_id for e in events}) == 2


@pytest.mark.parametrize(("key", "what"), [("block_events", "x.block"), ("mute_events", "x.mute")])
def test_block_and_mute_are_not_interactions(key: str, what: str) -> None:
    item = {
        "type": key[:-8],
        "created_timestamp": "1518127020304",
        "source": BRAND_U,
        "target": BOB_U,
    }
    result = run({"for_user_id": BRAND, key: [item]})
    assert result.events == () and [s.what for s in result.skipped] == [what]


# --- rejections --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b"{}", b'{"tweet_create_events": {}}', b'{"favorite_events": [1]}'],
)
def test_rejections(body: bytes) -> None:
    with pytest.raises(RejectedPayload):
        run(body)


def test_registered() -> None:
    assert ADAPTERS["x"] is x.normalize
