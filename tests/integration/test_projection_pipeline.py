"""Projections through the real broker and Faust: identity links, several workers, routing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from events.ids import event_id
from events.models import Direction, Identity, Interaction, Kind
from projections.store import WorkerQueryClient
from rapport.demo import deliveries, post_signed, read_collegemsg
from rapport.process import free_port, read_pid, spawn, stop_pid_file
from rapport.settings import Settings
from rapport.stack import settings_env
from streams.eventlog import append_events
from tests.services import services_running

pytestmark = pytest.mark.integration

SECRET = "s"
WORKSPACES = f"""
[workspaces.acme]
accounts = [
  {{ platform = "x", user_id = "1", member = "brand" }},
  {{ platform = "email", user_id = "sam@acme.example", member = "sam" }},
]
[workspaces.acme.secrets]
x_consumer_secret = "{SECRET}"

[workspaces.college]
accounts = [
  {{ platform = "x", user_id = "323", member = "brand" }},
  {{ platform = "x", user_id = "9", member = "advocate-9" }},
  {{ platform = "x", user_id = "12", member = "advocate-12" }},
]
[workspaces.college.secrets]
x_consumer_secret = "{SECRET}"
"""
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, body.decode(errors="replace")  # e.g. 503 while a rebalance runs
    except (urllib.error.URLError, OSError):
        return 0, None  # not listening (yet)


def eventually(probe: Callable[[], Any], want: Callable[[Any], bool], timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = probe()
        if want(value):
            return value
        time.sleep(0.5)
    return value


def dm(n: int, sender: Identity, recipient: Identity, at: datetime, inbound: bool) -> Interaction:
    contact, account = (sender, recipient) if inbound else (recipient, sender)
    return Interaction(
        event_id=event_id("acme", sender.platform, f"m:{n}"),
        workspace="acme",
        platform=sender.platform,
        kind=Kind.EMAIL if sender.platform == "email" else Kind.MESSAGE,
        actor=sender,
        subject=recipient,
        direction=Direction.INBOUND if inbound else Direction.OUTBOUND,
        contact=contact,
        account=account,
        member="sam" if sender.platform == "email" or recipient.platform == "email" else "brand",
        occurred_at=at,
        received_at=at,
        object_id=str(n),
    )


@pytest.fixture
def stack(isolated_settings: Settings) -> Iterator[Settings]:
    with services_running(isolated_settings, WORKSPACES) as settings:
        yield settings


def test_identity_link_moves_new_interactions_to_the_linked_contact(stack: Settings) -> None:
    settings = stack
    brand, ann_x = Identity(platform="x", user_id="1"), Identity(platform="x", user_id="100")
    sam = Identity(platform="email", user_id="sam@acme.example")
    ann_mail = Identity(platform="email", user_id="ann@example.com")
    append_events(
        settings,
        [
            dm(1, ann_x, brand, T0, inbound=True),
            dm(2, brand, ann_x, T0 + timedelta(hours=2), inbound=False),
        ],
    )
    url = f"{settings.worker_url}/relationships/acme/x:100"
    first = eventually(lambda: get_json(url), lambda r: r[0] == 200 and r[1]["interactions"] == 2)
    assert first[1]["our_replies"] == 1 and first[1]["our_latency_p50_s"] == 7200.0

    cli = subprocess.run(
        [sys.executable, "-m", "rapport", "identities", "link", "email:ann@example.com", "x:100",
         "--workspace", "acme"],
        capture_output=True, text=True, env=settings_env(settings), timeout=60, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    append_events(settings, [dm(3, ann_mail, sam, T0 + timedelta(days=1), inbound=True)])

    merged = eventually(lambda: get_json(url), lambda r: r[0] == 200 and r[1]["interactions"] == 3)
    row = merged[1]
    assert row["platforms"] == ["email", "x"] and row["members"] == ["brand", "sam"]
    assert row["platform_moves"] == 1  # x -> email within 7 days
    assert row["awaiting_reply_since"] == int((T0 + timedelta(days=1)).timestamp() * 1000)
    assert get_json(f"{settings.worker_url}/relationships/acme/email:ann@example.com")[0] == 404

    reader = WorkerQueryClient(settings.worker_url)
    rows = eventually(
        lambda: (
            reader.query(
                "SELECT contact_id, interactions FROM rapport.relationships FINAL "
                "WHERE workspace = 'acme'"
            ).rows
        ),
        lambda r: ("x:100", 3) in r,
    )
    assert rows == [("x:100", 3)]
    contacts = reader.query(
        "SELECT DISTINCT contact_id FROM rapport.interactions WHERE workspace = 'acme'"
    ).rows
    assert contacts == [("x:100",)]


def _second_worker(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "home": tmp_path / "home2",
            "worker_port": free_port(),
            "clickhouse_url": f"chdb://{tmp_path / 'clickhouse2'}",
        }
    )


def test_two_workers_split_the_work_and_route_queries(stack: Settings, tmp_path: Path) -> None:
    settings = stack
    other = _second_worker(settings, tmp_path)
    pid_file = other.run_dir / "worker.pid"
    spawn(
        [sys.executable, "-m", "rapport", "worker"],
        log_file=other.log_dir / "worker.log",
        pid_file=pid_file,
        env=settings_env(other),
    )
    try:
        assert eventually(lambda: get_json(f"{other.worker_url}/healthz")[0], lambda s: s == 200)
        time.sleep(5)  # let the group rebalance onto both workers before data flows
        owned = {"323", "9", "12"}
        messages = [m for m in read_collegemsg() if m.sender in owned or m.recipient in owned]
        messages = messages[:800]
        bodies = [b for _, b in deliveries(messages, owned)]
        url = f"{settings.ingest_url}/webhooks/college/x"
        assert asyncio.run(post_signed(url, bodies, SECRET)).statuses == {200: len(bodies)}

        contacts: dict[str, int] = {}
        for m in messages:
            if (m.sender in owned) != (m.recipient in owned):
                cid = f"x:{m.recipient if m.sender in owned else m.sender}"
                contacts[cid] = contacts.get(cid, 0) + 1
        readers = [WorkerQueryClient(s.worker_url) for s in (settings, other)]

        def totals() -> list[int]:
            sql = "SELECT toInt64(sum(interactions)) FROM rapport.relationships FINAL"
            return [int(r.query(sql).rows[0][0] or 0) for r in readers]

        split = eventually(totals, lambda t: sum(t) == sum(contacts.values()), timeout_s=120)
        assert sum(split) == sum(contacts.values())
        assert all(part > 0 for part in split), f"one worker did all the work: {split}"

        for cid, count in list(contacts.items())[:40]:
            answers = [
                get_json(f"{s.worker_url}/relationships/college/{cid}") for s in (settings, other)
            ]
            assert answers[0] == answers[1]
            status, row = answers[0]
            assert status == 200 and row["interactions"] == count and row["contact_id"] == cid
    finally:
        stop_pid_file(pid_file, timeout_s=60)
        assert read_pid(pid_file) is None
