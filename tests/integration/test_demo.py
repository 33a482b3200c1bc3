"""`rapport demo` on a running stack: the CollegeMsg DMs posted as signed X webhooks end as the
exact relationships of docs/metrics.md, even though the demo sends months of messages in seconds.

The workspace's lateness is 0 days here, so any event the live worker reads after a newer one
of its relationship is late (counted, its waits left out); the demo then replays the log into
version 2 and swaps, and every relationship equals the oracle of the same deliveries.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from events.adapters import normalize
from events.envelope import RawEnvelope
from events.models import Interaction
from projections.store import WorkerQueryClient
from rapport.demo import DEMO_WORKSPACES, deliveries, read_collegemsg
from rapport.settings import Settings
from rapport.stack import Stack, settings_env
from rapport.workspaces import WorkspaceRegistry
from tests.integration.test_replay import oracle, wait_rows
from tests.oracle import compare
from tests.services import services_running

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(isolated_settings: Settings) -> Iterator[Settings]:
    """The demo's own workspace file with a lateness of 0 days, and a running stack."""
    text = DEMO_WORKSPACES.read_text().replace(
        "[workspaces.college.secrets]", "[workspaces.college.policy]\nlateness_days = 0\n\n"
        "[workspaces.college.secrets]"
    )  # fmt: skip
    assert "lateness_days = 0" in text
    with services_running(isolated_settings, text) as settings:
        yield settings


def test_demo_ends_with_the_exact_relationships(stack: Settings) -> None:
    settings = stack
    config = WorkspaceRegistry.load(settings.workspaces).get("college")
    assert config is not None
    owned = {a.user_id for a in config.accounts}
    now = datetime.now(UTC)
    events = {
        e.event_id: e
        for _, body in deliveries(read_collegemsg(), owned)
        for e in normalize(
            config, RawEnvelope(workspace="college", source="x", received_at=now, body=body)
        ).events
        if isinstance(e, Interaction)
    }
    expected = oracle(list(events.values()))
    assert len(expected) > 400

    done = subprocess.run(
        [sys.executable, "-m", "rapport", "demo", "--workspaces", str(settings.workspaces)],
        capture_output=True,
        text=True,
        env={**settings_env(settings), "COLUMNS": "200"},
        timeout=600,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "0-day lateness window had closed" in out, out
    assert "version 2 is active (was 1)" in out, out
    assert f"{len(events)} interactions from" in out
    assert Stack(settings).worker_running()  # it ran before the demo, so it still does

    reader = WorkerQueryClient(settings.worker_url, timeout_s=60)
    live = wait_rows(reader, "relationships", "college", expected)
    assert compare(live, expected) == []
    assert {r["late_events"] for r in live.values()} == {0}
