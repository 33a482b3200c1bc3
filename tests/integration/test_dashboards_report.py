"""Dashboards, the HTML report and `rapport relationships` on real data through the real stack.

Real CollegeMsg DMs are posted as signed X webhooks to the ingest, flow through Kafka and the
worker into the embedded engine; then every panel of every Grafana dashboard runs with its
macros expanded as the plugin does, the report is rendered (while the stack runs, through the
worker; and stopped, on the embedded engine) and photographed by headless Chromium.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from projections.dashboards import (
    ALL,
    TimeRange,
    column_kinds,
    data_extent,
    load_dashboards,
    resolve_variables,
    run_dashboard,
    run_panel,
)
from projections.readmodel import RELATIONSHIP_FIELDS
from projections.store import WorkerQueryClient
from rapport.demo import deliveries, post_signed, read_collegemsg
from rapport.process import free_port
from rapport.settings import Settings
from rapport.stack import Stack, settings_env
from streams.webhooks.x import SIGNATURE_HEADER, signature

pytestmark = pytest.mark.integration

SECRET = "college-secret"
OWNED = {"323", "9", "12"}
MESSAGES = 1200
WORKSPACES = f"""
[workspaces.college]
accounts = [
  {{ platform = "x", user_id = "323", member = "brand" }},
  {{ platform = "x", user_id = "9", member = "advocate-9" }},
  {{ platform = "x", user_id = "12", member = "advocate-12" }},
]
[workspaces.college.secrets]
x_consumer_secret = "{SECRET}"
"""

# Columns each panel answers with, in order; time series start with their time column.
EXPECTED: dict[tuple[str, str], tuple[str, ...]] = {
    ("rapport-overview", "Active relationships"): ("active_relationships",),
    ("rapport-overview", "Interactions"): ("interactions",),
    ("rapport-overview", "Qualified conversations"): ("qualified_conversations",),
    ("rapport-overview", "Awaiting our reply"): ("awaiting_reply",),
    ("rapport-overview", "Qualified conversations per week"): ("time", "qualified_conversations"),
    ("rapport-overview", "Interactions per day"): ("time", "inbound", "outbound"),
    ("rapport-overview", "Our response time (p50, p90)"): ("time", "p50", "p90"),
    ("rapport-overview", "Their response time (p50, p90)"): ("time", "p50", "p90"),
    ("rapport-overview", "Give and take per week"): (
        "time", "we_give", "we_ask", "they_give", "they_ask",
    ),
    ("rapport-overview", "Reciprocity distribution"): ("bucket", "relationships"),
    ("rapport-overview", "Balance distribution"): ("bucket", "relationships"),
    ("rapport-overview", "Stages"): ("stage", "relationships"),
    ("rapport-overview", "Interactions by platform"): ("platform", "interactions"),
    ("rapport-relationship", "Numbers"): (
        "interactions", "our_replies", "our_latency_p50_s", "their_replies",
        "their_latency_p50_s", "reciprocity", "strength", "qualified_conversations",
    ),
    ("rapport-relationship", "Profile"): (
        "contact_id", "stage", "first_contact_at", "last_contact_at", "last_platform",
        "awaiting_reply_since", "touch_due_at", "typical_gap_days", "platforms", "members",
        "platform_moves",
    ),
    ("rapport-relationship", "Interactions over time"): ("time", "inbound", "outbound"),
    ("rapport-relationship", "Response times as of each day"): ("time", "ours_p50", "theirs_p50"),
    ("rapport-relationship", "Strength and balance"): ("time", "strength", "balance"),
    ("rapport-relationship", "Timeline"): (
        "occurred_at", "direction", "kind", "intent", "platform", "member", "conversation_id",
        "object_id",
    ),
    ("rapport-keep-in-touch", "Overdue"): ("overdue",),
    ("rapport-keep-in-touch", "Awaiting our reply"): ("awaiting_reply",),
    ("rapport-keep-in-touch", "Overdue and awaiting by stage"): (
        "stage", "overdue", "awaiting_reply",
    ),
    ("rapport-keep-in-touch", "Overdue relationships"): (
        "contact_id", "stage", "last_contact_at", "touch_due_at", "days_overdue",
        "typical_gap_days", "strength", "last_platform",
    ),
    ("rapport-team", "Outbound interactions per member"): ("time", "member", "outbound"),
    ("rapport-team", "Activity per member"): (
        "member", "outbound", "inbound", "contacts", "gives", "asks",
    ),
    ("rapport-team", "Relationships per member"): (
        "member", "relationships", "affinity_or_audience", "qualified_conversations",
        "median_reply_s",
    ),
    ("rapport-team", "Contacts reached per member"): ("member", "contacts"),
    ("rapport-pipeline", "Interactions landed"): ("time", "interactions"),
    ("rapport-pipeline", "Lag: received -> ClickHouse"): ("time", "p50", "p90", "max"),
    ("rapport-pipeline", "Freshness"): ("rows_in_range", "seconds_since_last_row"),
    ("rapport-pipeline", "Late events"): ("late_interactions", "relationships_to_replay"),
    ("rapport-pipeline", "Dead letters"): ("time", "dead_letters"),
    ("rapport-pipeline", "Recent dead letters"): (
        "failed_at", "workspace", "source", "reason", "raw_partition", "raw_offset",
    ),
    ("rapport-pipeline", "Schema migrations"): ("version", "name", "applied_at"),
}  # fmt: skip
# Two panels of Keep in touch share the title "Awaiting our reply": a stat and a table.
AWAITING_TABLE = (
    "contact_id", "awaiting_reply_since", "hours_waiting", "our_usual_reply_s", "stage",
    "last_platform",
)  # fmt: skip


def expected_columns(uid: str, title: str, panel_type: str) -> tuple[str, ...]:
    if uid == "rapport-keep-in-touch" and title == "Awaiting our reply" and panel_type == "table":
        return AWAITING_TABLE
    return EXPECTED[(uid, title)]


def rapport(
    settings: Settings, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rapport", *args],
        capture_output=True, text=True, env=settings_env(settings), timeout=timeout, check=False,
    )  # fmt: skip


def wait_for(reader: WorkerQueryClient, sql: str, want: int, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    have = -1
    while time.monotonic() < deadline:
        have = int(reader.query(sql).rows[0][0] or 0)
        if have >= want:
            return have
        time.sleep(0.5)
    return have


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
) -> Iterator[tuple[Settings, Stack]]:
    """The stack with real CollegeMsg DMs (and one dead letter) landed in ClickHouse."""
    root = tmp_path_factory.mktemp("dashboards")
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        home=root / "home", workspaces=root / "workspaces.toml", kafka_bootstrap=kafka_bootstrap,
        partitions=4, topic_raw=f"d{tag}.raw", topic_events=f"d{tag}.events",
        topic_relationship_events=f"d{tag}.relationship-events",
        topic_deadletters=f"d{tag}.deadletters",
        worker_id=f"rapport-test-{tag}", clickhouse_url=f"chdb://{root / 'clickhouse'}",
        ingest_port=free_port(), worker_port=free_port(), sink_flush_s=0.3,
    )  # fmt: skip
    settings.workspaces.write_text(WORKSPACES)
    services = Stack(settings)
    try:
        services.start_services()
        messages = [m for m in read_collegemsg() if m.sender in OWNED or m.recipient in OWNED]
        messages = messages[:MESSAGES]
        url = f"{settings.ingest_url}/webhooks/college/x"
        bodies = [b for _, b in deliveries(messages, OWNED)]
        assert asyncio.run(post_signed(url, bodies, SECRET, concurrency=16)).statuses == {
            200: len(bodies)
        }
        poison = b'{"for_user_id": "323", "direct_message_events": "not a list"}'
        headers = {"content-type": "application/json", SIGNATURE_HEADER: signature(SECRET, poison)}
        request = urllib.request.Request(url, poison, headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200

        with_contact = sum(1 for m in messages if (m.sender in OWNED) != (m.recipient in OWNED))
        reader = WorkerQueryClient(settings.worker_url)
        db = settings.clickhouse_database
        assert wait_for(reader, f"SELECT uniqExact(event_id) FROM {db}.interactions", MESSAGES) == (
            MESSAGES
        )
        total = f"SELECT toInt64(sum(interactions)) FROM {db}.relationships FINAL"
        assert wait_for(reader, total, with_contact) == with_contact
        assert wait_for(reader, f"SELECT count() FROM {db}.dead_letters", 1) == 1
        assert wait_for(reader, f"SELECT count() FROM {db}.relationships_daily", 1) >= 1
        yield settings, services
    finally:
        services.stop_services()


def test_every_panel_of_every_dashboard_answers_with_its_columns(
    stack: tuple[Settings, Stack],
) -> None:
    settings, _ = stack
    reader = WorkerQueryClient(settings.worker_url)  # the worker owns the embedded engine
    extent = data_extent(reader, "college")
    assert extent is not None
    now = datetime.now(UTC)
    recent = TimeRange(now - timedelta(hours=1), now + timedelta(minutes=5))
    dashboards = load_dashboards()
    seen = set()
    for dashboard in dashboards:
        live = dashboard.uid == "rapport-pipeline"
        given: dict[str, Any] = {"workspace": ["college"] if live else "college"}
        context, results = run_dashboard(reader, dashboard, recent if live else extent, given)
        assert len(results) == len(dashboard.panels)
        for item in results:
            panel, result = item.panel, item.result
            want = expected_columns(dashboard.uid, panel.title, panel.type)
            label = f"{dashboard.uid} / {panel.title}"
            assert result.columns == want, label
            assert result.rows, f"{label} returned no rows:\n{item.sql}"
            assert "$__" not in item.sql and "${" not in item.sql, label
            kinds = column_kinds(result)
            if panel.type == "timeseries":
                assert kinds[0] == "time", label
                assert "number" in kinds[1:], label
            if panel.type in ("stat", "barchart"):
                assert "number" in kinds, label
            seen.add((dashboard.uid, panel.title))
        if dashboard.uid == "rapport-relationship":
            assert context.selection["contact"] == context.options["contact"][0]
    assert seen == set(EXPECTED)

    # Variables set to specific values rather than All: the conditionalAll conditions apply.
    team = next(d for d in dashboards if d.uid == "rapport-team")
    context = resolve_variables(
        reader, team, extent, {"workspace": "college", "member": ["brand"], "platform": ["x"]}
    )
    assert set(context.options["member"]) == {"brand", "advocate-9", "advocate-12"}
    activity = run_panel(reader, team, team.panel("Activity per member"), context)[0]
    assert "member IN ('brand')" in activity.sql and "platform IN ('x')" in activity.sql
    assert [row[0] for row in activity.result.rows] == ["brand"]
    context.selection["member"] = ALL
    activity = run_panel(reader, team, team.panel("Activity per member"), context)[0]
    assert "1=1" in activity.sql
    assert {row[0] for row in activity.result.rows} == {"brand", "advocate-9", "advocate-12"}


def test_relationships_cli_sorts_limits_and_writes_csv(stack: tuple[Settings, Stack]) -> None:
    settings, _ = stack
    out = rapport(
        settings, "relationships", "-w", "college", "--format", "csv", "--sort", "interactions",
        "--limit", "5",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 5
    assert tuple(rows[0]) == RELATIONSHIP_FIELDS
    counts = [int(r["interactions"]) for r in rows]
    assert counts == sorted(counts, reverse=True)  # interactions sorts descending by default
    everything = json.loads(
        rapport(settings, "relationships", "-w", "college", "-f", "json").stdout
    )
    assert counts == sorted((r["interactions"] for r in everything), reverse=True)[:5]

    out = rapport(
        settings, "relationships", "-w", "college", "-f", "json", "--sort", "+last_contact_at",
        "--limit", "3",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    firsts = [r["last_contact_at"] for r in json.loads(out.stdout)]
    assert len(firsts) == 3 and firsts == sorted(firsts)
    assert firsts == sorted(r["last_contact_at"] for r in everything)[:3]

    bad = rapport(settings, "relationships", "-w", "college", "--sort", "nonsense")
    assert bad.returncode != 0 and "cannot sort by 'nonsense'" in bad.stderr


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("headless Chromium is needed (scripts/ensure-system-deps.sh installs it)")
    return found


def screenshot(html_file: Path, png: Path) -> None:
    profile = png.parent / f"chromium-profile-{uuid.uuid4().hex[:6]}"
    shot = subprocess.run(
        [
            _chromium(), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}", f"--screenshot={png}",
            "--window-size=1400,3000", html_file.resolve().as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]


def test_report_while_the_stack_runs_renders_in_chromium(
    stack: tuple[Settings, Stack], tmp_path: Path
) -> None:
    from PIL import Image

    settings, _ = stack
    html_file = tmp_path / "report.html"
    out = rapport(settings, "report", "--workspace", "college", "--html", str(html_file))
    assert out.returncode == 0, out.stderr
    page = html_file.read_text()
    # Self-contained: nothing to load from anywhere.
    for needle in ("<script", "src=", "href=", "@import", "url("):
        assert needle not in page, needle
    assert "the running worker" in page
    for dashboard in load_dashboards():
        assert dashboard.title in page
        for panel in dashboard.panels:
            assert panel.title.replace(">", "&gt;") in page
    assert page.count("<svg") >= 12 and "No data" not in page

    png = tmp_path / "report.png"
    screenshot(html_file, png)
    image = Image.open(png).convert("RGB")
    assert image.size == (1400, 3000)
    colours = image.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 500, "the screenshot is nearly uniform"
    background = max(colours)[0] / (1400 * 3000)
    assert background < 0.9, f"{background:.0%} of the page is one colour"
    # The charts are drawn: plenty of pixels in the first two series colours (#3274d9, #56a64b).
    counts = dict((rgb, n) for n, rgb in colours)
    assert counts.get((0x32, 0x74, 0xD9), 0) > 5000 and counts.get((0x56, 0xA6, 0x4B), 0) > 2000


def test_report_and_relationships_when_the_stack_is_stopped(
    stack: tuple[Settings, Stack], tmp_path: Path
) -> None:
    settings, services = stack
    services.stop_services()
    assert not services.worker_running()
    html_file = tmp_path / "stopped.html"
    out = rapport(
        settings, "report", "-w", "college", "--html", str(html_file),
        "--from", "2004-04-15", "--to", "2004-06-01T00:00:00Z",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    page = html_file.read_text()
    assert "the embedded engine" in page and "2004-04-15 00:00 to 2004-06-01 00:00 UTC" in page
    assert page.count("<svg") >= 12
    listed = rapport(settings, "relationships", "-w", "college", "-f", "json", "--limit", "2")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 2
