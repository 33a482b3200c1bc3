"""Backfill formats: ids, directions and intents exactly as the adapters give them."""

from __future__ import annotations

import json
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from events.adapters import normalize
from events.envelope import RawEnvelope
from events.ids import event_id
from events.imports import (
    Problem,
    UnreadableFile,
    csv_events,
    csv_text,
    events_from_file,
    ndjson_events,
    x_archive_events,
    x_archive_size,
)
from events.models import Interaction, dump_event
from rapport.workspaces import WorkspaceConfig
from tests.conftest import FIXTURES
from tests.datasets import collegemsg_rows

ACME = WorkspaceConfig(
    name="acme",
    accounts=(
        {"platform": "x", "user_id": "783214", "member": "brand"},
        {"platform": "email", "user_id": "sam@acme.example", "member": "sam"},
    ),
)
ARCHIVE = FIXTURES / "x_archive"
AT = datetime(2024, 5, 2, 12, 0, tzinfo=UTC)


def generic(body: list[dict[str, object]]) -> list[Interaction]:
    envelope = RawEnvelope(
        workspace="acme", source="generic", received_at=AT, body=json.dumps(body).encode()
    )
    return [e for e in normalize(ACME, envelope).events if isinstance(e, Interaction)]


ITEMS = [
    {
        "id": "msg-1",
        "platform": "email",
        "kind": "email",
        "occurred_at": "2024-05-02T09:15:00Z",
        "actor": "jo@client.example",
        "subject": "sam@acme.example",
        "conversation_id": "thread-77",
        "text": "Could you send the contract draft?",
    },
    {
        "id": "cal-991",
        "platform": "email",
        "kind": "meeting",
        "occurred_at": 1714640400,
        "actor": "sam@acme.example",
        "subject": "jo@client.example",
    },
]


def test_ndjson_generic_items_become_what_the_generic_webhook_makes() -> None:
    problems: list[Problem] = []
    lines = [json.dumps(item).encode() for item in ITEMS]
    got = list(ndjson_events(ACME, lines, problems, received_at=AT))
    assert problems == []
    assert [dump_event(e) for e in got] == [dump_event(e) for e in generic(ITEMS)]
    assert [e.direction.value for e in got if isinstance(e, Interaction)] == [
        "inbound",
        "outbound",
    ]


def test_ndjson_canonical_events_are_kept_and_bad_lines_reported() -> None:
    canonical = generic(ITEMS)
    lines = [
        dump_event(canonical[0]),
        b"",
        b"{not json",
        json.dumps({**json.loads(dump_event(canonical[1])), "workspace": "other"}).encode(),
        json.dumps({"id": "x", "platform": "email", "kind": "gossip"}).encode(),
        dump_event(canonical[1]),
    ]
    problems: list[Problem] = []
    got = list(ndjson_events(ACME, lines, problems, received_at=AT))
    assert got == [canonical[0], canonical[1]]
    assert [p.where for p in problems] == ["line 3", "line 4", "line 5"]
    assert "workspace 'other'" in problems[1].reason


BAD = {"platform": "email", "occurred_at": "1", "actor_id": "a", "subject_id": "b", "kind": "email"}


def test_csv_rows_are_generic_items_with_the_same_ids() -> None:
    rows = [
        {
            "platform": "email",
            "object_id": "msg-1",
            "occurred_at": "2024-05-02T09:15:00Z",
            "actor_id": "jo@client.example",
            "subject_id": "sam@acme.example",
            "kind": "email",
            "conversation_id": "thread-77",
            "text": "Could you send the contract draft?",
        },
        {
            "platform": "email",
            "object_id": "cal-991",
            "occurred_at": "1714640400",
            "actor_id": "sam@acme.example",
            "subject_id": "jo@client.example",
            "kind": "meeting",
        },
        {**BAD, "object_id": "bad", "occurred_at": "yesterday"},
        {**BAD, "object_id": "bad2", "kind": "telepathy"},
    ]
    problems: list[Problem] = []
    got = list(csv_events(ACME, csv_text(rows).splitlines(True), problems, received_at=AT))
    assert [dump_event(e) for e in got] == [dump_event(e) for e in generic(ITEMS)]
    assert [p.where for p in problems] == ["row 4", "row 5"]
    assert "telepathy" in problems[1].reason


def test_csv_without_the_required_columns_is_refused() -> None:
    with pytest.raises(UnreadableFile, match="subject_id"):
        csv_events(ACME, ["platform,object_id,occurred_at,actor_id,kind\n"], [])


def test_csv_of_collegemsg_reimports_to_the_same_ids(tmp_path: Path) -> None:
    data = collegemsg_rows(2000)
    both = sorted({a for a, _, _ in data} & {b for _, b, _ in data})[0]
    owned = WorkspaceConfig(
        name="college", accounts=({"platform": "x", "user_id": both, "member": "brand"},)
    )
    rows = [
        {"platform": "x", "object_id": str(n), "occurred_at": str(ts), "actor_id": a,
         "subject_id": b, "kind": "message"}
        for n, (a, b, ts) in enumerate(data, start=1)
    ]  # fmt: skip
    path = tmp_path / "college.csv"
    path.write_text(csv_text(rows))
    first = list(events_from_file(owned, path, "csv", []))
    again = list(events_from_file(owned, path, "csv", []))
    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert first[0].event_id == event_id("college", "x", "generic:1")
    assert {e.direction.value for e in first if isinstance(e, Interaction)} >= {
        "inbound",
        "outbound",
        "external",
    }


def test_x_archive_dms_and_tweets_use_the_x_adapter_keys(tmp_path: Path) -> None:
    problems: list[Problem] = []
    got = [e for e in x_archive_events(ACME, ARCHIVE, problems, AT) if isinstance(e, Interaction)]
    assert problems == []
    by_object = {e.object_id: e for e in got}
    reply = by_object["1612800000000000001"]
    assert (reply.kind.value, reply.direction.value, reply.contact and reply.contact.key) == (
        "reply",
        "outbound",
        "x:2244994945",
    )
    assert reply.event_id == event_id("acme", "x", "tweet:1612800000000000001")
    assert reply.intent.value == "thanks"
    share = by_object["1613100000000000002"]
    assert (share.kind.value, share.contact and share.contact.key) == ("share", "x:17874544")
    mention = by_object["1613500000000000003"]
    assert (mention.kind.value, mention.intent.value) == ("mention", "ask")
    assert "1613900000000000004" not in by_object  # own tweet, no one else
    assert "1613900000000000005" not in by_object  # a reply to itself
    dm_in = by_object["1612800000000000009"]
    assert (dm_in.direction.value, dm_in.kind.value) == ("inbound", "message")
    assert dm_in.event_id == event_id("acme", "x", "dm:1612800000000000009")
    assert dm_in.occurred_at == datetime(2023, 1, 10, 20, 41, 10, 512000, tzinfo=UTC)
    assert by_object["1612900000000000010"].direction.value == "outbound"
    assert len(got) == 6
    assert x_archive_size(ARCHIVE) == 9

    # The same archive zipped, as X hands it out.
    packed = tmp_path / "twitter-2023-01-14.zip"
    with zipfile.ZipFile(packed, "w") as zf:
        for path in ARCHIVE.rglob("*.js"):
            zf.write(path, str(path.relative_to(ARCHIVE)))
    zipped = [e for e in x_archive_events(ACME, packed, [], AT) if isinstance(e, Interaction)]
    assert [dump_event(e) for e in zipped] == [dump_event(e) for e in got]


def test_x_archive_of_an_account_the_workspace_does_not_own_is_refused(tmp_path: Path) -> None:
    other = WorkspaceConfig(name="other", accounts=({"platform": "x", "user_id": "1"},))
    copy = tmp_path / "archive"
    shutil.copytree(ARCHIVE, copy)
    with pytest.raises(UnreadableFile, match="783214"):
        list(x_archive_events(other, copy, []))
