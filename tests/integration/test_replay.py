"""Replay, recalculation and backfill through the real broker, the real worker and real chdb.

* CollegeMsg (12,000 real messages) backfilled with `rapport import --format csv` and projected
  live; `rapport replay --to-version 2` gives every relationship field for field (and the
  oracle); events appended after the replay's snapshot, and webhooks posted while the worker
  restarts on version 2, are counted exactly once; a policy change in the workspace file,
  replayed into version 3, gives the oracle under the new policy next to version 2.
* An identity link added after the fact and an event redelivered after its lateness window:
  exact after a replay (history merged under one contact, late_events 0); a "reducer fix" as a
  new version next to the old one before the swap, the swap, and a roll back.
* No worker running: the replay writes the embedded engine itself; `rapport export` to NDJSON
  and Parquet, and `replay --from FILE` reads them back.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from events.adapters import normalize
from events.envelope import RawEnvelope
from events.ids import event_id
from events.imports import csv_events, csv_text
from events.models import Direction, Identity, Interaction, Kind
from projections.policy import policy_for
from projections.readmodel import RELATIONSHIP_FIELDS, TIME_FIELDS, iso_utc
from projections.schema import INTERACTION_COLUMNS
from projections.store import ClickHouseStore, SqlReader, WorkerQueryClient
from rapport.demo import Message, deliveries, post_signed, read_collegemsg
from rapport.process import pid_alive, read_pid
from rapport.settings import Settings
from rapport.stack import Stack, settings_env
from rapport.workspaces import WorkspaceRegistry
from streams import versions
from streams.eventlog import append_events
from streams.kafka_admin import current_ends
from streams.replay import lease
from streams.replay.worker_state import changelog_topics
from streams.replay.writers import post_to_worker
from tests.integration.test_real_data import as_oracle_row
from tests.oracle import FIELDS, compare, expected_relationships
from tests.services import services_running

pytestmark = pytest.mark.integration

OWNED = ("323", "9", "12")
SECRET = "replay-secret"
T0 = datetime(2024, 3, 1, tzinfo=UTC)
POLICY_V2 = {"version": "policy-v2", "half_life_days": 7.0, "weights": {"outbound.message": 2.0}}
WEIGHTED = {"gives_out", "gives_in", "balance", "reciprocity", "strength", "stage"}


def college_toml(policy: dict[str, Any] | None = None) -> str:
    accounts = ", ".join(f'{{ platform = "x", user_id = "{u}", member = "m{u}" }}' for u in OWNED)
    text = (
        f"[workspaces.college]\naccounts = [{accounts}]\n"
        f'[workspaces.college.secrets]\nx_consumer_secret = "{SECRET}"\n'
    )
    if policy:
        text += f"[workspaces.college.policy]\n{_toml(policy)}"
    return text


def _toml(policy: dict[str, Any]) -> str:
    lines = []
    for key, value in policy.items():
        if isinstance(value, dict):
            inner = ", ".join(f'"{k}" = {v}' for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def _rapport(settings: Settings, args: tuple[str, ...], timeout: float) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "rapport", *args],
        capture_output=True,
        text=True,
        env=settings_env(settings),
        timeout=timeout,
        check=False,
    )


def cli(settings: Settings, *args: str, timeout: float = 300) -> str:
    done = _rapport(settings, args, timeout)
    assert done.returncode == 0, f"rapport {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def cli_refused(settings: Settings, *args: str, timeout: float = 300) -> str:
    """`rapport *args` when it must fail with exit code 1: its error, lines unwrapped."""
    done = _rapport(settings, args, timeout)
    assert done.returncode == 1, f"rapport {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return " ".join(done.stderr.split())  # rich wraps long lines


def table_rows(reader: SqlReader, table: str, workspace: str) -> dict[str, dict[str, Any]]:
    """Every relationship of a table (any version) in the oracle's shape, by contact id."""
    fields = [*RELATIONSHIP_FIELDS, "revision"]
    rows = reader.query(
        f"SELECT {', '.join(fields)} FROM rapport.{table} FINAL WHERE workspace = {{w:String}}",
        {"w": workspace},
    ).dicts()
    out = {}
    for row in rows:
        for name in TIME_FIELDS:
            row[name] = iso_utc(row[name])
        row["qualified_at"] = [iso_utc(v) for v in row["qualified_at"]]
        row["ask_only"] = bool(row["ask_only"])
        row["platforms"], row["members"] = list(row["platforms"]), list(row["members"])
        out[str(row["contact_id"])] = as_oracle_row(row)
    return out


def interaction_rows(reader: SqlReader, table: str) -> list[tuple[Any, ...]]:
    """Every row of an interactions table (any version), sorted."""
    columns = ", ".join(INTERACTION_COLUMNS)
    return sorted(reader.query(f"SELECT {columns} FROM rapport.{table} FINAL").rows)


def oracle(events: list[Interaction], **kwargs: Any) -> dict[str, dict[str, Any]]:
    return {k.split("|", 1)[1]: v for k, v in expected_relationships(events, **kwargs).items()}


def wait_rows(
    reader: SqlReader, table: str, workspace: str, expected: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The table's rows once they hold the expected relationships and interaction total."""
    want = (len(expected), sum(r["interactions"] for r in expected.values()))
    deadline = time.monotonic() + 180
    have: tuple[int, int] = (0, 0)
    while time.monotonic() < deadline:
        try:
            count, total = reader.query(
                f"SELECT count(), toInt64(sum(interactions)) FROM rapport.{table} FINAL "
                "WHERE workspace = {w:String}",
                {"w": workspace},
            ).rows[0]
            have = (int(count), int(total or 0))
        except Exception:
            have = (-1, -1)  # the worker is restarting
        if have == want:
            return table_rows(reader, table, workspace)
        time.sleep(0.5)
    raise AssertionError(f"{table}/{workspace}: (relationships, interactions) {have} != {want}")


def distinct_interactions(
    reader: SqlReader, table: str, workspace: str, want: int | None = None
) -> int:
    """Distinct events in an interactions table (waiting up to a minute for `want`)."""
    deadline = time.monotonic() + 60
    while True:
        have = int(
            reader.query(
                f"SELECT uniqExact(event_id) FROM rapport.{table} WHERE workspace = {{w:String}}",
                {"w": workspace},
            ).rows[0][0]
        )
        if want is None or have == want or time.monotonic() > deadline:
            return have
        time.sleep(0.5)


def missing_by_source(reader: SqlReader, table: str, sources: dict[str, list[Interaction]]) -> str:
    """Which events a table lacks, by where they came from (the message of a failed count)."""
    rows = reader.query(f"SELECT DISTINCT event_id FROM rapport.{table}", {}).rows
    present = {r[0] for r in rows}
    parts = []
    for name, events in sources.items():
        missing = [e for e in events if e.event_id not in present]
        examples = [(e.object_id, e.occurred_at.isoformat()) for e in missing[:5]]
        parts.append(f"{name}: {len(missing)} of {len(events)} missing, e.g. {examples}")
    return "; ".join(parts)


def same(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], fields: Any) -> list[str]:
    problems = [f"only in one: {k}" for k in sorted(a.keys() ^ b.keys())]
    for key in sorted(a.keys() & b.keys()):
        problems += [
            f"{key}.{f}: {a[key][f]!r} != {b[key][f]!r}" for f in fields if a[key][f] != b[key][f]
        ]
    return problems


@pytest.fixture
def stack(isolated_settings: Settings) -> Iterator[Settings]:
    with services_running(isolated_settings, college_toml()) as settings:
        yield settings


def csv_rows(messages: list[Message]) -> list[dict[str, Any]]:
    return [
        {"platform": "x", "object_id": str(m.line), "occurred_at": str(m.at_s),
         "actor_id": m.sender, "subject_id": m.recipient, "kind": "message"}
        for m in messages
    ]  # fmt: skip


def test_collegemsg_replay_swap_and_policy_change(stack: Settings, tmp_path: Path) -> None:
    settings = stack
    config = WorkspaceRegistry.load(settings.workspaces).get("college")
    assert config is not None
    messages = list(read_collegemsg())
    backfill, after_snapshot, during_restart = (
        messages[:12_000],
        messages[12_000:12_600],
        messages[12_600:13_000],
    )
    path = tmp_path / "college.csv"
    path.write_text(csv_text(csv_rows(backfill)))
    cli(settings, "import", str(path), "--workspace", "college", "--format", "csv")
    imported = [e for e in csv_events(config, path.open(), []) if isinstance(e, Interaction)]
    assert len(imported) == 12_000

    reader = WorkerQueryClient(settings.worker_url, timeout_s=60)
    live = wait_rows(reader, "relationships", "college", oracle(imported))
    assert compare(live, oracle(imported)) == []

    out = cli(settings, "replay", "--to-version", "2")
    assert "through the worker" in out
    # The worker state's bar counts every table record, those the shards produced included.
    state = re.search(r"worker state\s+\S+\s+(\d+)/(\d+)", out)
    assert state is not None and state[1] == state[2] and int(state[1]) >= len(oracle(imported))
    v2 = table_rows(reader, "relationships_v2", "college")
    assert same(v2, live, [*FIELDS, "late_events", "policy_version", "revision"]) == []
    assert distinct_interactions(reader, "interactions_v2", "college") == 12_000

    # After the snapshot: new events, and the whole backfill again (it must not double count).
    after = [e for e in csv_events(config, csv_text(csv_rows(after_snapshot)).splitlines(True), [])]
    append_events(settings, after)
    cli(settings, "import", str(path), "--workspace", "college", "--format", "csv")

    # Signed webhooks while the worker restarts on version 2 (the ingest keeps taking them).
    bodies = [b for _, b in deliveries(during_restart, set(OWNED))]
    now = datetime.now(UTC)
    webhooked = {
        e.event_id: e
        for body in bodies
        for e in normalize(
            config, RawEnvelope(workspace="college", source="x", received_at=now, body=body)
        ).events
        if isinstance(e, Interaction)
    }
    old_worker = read_pid(settings.run_dir / "worker.pid")
    assert old_worker is not None
    swap = subprocess.Popen(
        [sys.executable, "-m", "rapport", "replay", "--activate", "2"],
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while pid_alive(old_worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(old_worker)  # posted while no worker runs, or the new one starts
    url = f"{settings.ingest_url}/webhooks/college/x"
    assert asyncio.run(post_signed(url, bodies, SECRET)).statuses == {200: len(bodies)}
    output, _ = swap.communicate(timeout=300)
    assert swap.returncode == 0, output
    assert "version 2 is active (was 1)" in output

    everything = imported + [e for e in after if isinstance(e, Interaction)]
    everything += list(webhooked.values())
    expected = oracle(everything)
    current = wait_rows(reader, "relationships", "college", expected)
    assert compare(current, expected) == []
    # Every event once in the swapped-in interactions, those appended between the replay's
    # snapshot and the swap included (the new worker's sinks wait for the exchange).
    total = len(everything)
    have = distinct_interactions(reader, "interactions", "college", total)
    sources = {
        "imported": imported,
        "after the snapshot": [e for e in after if isinstance(e, Interaction)],
        "webhooks during the restart": list(webhooked.values()),
    }
    assert have == total, missing_by_source(reader, "interactions", sources)
    assert {r["policy_version"] for r in current.values()} == {"policy-v1"}

    # A policy change in the workspace file, replayed into version 3 next to version 2. While
    # another replay holds version 3 (its claim through the worker), this one is refused.
    settings.workspaces.write_text(college_toml(POLICY_V2))
    claim = {"version": 3, "build": "elsewhere", "holder": "other-host pid 4242"}
    held = post_to_worker(f"{settings.worker_url}/projections/lease", claim)
    assert held["lease"]["build"] == "elsewhere"
    refused = cli_refused(settings, "replay", "--to-version", "3")
    assert "another replay is building version 3: build elsewhere" in refused
    ended = post_to_worker(f"{settings.worker_url}/projections/lease", {**claim, "done": True})
    assert ended["lease"] is None
    cli(settings, "replay", "--to-version", "3")
    v3 = table_rows(reader, "relationships_v3", "college")
    assert compare(v3, oracle(everything, policy=policy_for(POLICY_V2))) == []
    unchanged = [f for f in FIELDS if f not in WEIGHTED]
    assert same(v3, current, unchanged) == []
    assert {r["policy_version"] for r in v3.values()} == {"policy-v2"}
    moved = [k for k in v3 if v3[k]["gives_out"] != current[k]["gives_out"]]
    assert len(moved) > 20
    for key in moved:
        assert v3[key]["gives_out"] == pytest.approx(2 * current[key]["gives_out"])
    assert table_rows(reader, "relationships", "college") == current  # readers: still v2

    cli(settings, "replay", "--activate", "3")
    reader = WorkerQueryClient(settings.worker_url, timeout_s=60)
    assert same(table_rows(reader, "relationships", "college"), v3, FIELDS) == []
    status = cli(settings, "replay", "--status")
    assert "the worker runs version 3" in status


def _dm(n: int, contact: Identity, inbound: bool, at: datetime) -> Interaction:
    brand = Identity(platform=contact.platform, user_id="1" if contact.platform == "x" else "s")
    sender, recipient = (contact, brand) if inbound else (brand, contact)
    return Interaction(
        event_id=event_id("acme", contact.platform, f"m:{n}"),
        workspace="acme",
        platform=contact.platform,
        kind=Kind.MESSAGE,
        actor=sender,
        subject=recipient,
        direction=Direction.INBOUND if inbound else Direction.OUTBOUND,
        contact=contact,
        account=brand,
        member="brand",
        occurred_at=at,
        received_at=at,
        object_id=str(n),
    )


ACME = """
[workspaces.acme]
accounts = [
  { platform = "x", user_id = "1", member = "brand" },
  { platform = "email", user_id = "s", member = "brand" },
]
"""


def test_identity_link_late_redelivery_and_a_fix_as_a_new_version(
    isolated_settings: Settings,
) -> None:
    settings = isolated_settings
    settings.workspaces.write_text(ACME)
    services = Stack(settings)
    ann_x, ann_mail = Identity(platform="x", user_id="100"), Identity(platform="email", user_id="a")
    late_one = Identity(platform="x", user_id="200")
    history = [
        _dm(1, ann_x, True, T0),
        _dm(2, ann_x, False, T0 + timedelta(hours=2)),
        _dm(3, ann_mail, True, T0 + timedelta(days=1)),
        _dm(4, ann_mail, False, T0 + timedelta(days=2)),
        _dm(10, late_one, False, T0),
        _dm(11, late_one, True, T0 + timedelta(days=10)),
    ]
    late = _dm(12, late_one, True, T0 + timedelta(days=1))  # before the watermark (day 3)
    try:
        services.start_services()
        append_events(settings, history)
        reader = WorkerQueryClient(settings.worker_url, timeout_s=60)
        wait_rows(reader, "relationships", "acme", oracle(history))
        append_events(settings, [late, late])  # late, and redelivered
        cli(settings, "identities", "link", "email:a", "x:100", "--workspace", "acme")
        events = [*history, late]
        live_expected = {**oracle(history), "x:200": oracle(events)["x:200"]}
        live = wait_rows(reader, "relationships", "acme", live_expected)
        assert live["x:200"]["late_events"] == 1
        assert compare({"x:200": live["x:200"]}, {"x:200": oracle(events)["x:200"]}) != []
        assert "email:a" in live  # live: a link moves only what comes after it

        cli(settings, "replay", "--to-version", "2")
        merged = oracle(events, contacts={"email:a": "x:100"})
        v2 = table_rows(reader, "relationships_v2", "acme")
        assert compare(v2, merged) == []
        assert set(v2) == {"x:100", "x:200"}
        assert {r["late_events"] for r in v2.values()} == {0}
        contacts = reader.query(
            "SELECT DISTINCT contact_id FROM rapport.interactions_v2 WHERE workspace = 'acme' "
            "AND event_id IN {ids:Array(String)}",
            {"ids": [e.event_id for e in history[:4]]},
        ).rows
        assert contacts == [("x:100",)]

        # The same log replayed by Python alone (no native core, RAPPORT_REPLAY_NATIVE=false),
        # into a version of its own: the same rows, the links and the redelivery included.
        cli(settings.model_copy(update={"replay_native": False}), "replay", "--to-version", "4")
        assert table_rows(reader, "relationships_v4", "acme") == v2
        assert interaction_rows(reader, "interactions_v4") == interaction_rows(
            reader, "interactions_v2"
        )

        # A "reducer fix" shipped as a new version (here: a new policy version), side by side.
        settings.workspaces.write_text(
            ACME + '[workspaces.acme.policy]\nversion = "policy-v1.1"\n'
            'weights = { "inbound.message" = 1.5 }\n'
        )
        cli(settings, "replay", "--to-version", "3")
        side_by_side = reader.query(
            "SELECT a.contact_id, a.policy_version, b.policy_version, a.gives_in, b.gives_in "
            "FROM rapport.relationships_v2 AS a FINAL "
            "JOIN rapport.relationships_v3 AS b FINAL USING (workspace, contact_id) "
            "WHERE workspace = 'acme' ORDER BY a.contact_id"
        ).rows
        assert side_by_side == [
            ("x:100", "policy-v1", "policy-v1.1", 2.0, 3.0),
            ("x:200", "policy-v1", "policy-v1.1", 2.0, 3.0),
        ]
        assert table_rows(reader, "relationships", "acme") == live  # readers: still version 1
        v3 = table_rows(reader, "relationships_v3", "acme")

        cli(settings, "replay", "--activate", "3")
        reader = WorkerQueryClient(settings.worker_url, timeout_s=60)
        assert table_rows(reader, "relationships", "acme") == v3
        assert table_rows(reader, "relationships_v1", "acme") == live  # kept for a roll back
        assert table_rows(reader, "relationships_v2", "acme") == v2
        # Roll back: version 1 again, its worker continues from where it stopped.
        cli(settings, "replay", "--activate", "1")
        reader = WorkerQueryClient(settings.worker_url, timeout_s=60)
        assert table_rows(reader, "relationships", "acme") == live
        append_events(settings, [_dm(13, late_one, False, T0 + timedelta(days=11))])
        after = wait_rows(
            reader,
            "relationships",
            "acme",
            {**live_expected, "x:200": {**live["x:200"], "interactions": 4}},
        )
        assert after["x:200"]["late_events"] == 1  # its own state, continued
    finally:
        services.stop_services()


def test_replay_without_a_worker_and_from_archives(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings
    settings.workspaces.write_text(college_toml() + ACME)
    Stack(settings).kafka.status()  # the broker is the session's; no worker, no ingest
    from streams.topics import ensure_topics

    ensure_topics(settings)
    college = _college(3000)
    contacts = list(dict.fromkeys(e.contact.key for e in college if e.contact is not None))
    target, merged = contacts[0], contacts[1]
    append_events(settings, college)
    cli(settings, "identities", "link", merged, target, "--workspace", "college")

    out = cli(settings, "replay", "--to-version", "2")
    assert "written directly" in out
    ndjson, parquet = tmp_path / "log.ndjson", tmp_path / "log.parquet"
    cli(settings, "export", str(ndjson), "--workspace", "college")
    cli(settings, "export", str(parquet))
    assert len(ndjson.read_text().splitlines()) == len(college) + 1
    cli(settings, "replay", "--from", str(ndjson), "--to-version", "3", "--workspace", "college")
    cli(settings, "replay", "--from", str(parquet), "--to-version", "4")

    store = ClickHouseStore(settings.clickhouse_url, settings.clickhouse_database)
    try:
        want = oracle(college, contacts={merged: target})
        assert merged not in want
        v2 = table_rows(store, "relationships_v2", "college")
        assert compare(v2, want) == []
        assert table_rows(store, "relationships_v3", "college") == v2
        assert table_rows(store, "relationships_v4", "college") == v2
        built = versions.build_of(store, "rapport", "relationships_v2")
        # Another replay (another host) is building version 2 now: this one gives up before
        # it drops or writes anything of it.
        lease.beat(store, "rapport", 2, "elsewhere", "other-host pid 4242")
    finally:
        store.close()
    state_topics = list(changelog_topics(versions.worker_id_for(settings.worker_id, 2)).values())
    state_before = current_ends(settings, state_topics)
    assert sum(state_before.values()) > 0  # version 2's worker state, written by its replay
    status = " ".join(cli(settings, "replay", "--status").split())  # rich wraps long lines
    assert "being built now: build elsewhere of version 2 by other-host pid 4242" in status
    said = cli_refused(settings, "replay", "--to-version", "2")
    assert "another replay is building version 2: build elsewhere" in said
    assert "by other-host pid 4242" in said
    assert current_ends(settings, state_topics) == state_before  # not recreated, not written
    said = cli_refused(settings, "replay", "--activate", "2")
    assert "another replay is building version 2" in said and "then activate" in said
    store = ClickHouseStore(settings.clickhouse_url, settings.clickhouse_database)
    try:
        assert versions.build_of(store, "rapport", "relationships_v2") == built
        assert table_rows(store, "relationships_v2", "college") == v2
        lease.beat(store, "rapport", 2, "elsewhere", "other-host pid 4242", done=True)
    finally:
        store.close()
    assert "cannot be activated" in cli_refused(settings, "replay", "--activate", "3")
    cli(settings, "replay", "--activate", "2")
    rows = json.loads(cli(settings, "relationships", "--workspace", "college", "--format", "json"))
    assert {r["contact_id"] for r in rows} == set(want)
    status = cli(settings, "replay", "--status")
    assert "the worker runs version 2" in status
    assert "being built now" not in status  # the activation let version 2 go when it ended
    store = ClickHouseStore(settings.clickhouse_url, settings.clickhouse_database)
    try:  # its one beat held for longer than a replay's: it cannot renew while it restarts
        lapses = store.query(
            f"SELECT DISTINCT lapse_ms FROM rapport.{lease.TABLE} "
            f"WHERE startsWith(build, '{lease.ACTIVATION}')"
        ).rows
        assert [int(v) for (v,) in lapses] == [int(lease.ACTIVATION_S * 1000)]
    finally:
        store.close()


def _college(limit: int) -> list[Interaction]:
    from tests.datasets import collegemsg_interactions

    return [
        e
        for e in collegemsg_interactions(set(OWNED), workspace="college", limit=limit)
        if isinstance(e, Interaction)
    ]
