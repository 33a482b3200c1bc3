"""Real data through the real pipeline, every relationship equal to the independent oracle.

CollegeMsg (59,835 messages) enters through the event log (the import path); a real Reddit
thread enters through the signed generic webhook. Expected values come from tests/oracle.py, a
short literal implementation of docs/metrics.md that never looks at the reducers.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from projections.readmodel import relationships
from projections.store import WorkerQueryClient
from rapport.settings import Settings
from streams.eventlog import append_events
from streams.webhooks import generic
from tests.conftest import FIXTURES
from tests.datasets import (
    collegemsg_interactions,
    most_replied_authors,
    reddit_generic_bodies,
    reddit_interactions,
)
from tests.oracle import compare, expected_relationships
from tests.services import services_running

pytestmark = pytest.mark.integration

COLLEGE_OWNED = {"323", "9", "12"}
THREAD = FIXTURES / "reddit" / "TestCommentForest.test_replace__all_large.comments.jsonl"
SECRET = "whsec_" + "cmVhbC1kYXRhLXNlY3JldC1rZXktMzItYnl0ZXMhIQ=="


def workspaces_toml(reddit_owned: list[str]) -> str:
    college = ", ".join(
        f'{{ platform = "x", user_id = "{u}", member = "m{u}" }}' for u in sorted(COLLEGE_OWNED)
    )
    reddit = ", ".join(
        f'{{ platform = "reddit", user_id = "{u}", member = "m{u}" }}' for u in reddit_owned
    )
    return (
        f"[workspaces.college]\naccounts = [{college}]\n\n"
        f"[workspaces.reddit]\naccounts = [{reddit}]\n"
        f'[workspaces.reddit.secrets]\ngeneric_secret = "{SECRET}"\n'
    )


def as_oracle_row(row: dict[str, Any]) -> dict[str, Any]:
    """A read-model row (ISO times) in the oracle's shape (epoch milliseconds)."""

    def ms(value: str | None) -> int | None:
        return None if value is None else round(datetime.fromisoformat(value).timestamp() * 1000)

    out = dict(row)
    for name in ("first_contact_at", "last_contact_at", "last_inbound_at", "last_outbound_at",
                 "awaiting_reply_since", "strength_at", "touch_due_at"):  # fmt: skip
        out[name] = ms(row[name])
    out["qualified_at"] = [ms(v) for v in row["qualified_at"]]
    return out


async def post_generic(url: str, bodies: list[bytes]) -> dict[int, int]:
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession() as session:
        for n, body in enumerate(bodies):
            msg_id, timestamp = f"msg_{n}", str(int(time.time()))
            headers = {
                "content-type": "application/json",
                generic.ID_HEADER: msg_id,
                generic.TIMESTAMP_HEADER: timestamp,
                generic.SIGNATURE_HEADER: generic.sign(SECRET, msg_id, timestamp, body),
            }
            async with session.post(url, data=body, headers=headers) as response:
                statuses[response.status] = statuses.get(response.status, 0) + 1
    return statuses


@pytest.fixture
def stack(isolated_settings: Settings) -> Iterator[Settings]:
    # 1 MB of decoded states for hundreds of relationships (thousands of touches): most batches
    # fold states the worker dropped and reads back from its table, and the result must still
    # be exact.
    settings = isolated_settings.model_copy(update={"worker_live_states_mb": 1})
    with services_running(settings, workspaces_toml(most_replied_authors(THREAD, 3))) as running:
        yield running


def settled(reader: WorkerQueryClient, workspace: str, expected: dict[str, dict[str, Any]]) -> None:
    want = (len(expected), sum(r["interactions"] for r in expected.values()))
    sql = (
        "SELECT count(), toInt64(sum(interactions)) FROM rapport.relationships FINAL "
        "WHERE workspace = {w:String}"
    )
    deadline = time.monotonic() + 240
    have: tuple[int, int] = (0, 0)
    while time.monotonic() < deadline:
        count, total = reader.query(sql, {"w": workspace}).rows[0]
        have = (int(count), int(total or 0))
        if have == want:
            return
        time.sleep(1)
    raise AssertionError(f"{workspace}: relationships/interactions {have}, expected {want}")


def test_collegemsg_and_reddit_match_the_oracle_for_every_relationship(
    stack: Settings, tmp_path: Path
) -> None:
    settings = stack
    college = collegemsg_interactions(COLLEGE_OWNED, workspace="college")
    assert len(college) == 59_835
    append_events(settings, college)

    owned = set(most_replied_authors(THREAD, 3))
    bodies = reddit_generic_bodies(THREAD, owned)
    url = f"{settings.ingest_url}/webhooks/reddit/generic"
    assert asyncio.run(post_generic(url, bodies)) == {200: len(bodies)}
    reddit = reddit_interactions(THREAD, owned, object_key_prefix="generic:")

    reader = WorkerQueryClient(settings.worker_url, timeout_s=60)
    for workspace, events in (("college", college), ("reddit", reddit)):
        expected = {k.split("|", 1)[1]: v for k, v in expected_relationships(events).items()}
        assert len(expected) > 50
        settled(reader, workspace, expected)
        actual = {r["contact_id"]: as_oracle_row(r) for r in relationships(reader, workspace)}
        assert compare(actual, expected) == [], workspace
    with urllib.request.urlopen(f"{settings.worker_url}/healthz", timeout=30) as response:
        health = json.loads(response.read())
    held = health["live_states"]
    assert held["dropped"] > 0, held  # the bound was reached and states were read back
    assert held["bytes"] <= 1024 * 1024 or held["states"] == 1, held
    assert health["rocksdb"]["memtables"] > 0, health  # RocksDB's own count of what it holds
