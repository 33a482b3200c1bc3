"""Adapters are total: any body gives an AdapterResult or a RejectedPayload, never a crash.

Every adapter registered in ADAPTERS is fuzzed (new platforms are picked up automatically) with
arbitrary bytes, arbitrary JSON, and JSON built from the field names and values the platforms use,
so the fuzzer gets past the first `if "key" in body` of each adapter. Adapters with real fixture
bodies are also fuzzed with those bodies, a few subtrees replaced by arbitrary values, which
reaches the deepest branches.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.adapters import ADAPTERS
from events.adapters.base import AdapterResult, RejectedPayload
from events.envelope import RawEnvelope
from events.models import Interaction
from rapport.workspaces import OwnedAccount, WorkspaceConfig

OWNED_IDS = ["783214", "4337869213", "U0OWNED01", "urn:li:organization:2414183", "1093", "1"]
WORKSPACE = WorkspaceConfig(
    name="acme",
    accounts=tuple(
        OwnedAccount(platform=platform, user_id=user_id)
        for platform in ("x", "slack", "linkedin", "mastodon", "email", "facebook", "instagram")
        for user_id in OWNED_IDS
    ),
)

# fmt: off
FIELDS = [
    "type", "event", "object", "notifications", "action", "actor", "id", "id_str", "user", "text",
    "full_text", "ts", "channel", "created_at", "timestamp_ms", "tweet_create_events",
    "favorite_events", "follow_events", "direct_message_events", "for_user_id", "message_create",
    "message_data", "target", "sender_id", "recipient_id", "created_timestamp", "entities",
    "user_mentions", "in_reply_to_status_id_str", "in_reply_to_user_id_str", "retweeted_status",
    "quoted_status", "is_quote_status", "conversation_id_str", "favorited_status", "source",
    "event_ts", "event_time", "item", "item_user", "reaction", "thread_ts", "parent_user_id",
    "authorizations", "user_id", "subtype", "channel_type", "organizationalEntity", "sourcePost",
    "generatedActivity", "lastModifiedAt", "notificationId", "decoratedSourcePost",
    "decoratedGeneratedActivity", "comment", "share", "owner", "account", "mentions", "reblog",
    "in_reply_to_id", "in_reply_to_account_id", "content", "quote", "state", "events", "platform",
    "kind", "occurred_at", "subject", "intent", "conversation_id", "in_reply_to", "entry",
    "changes", "messaging", "field", "value", "sender", "recipient", "time", "mid", "comment_id",
    "verb", "from", "post_id", "parent_id", "message", "timestamp", "reaction_type", "emoji",
    "created_time", "item_id", "recipient_id", "messages", "statuses", "contacts", "wa_id",
    "block_events", "mute_events", "user_event", "tweet_delete_events",
    "direct_message_indicate_typing_events",
]
# fmt: on

VALUES = [
    "message_create", "event_callback", "url_verification", "status.created", "status.updated",
    "COMMENT", "LIKE", "SHARE", "SHARE_MENTION", "ADMIN_COMMENT", "COMMENT_DELETE", "message",
    "reaction_added", "app_mention", "im", "channel", "thread_broadcast", "message_changed",
    "follow", "unfollow", "email", "meeting", "note", "page", "instagram", "feed", "comment",
    "add", "remove", "edited", "react", "like", "accepted", "1516403560557", "1360782804.083113",
    "1482960000.000010", "2023-03-10T11:59:58.123Z", "Mon Mar 26 16:33:26 +0000 2018",
    "Mon Mar 26 16:33:26 +9999 2018", "urn:li:share:6762088049394880512", "D024BE91L",
    "<@U0OWNED01> can you help?", "", "0", "-1", "1e400", "nan", "9" * 40, *OWNED_IDS,
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
shaped_values = st.recursive(
    scalars | st.sampled_from(VALUES),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(FIELDS), children, max_size=8)
    ),
    max_leaves=40,
)
shaped_bodies = st.dictionaries(st.sampled_from(FIELDS), shaped_values, min_size=1, max_size=8)

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def check(source: str, body: bytes) -> None:
    envelope = RawEnvelope(
        workspace="acme", source=source, received_at=datetime(2026, 1, 1, tzinfo=UTC), body=body
    )
    try:
        result = ADAPTERS[source](WORKSPACE, envelope)
    except RejectedPayload as exc:
        assert isinstance(exc.reason, str) and exc.reason
        return
    assert isinstance(result, AdapterResult)
    for event in result.events:
        assert isinstance(event, Interaction)
        assert event.occurred_at.tzinfo is not None
        assert isinstance(event.actor.user_id, str)


SOURCES = sorted(ADAPTERS)


@pytest.mark.parametrize("source", SOURCES)
@FUZZ
@given(body=st.binary(max_size=512))
def test_arbitrary_bytes(source: str, body: bytes) -> None:
    check(source, body)


@pytest.mark.parametrize("source", SOURCES)
@FUZZ
@given(value=json_values)
def test_arbitrary_json(source: str, value: Any) -> None:
    check(source, json.dumps(value).encode())


@pytest.mark.parametrize("source", SOURCES)
@FUZZ
@given(value=shaped_bodies)
def test_json_shaped_like_platform_bodies(source: str, value: dict[str, Any]) -> None:
    check(source, json.dumps(value).encode())


FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks"
FIXTURE_DIRS = {"x": "x_account_activity", "slack": "slack_docs", "meta": "meta_restfb"}


def _seeds(source: str) -> list[Any]:
    folder = FIXTURES / FIXTURE_DIRS.get(source, "-")
    seeds = []
    for path in sorted(folder.rglob("*.json")):
        try:
            seeds.append(json.loads(path.read_bytes()))
        except ValueError:
            continue
    return seeds


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += _paths(child, (*prefix, index))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    value = copy.deepcopy(value)
    node = value
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = new
    return value


SEEDED = [source for source in SOURCES if _seeds(source)]


@pytest.mark.parametrize("source", SEEDED)
@FUZZ
@given(data=st.data())
def test_mutated_fixture_bodies(source: str, data: st.DataObject) -> None:
    body = data.draw(st.sampled_from(_seeds(source)), label="seed")
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from(_paths(body)), label="path")
        body = _replace(body, path, data.draw(shaped_values | json_values, label="value"))
    check(source, json.dumps(body).encode())
