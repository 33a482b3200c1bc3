"""The pure part of replay, the rows it writes, and the version bookkeeping on real chdb."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from events.ids import event_id
from events.models import (
    Direction,
    Identity,
    IdentityLinked,
    IdentityUnlinked,
    Interaction,
    Kind,
    dump_event,
)
from projections.policy import DEFAULT_POLICY, policy_for
from projections.relationship import RelationshipState, fold, view_row
from projections.rows import interaction_row_from_json, relationship_row
from projections.schema import INTERACTION_COLUMNS, RELATIONSHIP_COLUMNS
from projections.store import ClickHouseStore
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry
from streams import versions
from streams.eventlog import partition_for
from streams.replay.recalculation import Recalculation, recalculate
from streams.replay.rows import (
    decode_chunk,
    encode_chunks,
    interaction_values,
    interaction_values_from_json,
    relationship_values,
    replay_topic,
)
from tests.conftest import FIXTURES
from tests.datasets import collegemsg_interactions, most_replied_authors, reddit_interactions
from tests.oracle import compare, expected_relationships

THREAD = FIXTURES / "reddit" / "TestCommentForest.test_replace__all_large.comments.jsonl"
T0 = datetime(2024, 3, 1, tzinfo=UTC)
REGISTRY = WorkspaceRegistry()


def oracle_rows(events: list[Interaction], **kwargs: Any) -> dict[str, dict[str, Any]]:
    return expected_relationships(events, **kwargs)


def views(states: dict[str, RelationshipState], policy: Any = DEFAULT_POLICY) -> dict[str, Any]:
    return {key: view_row(state, policy) for key, state in states.items()}


@pytest.fixture(scope="module")
def real_events() -> list[Interaction]:
    college = collegemsg_interactions({"323", "9", "12", "2", "42"}, limit=6000)
    owned = set(most_replied_authors(THREAD, 3))
    return college + reddit_interactions(THREAD, owned)


def test_replay_of_a_shuffled_log_with_duplicates_equals_the_oracle(
    real_events: list[Interaction],
) -> None:
    arrival = list(real_events)
    random.Random(7).shuffle(arrival)  # most events arrive late for the live fold
    arrival += arrival[:500]  # redeliveries
    outcome = recalculate([dump_event(e) for e in arrival], REGISTRY)
    assert outcome.duplicates == 500 and outcome.interactions == len(real_events)
    rows = outcome.views
    assert compare(rows, oracle_rows(real_events)) == []
    assert all(r["late_events"] == 0 for r in rows.values())
    live_shuffled = views(fold(arrival))
    assert any(r["late_events"] for r in live_shuffled.values())  # the live path differs


def test_replay_equals_the_live_fold_field_for_field_for_events_on_time(
    real_events: list[Interaction],
) -> None:
    in_order = sorted(real_events, key=lambda e: (e.occurred_at, e.event_id))
    live = views(fold(in_order))
    outcome = recalculate([dump_event(e) for e in in_order], REGISTRY, keep_states=True)
    assert outcome.views == live  # every field, revision included
    # and the table record the worker of the new version loads is the live state
    live_states = fold(in_order)
    assert outcome.states == live_states
    for key, value in outcome.changelog:
        assert RelationshipState.from_dict(json.loads(value)) == live_states[key.decode()]
    # folded in two processes: the same rows and records
    parallel = recalculate([dump_event(e) for e in in_order], REGISTRY, processes=2)
    assert parallel.views == live
    assert sorted(parallel.changelog) == sorted(outcome.changelog)


def test_a_policy_change_is_applied_by_the_replay(real_events: list[Interaction]) -> None:
    overrides = {"version": "policy-v2", "half_life_days": 7.0, "weights": {"outbound.message": 2}}
    registry = WorkspaceRegistry.from_mapping(
        {"workspaces": {"college": {"policy": overrides}, "reddit": {}}}
    )
    policy = policy_for(overrides)
    outcome = recalculate([dump_event(e) for e in real_events], registry)
    college = [e for e in real_events if e.workspace == "college"]
    rows = {k: v for k, v in outcome.views.items() if k.startswith("college|")}
    assert compare(rows, oracle_rows(college, policy=policy)) == []
    assert {r["policy_version"] for r in rows.values()} == {"policy-v2"}


def _dm(n: int, contact: Identity, inbound: bool, at: datetime) -> Interaction:
    brand = Identity(platform=contact.platform, user_id="brand")
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


def _link(n: int, who: Identity, contact: str | None, at: datetime) -> bytes:
    if contact is None:
        event: IdentityLinked | IdentityUnlinked = IdentityUnlinked(
            event_id=event_id("acme", "identity", f"l:{n}"),
            workspace="acme",
            occurred_at=at,
            identity=who,
        )
    else:
        event = IdentityLinked(
            event_id=event_id("acme", "identity", f"l:{n}"),
            workspace="acme",
            occurred_at=at,
            identity=who,
            contact_id=contact,
        )
    return dump_event(event)


def test_the_final_identity_map_rekeys_all_history() -> None:
    ann_x, ann_mail = Identity(platform="x", user_id="100"), Identity(platform="email", user_id="a")
    bob_mail = Identity(platform="email", user_id="b")
    events = [
        _dm(1, ann_x, True, T0),
        _dm(2, ann_mail, False, T0 + timedelta(hours=1)),
        _dm(3, ann_x, False, T0 + timedelta(hours=3)),
        _dm(4, bob_mail, True, T0 + timedelta(hours=4)),
        _dm(5, ann_mail, True, T0 + timedelta(days=2)),
    ]
    log = [dump_event(e) for e in events]
    # ann's mail identity: linked, unlinked, linked again (the last by occurred_at wins, even
    # though it was written first); bob: linked then unlinked (his own contact in the end).
    log.insert(0, _link(9, ann_mail, "x:100", T0 + timedelta(days=9)))
    log.append(_link(7, ann_mail, "x:100", T0 + timedelta(days=7)))
    log.append(_link(8, ann_mail, None, T0 + timedelta(days=8)))
    log.append(_link(10, bob_mail, "x:100", T0 + timedelta(days=1)))
    log.append(_link(11, bob_mail, None, T0 + timedelta(days=3)))
    calc = Recalculation()
    calc.add_many(log)
    assert calc.identity_map() == {("acme", "email:a"): "x:100"}
    outcome = calc.finish(lambda w: DEFAULT_POLICY)
    assert outcome.identities == {"acme|email:a": "x:100"}
    want = oracle_rows(events, contacts={"email:a": "x:100"})
    assert compare(outcome.views, want) == []
    assert set(outcome.views) == {"acme|x:100", "acme|email:b"}
    contacts = {row[0]: row[2] for row in outcome.interaction_rows}
    assert contacts == {
        events[0].event_id: "x:100",
        events[1].event_id: "x:100",
        events[2].event_id: "x:100",
        events[3].event_id: "email:b",
        events[4].event_id: "x:100",
    }


def test_workspace_filter_keeps_only_that_workspace(real_events: list[Interaction]) -> None:
    outcome = recalculate([dump_event(e) for e in real_events], REGISTRY, workspaces=["reddit"])
    assert {v["workspace"] for v in outcome.views.values()} == {"reddit"}
    assert all(row[1] == "reddit" for row in outcome.interaction_rows)


# --- rows and records --------------------------------------------------------------------------


def _as_ms(value: Any) -> Any:
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, list):
        return [_as_ms(v) for v in value]
    return value


def test_rows_equal_the_live_sinks_rows(real_events: list[Interaction]) -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    for state in list(fold(real_events[:3000]).values())[:50]:
        view = view_row(state)
        assert relationship_values(view, 1735689600000) == [
            _as_ms(v) for v in relationship_row(view, now)
        ]
    for event in real_events[:200] + real_events[-200:]:
        data = dump_event(event)
        live = interaction_row_from_json(data, "x:1")
        assert live is not None
        assert interaction_values(json.loads(data), "x:1") == [_as_ms(v) for v in live]
        assert interaction_values_from_json(data, "x:1") == [_as_ms(v) for v in live]
    assert len(RELATIONSHIP_COLUMNS) == len(relationship_values(view, 0))
    assert len(INTERACTION_COLUMNS) == len(interaction_values(json.loads(data), ""))


def test_the_fast_decoder_reads_what_the_live_path_reads(real_events: list[Interaction]) -> None:
    import msgspec

    from projections.relationship import touch_from_doc
    from streams.replay.recalculation import _Doc, row_of_doc, touch_of_doc

    decode = msgspec.json.Decoder(_Doc).decode
    for event in real_events[:300] + real_events[-300:]:
        data = dump_event(event)
        doc = json.loads(data)
        touch = touch_from_doc(doc)  # None for events without a relationship
        assert touch is None or touch_of_doc(decode(data)) == touch
        assert row_of_doc(decode(data), "c") == interaction_values(doc, "c")


def test_unreadable_events_are_counted_and_skipped() -> None:
    calc = Recalculation()
    calc.add_many([b"{", b'{"type": "interaction", "schema_version": 1}', b"[]"])
    assert (calc.events, calc.invalid, calc.interactions) == (3, 3, 0)


def test_replay_records_round_trip_and_refuse_other_tables() -> None:
    rows = [[str(i), "acme", "x:1", *range(16)] for i in range(3000)]
    chunks = list(encode_chunks("b1", "interactions_v4", rows, limit=20_000))
    assert len(chunks) > 3 and all(len(c) < 25_000 for c in chunks)
    back = [r for c in chunks for r in decode_chunk(c).rows]
    assert back == rows
    assert decode_chunk(chunks[0]).build == "b1"
    for table in ("relationships", "interactions_v2; DROP TABLE x", "dead_letters_v2"):
        with pytest.raises(ValueError):
            list(encode_chunks("b", table, rows[:1]))
        with pytest.raises(ValueError):
            decode_chunk(json.dumps({"build": "b", "table": table, "rows": []}).encode())
    short_row = {"build": "b", "table": "relationships_v2", "rows": [[1]]}
    with pytest.raises(ValueError):
        decode_chunk(json.dumps(short_row).encode())


def test_partition_of_a_key_is_kafkas_default() -> None:
    from kafka.partitioner.default import murmur2

    for n in range(500):
        key = f"college|x:{n}".encode()
        assert partition_for(key, 8) == (murmur2(key) & 0x7FFFFFFF) % 8


def test_names_of_the_replay_topic_and_worker_ids() -> None:
    assert replay_topic(Settings()) == "rapport.replay"
    assert replay_topic(Settings(topic_events="t1.events")) == "t1.replay"
    assert versions.worker_id_for("rapport-worker", 1) == "rapport-worker"
    assert versions.worker_id_for("rapport-worker", 3) == "rapport-worker-v3"
    assert versions.parse_comment("rapport projection version 3 build ab12") == (3, "ab12")
    assert versions.parse_comment("") is None


def test_the_active_version_is_the_setting_else_the_recorded_one(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    assert versions.active_version(s) == 1
    versions.persist_version(s, 4, 1)
    assert versions.active_version(s) == 4
    assert versions.with_active_version(s).worker_id == "rapport-worker-v4"
    assert versions.active_version(s.model_copy(update={"projection_version": 2})) == 2


# --- versioned tables on the embedded engine ---------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClickHouseStore]:
    opened = ClickHouseStore(f"chdb://{tmp_path / 'ch'}", "rapport")
    opened.migrate()
    try:
        yield opened
    finally:
        opened.close()


def _count(store: ClickHouseStore, table: str) -> int:
    return int(store.query(f"SELECT count() FROM rapport.{table}").rows[0][0])


def _fill(store: ClickHouseStore, table: str, n: int) -> None:
    rows = [
        [f"e{table}{i}", "acme", "x:1", "x", "message", "inbound", "neutral", "1", "", "", "", 0,
         0, "", str(i), "", -1, -1, 1]
        for i in range(n)
    ]  # fmt: skip
    store.insert(table, INTERACTION_COLUMNS, rows, None)


def test_swap_and_roll_back_exchange_tables_and_keep_every_version(store: ClickHouseStore) -> None:
    db = "rapport"
    _fill(store, "interactions", 1)  # version 1: the live tables
    with pytest.raises(versions.VersionError):
        versions.prepare(store, db, 1, "b0")  # the active version
    versions.prepare(store, db, 2, "b2")
    _fill(store, "interactions_v2", 2)
    versions.prepare(store, db, 3, "b3")
    _fill(store, "interactions_v3", 3)
    with pytest.raises(versions.VersionError, match="not built"):
        versions.ensure_active(store, db, 5, "w-v5")

    assert versions.ensure_active(store, db, 2, "w-v2") == 1
    assert _count(store, "interactions") == 2 and _count(store, "interactions_v1") == 1
    assert versions.active(store, db) == 2
    assert versions.ensure_active(store, db, 2, "w-v2") == 2  # idempotent
    assert versions.ensure_active(store, db, 3, "w-v3") == 2
    tables = versions.table_versions(store, db)
    assert {n: t.version for n, t in tables.items()} == {
        "interactions": 3, "relationships": 3, "interactions_v1": 1, "relationships_v1": 1,
        "interactions_v2": 2, "relationships_v2": 2,
    }  # fmt: skip
    assert versions.ensure_active(store, db, 1, "w") == 3  # roll back to the first
    assert _count(store, "interactions") == 1 and _count(store, "interactions_v3") == 3
    events = [(r["version"], r["event"]) for r in versions.history(store, db)]
    assert events == [(2, "activated"), (3, "activated"), (1, "activated")]
    # a rebuild of a version replaces its tables
    versions.prepare(store, db, 3, "b3bis")
    assert _count(store, "interactions_v3") == 0
    assert versions.build_of(store, db, "interactions_v3") == "b3bis"


# --- the sharded read (forked shards, each a share of the partitions) --------------------------


class Collecting:
    """A `TableWriter`'s interaction side that keeps what it is given: Arrow tables, or with
    `schema` the shards' files (read back here, as the embedded engine would)."""

    def __init__(self, schema: Any = None) -> None:
        self.schema = schema
        self.tables: list[Any] = []
        self.files = 0

    def arrow_file_schema(self, table: str) -> Any:
        return self.schema

    def write_arrow(self, table: str, data: Any, progress: Any) -> None:
        self.tables.append(data)

    def insert_arrow_file(self, table: str, path: str, rows: int, progress: Any) -> None:
        import pyarrow as pa

        data = pa.ipc.open_stream(pa.memory_map(path)).read_all()
        assert data.schema == self.schema and data.num_rows == rows
        assert data.column(0).num_chunks == 1  # combined by the shard
        self.tables.append(data)
        self.files += 1


def _sharded(
    monkeypatch: pytest.MonkeyPatch,
    partitions: dict[int, list[bytes]],
    parts: int = 2,
    changelog_topic: str | None = None,
    writer: Collecting | None = None,
) -> tuple[Any, list[Any]]:
    """`Shards` over an in-memory log (`read_log` replaced; the forks inherit the fake)."""
    import streams.replay.shards as replay_module
    from streams.archive import Snapshot
    from streams.replay.interfaces import NoProgress
    from streams.replay.recalculation import policies_from

    def fake_read_log(settings: Any, snapshot: Snapshot, handle: Any) -> int:
        for partition in sorted(snapshot.ends):
            handle([(None, value) for value in partitions[partition]])
        return sum(len(partitions[p]) for p in snapshot.ends)

    monkeypatch.setattr(replay_module, "read_log", fake_read_log)
    snapshot = Snapshot("rapport.events", {p: len(v) for p, v in partitions.items()})
    policy_of = policies_from(REGISTRY)
    shards = replay_module.Shards(Settings(), snapshot, None, policy_of, parts)
    writer = writer or Collecting()
    written = writer.tables
    try:
        shards.read_all(NoProgress())
        outcome, count = shards.run(
            policy_of, writer, "interactions_v2",  # type: ignore[arg-type]
            NoProgress(), changelog_topic=changelog_topic,
        )  # fmt: skip
        assert os.listdir(shards.spool) == []  # every table the shards left was read, removed
    finally:
        shards.close()
    assert not os.path.exists(shards.spool)
    assert count == sum(t.num_rows for t in written)
    return outcome, written


def _table(rows: int) -> Any:
    import pyarrow as pa

    return pa.table({"event_id": [f"e{n}" for n in range(rows)], "at": list(range(rows))})


def test_a_shards_table_goes_through_shared_memory_and_the_file_is_removed(
    tmp_path: Path,
) -> None:
    from multiprocessing import Pipe

    from streams.replay.arrow import send_arrow, unpack_arrow

    mine, theirs = Pipe()
    table = _table(1_000)
    send_arrow(theirs, "rows", table, 1_000, spool=str(tmp_path))
    message = mine.recv()
    assert message[0] == "rows" and message[2] == 1_000
    assert Path(message[1]).parent == tmp_path and Path(message[1]).exists()
    tag, got, count = unpack_arrow(mine, message)
    assert (tag, count) == ("rows", 1_000) and got.equals(table)
    assert list(tmp_path.iterdir()) == []
    assert unpack_arrow(mine, ("rows", None, 0)) == ("rows", None, 0)


def test_rows_of_no_relationships_and_their_stamp_are_the_list_conversions_own(
    real_events: list[Interaction],
) -> None:
    import pyarrow as pa

    from streams.replay.arrow import relationship_arrow, stamped

    some = relationship_arrow(list(views(fold(real_events)).values())[:50])
    empty = relationship_arrow([])
    assert empty.num_rows == 0 and empty.schema == some.schema
    assert stamped(empty, 7).num_rows == 0
    now_ms = 1_733_564_400_123
    stamp = stamped(some, now_ms).column("updated_at")
    assert stamp.type == pa.int64() and stamp.to_pylist() == [now_ms] * 50
    assert stamped(some, now_ms).drop_columns("updated_at").equals(some.drop_columns("updated_at"))


def test_a_native_shards_rows_and_their_stamp_do_not_import_pandas() -> None:
    """pyarrow imports pandas (0.2-0.4 s) on its first list conversion; a native replay makes
    its rows from buffers, and its shards no longer wait for that import before forking."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from streams.replay.arrow import relationship_arrow, stamped\n"
        "rows = stamped(relationship_arrow([]), 1)\n"
        "print(rows.num_rows, 'pandas' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert run.stdout.split() == ["0", "False"]


def test_without_room_in_shared_memory_the_table_takes_the_pipe(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from multiprocessing import Pipe

    from streams.replay.arrow import send_arrow, unpack_arrow

    mine, theirs = Pipe()
    table = _table(200)  # small: the pipe holds it while this one process is both ends
    gone = tmp_path / "removed"  # a spool that cannot be written
    with caplog.at_level("WARNING", logger="rapport.replay"):
        send_arrow(theirs, "folded", table, ["acme"], spool=str(gone))
    assert "the pipe takes the table" in caplog.text
    _, got, names = unpack_arrow(mine, mine.recv())
    assert got.equals(table) and names == ["acme"]
    send_arrow(theirs, "folded", table, ["acme"])  # no spool at all: the pipe
    assert unpack_arrow(mine, mine.recv())[1].equals(table)


def test_sharded_replay_equals_one_process(
    monkeypatch: pytest.MonkeyPatch, real_events: list[Interaction]
) -> None:
    from events.models import parse_event
    from streams.keys import event_key
    from streams.replay.writers import arrow_rows

    ann_x, ann_mail = Identity(platform="x", user_id="100"), Identity(platform="email", user_id="a")
    bob_mail = Identity(platform="email", user_id="b")
    linked = [
        _dm(1, ann_x, True, T0),
        _dm(2, ann_mail, False, T0 + timedelta(hours=1)),
        _dm(3, ann_x, False, T0 + timedelta(hours=3)),
        _dm(4, bob_mail, True, T0 + timedelta(hours=4)),
        _dm(5, ann_mail, True, T0 + timedelta(days=2)),
    ]
    arrival = list(real_events) + linked
    random.Random(3).shuffle(arrival)
    arrival += arrival[:300]  # redeliveries (same key, same partition)
    log = [dump_event(e) for e in arrival]
    log.append(_link(9, ann_mail, "x:100", T0 + timedelta(days=9)))
    log.append(_link(10, bob_mail, "x:100", T0 + timedelta(days=1)))
    log.append(_link(11, bob_mail, None, T0 + timedelta(days=3)))
    # ann's two identities in different shards: her relationship is folded by the parent
    forced = {b"acme|x:100": 0, b"acme|email:a": 1}
    partitions: dict[int, list[bytes]] = {0: [], 1: []}
    for value in log:
        key = event_key(parse_event(value))
        partitions[forced.get(key, partition_for(key, 2))].append(value)

    one = recalculate(log, REGISTRY)
    sharded, tables = _sharded(monkeypatch, partitions)
    # the shards send their relationships' rows as Arrow; the parent's (ann's) stay views
    assert set(sharded.views) == {"acme|x:100"} and sharded.relationships == one.relationships
    got = [*sharded.relationship_rows(0)]
    got += [row for table in sharded.relationship_tables for row in arrow_rows(table)]
    assert sorted(got) == sorted(one.relationship_rows(0))
    assert sharded.changelog == sorted(one.changelog)
    assert sharded.identities == one.identities == {"acme|email:a": "x:100"}
    assert (sharded.events, sharded.interactions, sharded.duplicates, sharded.links) == (
        one.events, one.interactions, one.duplicates, one.links,
    )  # fmt: skip
    assert sharded.duplicates == 300
    rows = sorted(row for table in tables for row in arrow_rows(table))
    assert rows == sorted(one.interaction_rows)
    assert {row[2] for row in rows if row[0] == linked[1].event_id} == {"x:100"}


def test_shards_cast_their_rows_for_a_writer_that_reads_their_files(
    monkeypatch: pytest.MonkeyPatch, real_events: list[Interaction]
) -> None:
    """Where the writer reads files (the embedded engine, `arrow_file_schema`), each shard
    casts its rows to the table's schema in one chunk and leaves them in its file; the parent
    hands the paths over and removes the files (`_sharded` checks the spool is empty)."""
    import pyarrow as pa

    from events.models import parse_event
    from streams.keys import event_key

    log = [dump_event(e) for e in real_events]
    partitions: dict[int, list[bytes]] = {0: [], 1: []}
    for value in log:
        partitions[partition_for(event_key(parse_event(value)), 2)].append(value)
    at = pa.timestamp("ms", tz="UTC")
    types = {"occurred_at": at, "received_at": at, "raw_partition": pa.int32(),
             "schema_version": pa.uint16()}  # fmt: skip
    schema = pa.schema([
        (c, types.get(c, pa.int64() if c == "raw_offset" else pa.string()))
        for c in INTERACTION_COLUMNS
    ])  # fmt: skip
    writer = Collecting(schema)
    from streams.replay.writers import arrow_rows

    _, tables = _sharded(monkeypatch, partitions, writer=writer)
    assert writer.files == 2
    epoch = [row for table in tables for row in arrow_rows(table.cast(_as_sent(schema)))]
    assert sorted(epoch) == sorted(recalculate(log, REGISTRY).interaction_rows)


def _as_sent(schema: Any) -> Any:
    """The schema of the rows as a shard builds them (times as epoch-ms ints, int64s)."""
    import pyarrow as pa

    return pa.schema([
        (f.name, pa.int64() if pa.types.is_timestamp(f.type) or pa.types.is_integer(f.type)
         else f.type)
        for f in schema
    ])  # fmt: skip


def test_shards_produce_their_table_records_themselves(
    monkeypatch: pytest.MonkeyPatch, real_events: list[Interaction], tmp_path: Path
) -> None:
    """Given the worker state's topic, each shard produces its relationships' records (what
    the parent produced before); together with the parent's they are the one-process ones."""
    import pickle

    import streams.replay.shards as replay_module
    from events.models import parse_event
    from streams.keys import event_key

    def fake_append(settings: Any, topic: str, records: Any, **_: Any) -> int:
        made = list(records)
        with (tmp_path / f"{topic}.{os.getpid()}").open("ab") as fh:
            pickle.dump(made, fh)
        return len(made)

    monkeypatch.setattr(replay_module, "append_records", fake_append)
    log = [dump_event(e) for e in real_events]
    partitions: dict[int, list[bytes]] = {0: [], 1: []}
    for value in log:
        partitions[partition_for(event_key(parse_event(value)), 2)].append(value)
    sharded, _ = _sharded(monkeypatch, partitions, changelog_topic="w-v2-relationships-changelog")
    produced = [
        record
        for path in tmp_path.glob("w-v2-relationships-changelog.*")
        for record in pickle.loads(path.read_bytes())
    ]
    assert len(list(tmp_path.iterdir())) == 2  # one file per shard: each produced its own
    assert sharded.changelog == [] and sharded.changelog_produced == len(produced) > 0
    assert sorted(produced) == sorted(recalculate(log, REGISTRY).changelog)


def test_shards_holding_the_same_event_fall_back(
    monkeypatch: pytest.MonkeyPatch, real_events: list[Interaction]
) -> None:
    from streams.replay.shards import Overlap

    log = [dump_event(e) for e in real_events[:400]]
    # the same events in two partitions (the partition count changed between deliveries)
    with pytest.raises(Overlap):
        _sharded(monkeypatch, {0: log[:300], 1: log[200:]})


def test_a_replays_inserts_skip_merging_a_block_with_itself(tmp_path: Path) -> None:
    """A replay's rows are unique by the sorting key, so its inserts skip ReplacingMergeTree's
    in-block merge (`UNIQUE_ROWS`). Shown with two rows that share a key, which a replay never
    sends: each of its writes keeps both until FINAL or a merge; any other insert keeps one."""
    from streams.replay import writers as replay_module
    from streams.replay.arrow import interaction_arrow
    from streams.replay.interfaces import NoProgress

    writer = replay_module.DirectWriter(
        Settings(home=tmp_path, clickhouse_url=f"chdb://{tmp_path / 'ch'}")
    )
    try:
        writer.prepare(2, "b2")
        rows = [
            ["e1", "acme", "x:1", "x", "message", "inbound", "neutral", "1", "", "", "",
             1_700_000_000_000, 1_700_000_000_000, "", str(n), "", -1, -1, 1]
            for n in range(2)
        ]  # fmt: skip
        store, table = writer.store, "rapport.interactions_v2"

        def counted(sql: str) -> int:
            return int(store.query(sql).rows[0][0])

        writer.write_arrow("interactions_v2", interaction_arrow(rows), NoProgress())
        assert counted(f"SELECT count() FROM {table}") == 2
        assert counted(f"SELECT count() FROM {table} FINAL") == 1
        store.command(f"TRUNCATE TABLE {table}")
        writer.write("interactions_v2", rows, NoProgress())
        assert counted(f"SELECT count() FROM {table}") == 2
        store.command(f"TRUNCATE TABLE {table}")
        stored = [
            [*row[:11], *(datetime.fromtimestamp(row[11] / 1000, UTC),) * 2, *row[13:]]
            for row in rows
        ]
        store.insert("interactions_v2", INTERACTION_COLUMNS, stored, "t1")
        assert counted(f"SELECT count() FROM {table}") == 1
    finally:
        writer.close()


def test_arrow_writes_go_in_slices_each_with_its_own_token_and_every_row_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard's Arrow table (a chunk per fetch) larger than ARROW_INSERT_ROWS is inserted slice
    by slice, each slice deduplicated on a token of its own (one token for all would drop every
    slice but the first), times cast from epoch ms to the table's DateTime64."""
    from streams.replay import writers as replay_module
    from streams.replay.arrow import interaction_arrow
    from streams.replay.interfaces import NoProgress

    monkeypatch.setattr(replay_module, "ARROW_INSERT_ROWS", 4)
    writer = replay_module.DirectWriter(
        Settings(home=tmp_path, clickhouse_url=f"chdb://{tmp_path / 'ch'}")
    )
    try:
        writer.prepare(2, "b2")
        rows = [
            [f"e{i}", "acme", "x:1", "x", "message", "inbound", "neutral", "1", "", "", "",
             1_700_000_000_000 + i, 1_700_000_000_000 + i, "", str(i), "", -1, i, 1]
            for i in range(10)
        ]  # fmt: skip
        import pyarrow as pa

        chunked = pa.concat_tables([interaction_arrow(rows[:3]), interaction_arrow(rows[3:])])
        writer.write_arrow("interactions_v2", chunked, NoProgress())
        got = writer.store.query(
            "SELECT count(), min(raw_offset), max(raw_offset), "
            "toUnixTimestamp64Milli(max(occurred_at)) FROM rapport.interactions_v2"
        ).rows[0]
        assert tuple(int(v) for v in got) == (10, 0, 9, 1_700_000_000_009)
        assert writer._numbers == {"interactions_v2": 3}  # 4 + 4 + 2 rows, three tokens
    finally:
        writer.close()


def test_the_embedded_engine_reads_a_shards_file_as_it_takes_an_arrow_table(
    tmp_path: Path,
) -> None:
    """`insert_arrow_file` (the engine reads the shard's file itself) lands the same rows as
    `write_arrow`, whatever the strings hold and wherever the file is (a quote in its path)."""
    import pyarrow as pa

    from streams.replay import writers as replay_module
    from streams.replay.arrow import interaction_arrow
    from streams.replay.interfaces import NoProgress

    writer = replay_module.DirectWriter(
        Settings(home=tmp_path, clickhouse_url=f"chdb://{tmp_path / 'ch'}")
    )
    try:
        writer.prepare(2, "b2")
        writer.prepare(3, "b3")
        odd = ["it's", "back\\slash", "ünï", "tab\there", "", "😀"]
        rows = [
            [f"e{i}", "acme", f"x:{odd[i % 6]}", "x", "message", "inbound", "neutral", "1",
             odd[(i + 1) % 6], "", odd[(i + 2) % 6], 1_700_000_000_000 + i * 7919,
             1_700_000_000_500 + i, "", str(i), "", i % 3, i * 11, 1]
            for i in range(50)
        ]  # fmt: skip
        data = interaction_arrow(rows)
        writer.write_arrow("interactions_v2", data, NoProgress())
        schema = writer.arrow_file_schema("interactions_v3")
        assert schema is not None
        path = tmp_path / "shard's rows.arrow"
        cast = data.select(schema.names).cast(schema)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as stream:
            stream.write_table(cast)
        writer.insert_arrow_file("interactions_v3", str(path), len(rows), NoProgress())

        def stored(table: str) -> list[Any]:  # not `sunk_at`, the time of the insert
            names = ", ".join(INTERACTION_COLUMNS)
            return sorted(writer.store.query(f"SELECT {names} FROM rapport.{table}").rows)

        assert len(stored("interactions_v3")) == 50
        assert stored("interactions_v3") == stored("interactions_v2")
    finally:
        writer.close()


def test_a_server_is_never_asked_to_read_a_local_file() -> None:
    from projections.store import StoreUnavailable

    store = ClickHouseStore.__new__(ClickHouseStore)
    store.url, store.database = "http://127.0.0.1:1", "rapport"
    with pytest.raises(StoreUnavailable):
        store.insert_arrow_file("interactions_v2", "/tmp/x", ["event_id"], "t")
