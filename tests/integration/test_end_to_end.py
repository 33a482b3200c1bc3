"""A signed webhook reaches ClickHouse through the real broker and the Faust worker.

Expected values are computed straight from the CollegeMsg file with a few obvious lines, then
compared with what `rapport relationships` prints while the stack runs.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from projections.store import WorkerQueryClient
from rapport.demo import Message, deliveries, post_signed, read_collegemsg, x_dm_delivery
from rapport.settings import Settings
from rapport.stack import settings_env
from streams.webhooks.x import SIGNATURE_HEADER, crc_response, signature
from tests.services import services_running

pytestmark = pytest.mark.integration

SECRET = "college-secret"
OWNED = {"323", "9", "12"}
WORKSPACES = f"""
[workspaces.college]
accounts = [
  {{ platform = "x", user_id = "323", member = "brand" }},
  {{ platform = "x", user_id = 9, member = "advocate-9" }},
  {{ platform = "x", user_id = "12", member = "advocate-12" }},
]
[workspaces.college.secrets]
x_consumer_secret = ["{SECRET}"]

[workspaces.other]
accounts = [{{ platform = "x", user_id = "1", member = "brand" }}]
[workspaces.other.secrets]
x_consumer_secret = "env:RAPPORT_TEST_OTHER_SECRET"
"""


def iso(seconds: int) -> str:
    return (
        datetime.fromtimestamp(seconds, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def expected_relationships(messages: list[Message]) -> dict[str, dict[str, Any]]:
    """The SPEC's contact times, straight from the raw rows (owned <-> student only)."""
    out: dict[str, dict[str, Any]] = {}
    for m in messages:
        sender_owned, recipient_owned = m.sender in OWNED, m.recipient in OWNED
        if sender_owned == recipient_owned:
            continue  # internal (or not ours): no relationship
        contact = m.recipient if sender_owned else m.sender
        r = out.setdefault(f"x:{contact}", {"times": [], "in": [], "out": []})
        r["times"].append(m.at_s)
        r["out" if sender_owned else "in"].append(m.at_s)
    return {
        cid: {
            "workspace": "college",
            "contact_id": cid,
            "first_contact_at": iso(min(r["times"])),
            "last_contact_at": iso(max(r["times"])),
            "last_inbound_at": iso(max(r["in"])) if r["in"] else None,
            "last_outbound_at": iso(max(r["out"])) if r["out"] else None,
            "last_platform": "x",
            "interactions": len(r["times"]),
        }
        for cid, r in out.items()
    }


def raw_record_count(settings: Settings) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        parts = [TopicPartition(settings.topic_raw, p) for p in range(settings.partitions)]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def wait_for(reader: WorkerQueryClient, sql: str, want: int, timeout_s: float = 120.0) -> int:
    deadline = time.monotonic() + timeout_s
    have = -1
    while time.monotonic() < deadline:
        have = int(reader.query(sql).rows[0][0])
        if have >= want:
            return have
        time.sleep(0.5)
    return have


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def running(isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("RAPPORT_TEST_OTHER_SECRET", "other-secret")
    with services_running(isolated_settings, WORKSPACES) as settings:
        yield settings


def test_signed_webhooks_reach_clickhouse(running: Settings) -> None:
    settings = running
    url = f"{settings.ingest_url}/webhooks/college/x"

    # The CRC handshake answers with the HMAC of the token.
    status, body = http("GET", f"{url}?crc_token=abc123")
    assert status == 200
    assert json.loads(body) == {"response_token": crc_response(SECRET, "abc123")}

    # Bad signatures are refused and nothing reaches Kafka.
    message = Message(1, "323", "777", 1082040961)
    good = x_dm_delivery(message, "323")
    wrong = {
        "content-type": "application/json",
        SIGNATURE_HEADER: signature("not-the-secret", good),
    }
    assert http("POST", url, good, wrong)[0] == 401
    assert http("POST", url, good, {"content-type": "application/json"})[0] == 401
    other_url = f"{settings.ingest_url}/webhooks/other/x"
    signed = {"content-type": "application/json", SIGNATURE_HEADER: signature(SECRET, good)}
    assert http("POST", other_url, good, signed)[0] == 401  # college's secret, other's URL
    assert raw_record_count(settings) == 0

    # Real CollegeMsg messages, each delivered once per owned party, plus redeliveries.
    messages = [m for m in read_collegemsg() if m.sender in OWNED or m.recipient in OWNED][:1500]
    batch = deliveries(messages, OWNED)
    bodies = [b for _, b in batch] + [b for _, b in batch[:100]]
    result = asyncio.run(post_signed(url, bodies, SECRET, concurrency=16))
    assert result.statuses == {200: len(bodies)}
    assert raw_record_count(settings) == len(bodies)

    # An authentic body no adapter can read goes to the dead-letter table, not nowhere.
    poison = b'{"for_user_id": "323", "direct_message_events": "not a list"}'
    poison_headers = {
        "content-type": "application/json",
        SIGNATURE_HEADER: signature(SECRET, poison),
    }
    assert http("POST", url, poison, poison_headers)[0] == 200

    expected = expected_relationships(messages)
    reader = WorkerQueryClient(settings.worker_url)
    db = settings.clickhouse_database
    assert wait_for(
        reader, f"SELECT uniqExact(event_id) FROM {db}.interactions", len(messages)
    ) == len(messages)
    assert wait_for(reader, f"SELECT count() FROM {db}.relationships FINAL", len(expected)) == len(
        expected
    )
    assert wait_for(reader, f"SELECT count() FROM {db}.dead_letters", 1) == 1
    reason = reader.query(f"SELECT reason FROM {db}.dead_letters").rows[0][0]
    assert "direct_message_events must be a list" in reason

    # Redeliveries and per-owned-account copies collapsed: one event per message.
    per_message = reader.query(
        f"SELECT object_id, count() c FROM {db}.interactions FINAL GROUP BY object_id HAVING c > 1"
    )
    assert per_message.rows == []

    # Wait until the last relationship revision landed, then read through the CLI.
    want_total = sum(r["interactions"] for r in expected.values())
    assert (
        wait_for(reader, f"SELECT sum(interactions) FROM {db}.relationships FINAL", want_total)
        == want_total
    )
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "rapport",
            "relationships",
            "--workspace",
            "college",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=settings_env(settings),
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    printed = {row["contact_id"]: row for row in json.loads(cli.stdout)}
    assert {cid: {k: row[k] for k in expected[cid]} for cid, row in printed.items()} == expected


def test_kafka_down_answers_503(isolated_settings: Settings, tmp_path: Path) -> None:
    """With no broker at the configured address the ingest answers 503 and keeps nothing."""
    from aiohttp.test_utils import TestClient, TestServer

    from rapport.process import free_port
    from rapport.workspaces import WorkspaceRegistry
    from streams.ingest import create_ingest_app

    settings = isolated_settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "produce_timeout_s": 1.0}
    )
    registry = WorkspaceRegistry.from_mapping(
        {"workspaces": {"college": {"secrets": {"x_consumer_secret": SECRET}}}}
    )
    body = x_dm_delivery(Message(1, "323", "777", 1082040961), "323")

    async def scenario() -> tuple[int, dict[str, Any], int]:
        client = TestClient(TestServer(create_ingest_app(settings, registry)))
        await client.start_server()
        try:
            response = await client.post(
                "/webhooks/college/x",
                data=body,
                headers={
                    "content-type": "application/json",
                    SIGNATURE_HEADER: signature(SECRET, body),
                },
            )
            ready = await client.get("/readyz")
            return response.status, await response.json(), ready.status
        finally:
            await client.close()

    status, payload, ready = asyncio.run(scenario())
    assert status == 503
    assert "retry" in payload["error"]
    assert ready == 503
