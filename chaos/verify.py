"""The verifier: ClickHouse must equal a clean replay of the event log, every event counted once.

After a scenario, whatever was broken on the way:

1. The event log (`rapport.events`, read from Kafka up to its end now) is folded with the
   project's own pure replay core (`streams.replay.recalculation.Recalculation`, what `rapport
   replay` runs):
   the relationships and interaction rows a clean recalculation gives.
2. ClickHouse is read from every worker's database (the union: newest `revision` per
   relationship wins; an interaction copied into two workers' databases by a rebalance is one
   row of a shared table, if the copies agree on the table's sort key) and compared with it:
   relationships `FINAL` field for field (`updated_at` aside), interactions on every column an
   event determines (`received_at`, raw offsets and `sunk_at` belong to a delivery).
3. The generator's plan: every planned event id is in the log and in `interactions` exactly
   once, none is missing, relationship `interactions` sum to the planned count per contact.
4. Every poison body is in the dead-letter topic with a reason (and in `dead_letters`).

Readers are `SqlReader`s: a running worker's `POST /query`, or `ChdbDirReader` for the
database of a stopped worker (opened in a child process: chdb is one engine per process).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chaos.generator import WORKSPACE, Plan
from events.delivery import DeadLetter
from projections.schema import (
    INTERACTION_COLUMNS,
    RELATIONSHIP_COLUMNS,
    RELATIONSHIP_TIME_COLUMNS,
)
from projections.store import QueryResult, SqlReader, StoreUnavailable
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry
from streams.archive import read_log, take_snapshot
from streams.replay.recalculation import Outcome, Recalculation, policies_from

REL_FIELDS = tuple(c for c in RELATIONSHIP_COLUMNS if c != "updated_at")
# Columns an event determines (the rest belong to the delivery: received_at, raw_*, sunk_at).
EVENT_FIELDS = (
    "event_id", "contact_id", "platform", "kind", "direction", "intent", "actor_id",
    "subject_id", "account_id", "member", "occurred_at", "conversation_id", "object_id",
    "in_reply_to",
)  # fmt: skip
_EVENT_INDEX = [INTERACTION_COLUMNS.index(c) for c in EVENT_FIELDS]
SORT_KEY = (1, 10, 0)  # contact_id, occurred_at, event_id positions in EVENT_FIELDS


class ChdbDirReader:
    """Read-only SQL on the embedded ClickHouse of a stopped worker, in a child process."""

    def __init__(self, dsn: str, timeout_s: float = 300.0) -> None:
        self.dsn = dsn
        self.timeout_s = timeout_s
        self._answers: dict[str, QueryResult] = {}  # the worker stopped: nothing changes

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult:
        request = json.dumps({"sql": sql, "parameters": dict(parameters or {})}, sort_keys=True)
        if request not in self._answers:
            self._answers[request] = self._query(request)
        return self._answers[request]

    def _query(self, request: str) -> QueryResult:
        done = subprocess.run(
            [sys.executable, "-m", "chaos.readdb", self.dsn],
            input=request.encode(),
            capture_output=True,
            timeout=self.timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise StoreUnavailable(
                f"reading {self.dsn} failed: {done.stderr.decode(errors='replace')[-2000:]}"
            )
        data = json.loads(done.stdout)
        return QueryResult(tuple(data["columns"]), [tuple(r) for r in data["rows"]])


def _relationship_sql() -> str:
    columns = []
    for name in REL_FIELDS:
        if name in RELATIONSHIP_TIME_COLUMNS:
            columns.append(f"toUnixTimestamp64Milli({name}) AS {name}_ms")
        elif name == "qualified_at":
            columns.append("arrayMap(t -> toUnixTimestamp64Milli(t), qualified_at) AS q_ms")
        else:
            columns.append(name)
    return (
        f"SELECT {', '.join(columns)} FROM rapport.relationships FINAL "
        "WHERE workspace = {w:String}"
    )


def _interaction_sql() -> str:
    columns = [
        "toUnixTimestamp64Milli(occurred_at) AS at_ms" if c == "occurred_at" else c
        for c in EVENT_FIELDS
    ]
    return (
        f"SELECT {', '.join(columns)} FROM rapport.interactions FINAL "
        "WHERE workspace = {w:String}"
    )


RELATIONSHIP_SQL = _relationship_sql()
INTERACTION_SQL = _interaction_sql()
DEAD_LETTER_SQL = (
    "SELECT raw_partition, raw_offset, source, reason, body FROM rapport.dead_letters FINAL "
    "WHERE workspace = {w:String}"
)


@dataclass
class Replayed:
    """The clean recalculation of the event log."""

    outcome: Outcome
    log_records: int
    ids: set[str]
    rows: dict[str, tuple[Any, ...]]  # event_id -> EVENT_FIELDS values


def replay_log(settings: Settings) -> Replayed:
    """Fold `rapport.events` (up to its end now) with the replay core, as `rapport replay`."""
    registry = WorkspaceRegistry.from_mapping(tomllib.loads(settings.workspaces.read_text()))
    snapshot = take_snapshot(settings)
    calc = Recalculation([WORKSPACE])
    records = read_log(settings, snapshot, lambda batch: calc.add_many(v for _, v in batch))
    outcome = calc.finish(policies_from(registry))
    rows = {str(r[0]): tuple(r[i] for i in _EVENT_INDEX) for r in outcome.interaction_rows}
    return Replayed(outcome, records, set(rows), rows)


@dataclass
class ClickHouseState:
    """The union of every worker's database."""

    relationships: dict[str, dict[str, Any]]  # contact_id -> row (REL_FIELDS)
    interactions: dict[str, set[tuple[Any, ...]]]  # event_id -> distinct rows over databases
    doubled_in_db: set[str]  # event ids with more than one FINAL row in one database
    copies: int  # events present in more than one database (identical rows)
    dead_letters: dict[tuple[int, int], tuple[str, str, str]]  # raw pointer -> source, why, body


@dataclass
class DatabaseRows:
    """What one worker's database holds for the chaos workspace (rows as the queries give)."""

    relationships: list[tuple[Any, ...]]  # REL_FIELDS
    interactions: list[tuple[Any, ...]]  # EVENT_FIELDS (occurred_at in ms)
    dead_letters: list[tuple[Any, ...]]  # raw_partition, raw_offset, source, reason, body


def read_database(reader: SqlReader) -> DatabaseRows:
    params = {"w": WORKSPACE}
    return DatabaseRows(
        relationships=reader.query(RELATIONSHIP_SQL, params).rows,
        interactions=reader.query(INTERACTION_SQL, params).rows,
        dead_letters=reader.query(DEAD_LETTER_SQL, params).rows,
    )


def merge(databases: list[DatabaseRows]) -> ClickHouseState:
    """The union of several databases, as one shared table would hold them.

    A relationship is the row with the highest `revision` (ReplacingMergeTree(revision)). An
    interaction present in two databases with the same sort key would collapse in a shared
    table (a copy, e.g. re-sunk after a rebalance); in one database, `FINAL` leaves more than
    one row only for different sort keys: that is a double.
    """
    relationships: dict[str, dict[str, Any]] = {}
    interactions: dict[str, set[tuple[Any, ...]]] = {}
    seen_in: Counter[str] = Counter()
    doubled: set[str] = set()
    dead: dict[tuple[int, int], tuple[str, str, str]] = {}
    for database in databases:
        for row in database.relationships:
            values = dict(zip(REL_FIELDS, row, strict=True))
            key = str(values["contact_id"])
            have = relationships.get(key)
            if have is None or int(values["revision"]) > int(have["revision"]):
                relationships[key] = values
        per_db: Counter[str] = Counter()
        for row in database.interactions:
            eid = str(row[0])
            per_db[eid] += 1
            interactions.setdefault(eid, set()).add(tuple(row))
        doubled |= {eid for eid, n in per_db.items() if n > 1}
        seen_in.update(per_db.keys())
        for partition, offset, source, reason, body in database.dead_letters:
            dead[(int(partition), int(offset))] = (str(source), str(reason), str(body))
    copies = sum(1 for n in seen_in.values() if n > 1)
    return ClickHouseState(relationships, interactions, doubled, copies, dead)


def read_state(readers: Mapping[str, SqlReader]) -> ClickHouseState:
    return merge([read_database(reader) for reader in readers.values()])


def doubled_events(state: ClickHouseState) -> set[str]:
    """Events counted more than once: twice in one database, or under different sort keys."""
    conflicting = {
        eid
        for eid, rows in state.interactions.items()
        if len({tuple(r[i] for i in SORT_KEY) for r in rows}) > 1
    }
    return state.doubled_in_db | conflicting


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _expected_row(view: Mapping[str, Any]) -> dict[str, Any]:
    row = {name: view[name] for name in REL_FIELDS}
    row["last_platform"] = view["last_platform"] or ""
    return row


def relationship_problems(state: ClickHouseState, outcome: Outcome, limit: int = 10) -> list[str]:
    """Differences between the union's relationships and the replay's, field by field."""
    expected = {
        key.split("|", 1)[1]: _expected_row(view)
        for key, view in outcome.views.items()
        if key.startswith(f"{WORKSPACE}|")
    }
    problems = [
        f"relationship {k} only in the replay" for k in expected.keys() - state.relationships.keys()
    ]
    problems += [
        f"relationship {k} only in ClickHouse" for k in state.relationships.keys() - expected.keys()
    ]
    for key in sorted(expected.keys() & state.relationships.keys()):
        want, have = expected[key], state.relationships[key]
        for name in REL_FIELDS:
            if not _same(have[name], want[name]):
                problems.append(
                    f"relationship {key}.{name}: {have[name]!r} != replay {want[name]!r}"
                )
    return problems[:limit] + (
        [f"... {len(problems) - limit} more"] if len(problems) > limit else []
    )


@dataclass
class Verdict:
    """One scenario's result line and its problems."""

    name: str
    sent: int
    deliveries: int = 0
    counted: int = 0
    lost: int = -1
    doubled: int = -1
    dead_letters: int = 0
    expected_dead_letters: int = 0
    copies: int = 0
    relationships: int = 0
    elapsed_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not self.problems
            and self.lost == 0
            and self.doubled == 0
            and self.dead_letters == self.expected_dead_letters
        )

    def line(self) -> str:
        return (
            f"{'PASS' if self.ok else 'FAIL'} {self.name:<16} sent={self.sent:<7} "
            f"deliveries={self.deliveries:<7} counted={self.counted:<7} lost={self.lost:<3} "
            f"doubled={self.doubled:<3} dead_letters={self.dead_letters}/"
            f"{self.expected_dead_letters:<4} relationships={self.relationships:<6} "
            f"elapsed={self.elapsed_s:.1f}s"
        )


def dead_letters_in_kafka(settings: Settings, markers: list[str]) -> tuple[set[str], list[str]]:
    """Markers of poison bodies found in the dead-letter topic (with a reason), and problems."""
    snapshot = take_snapshot(settings, settings.topic_deadletters)
    letters: list[DeadLetter] = []
    read_log(
        settings, snapshot, lambda batch: letters.extend(DeadLetter.loads(v) for _, v in batch)
    )
    wanted = set(markers)
    found: set[str] = set()
    problems: list[str] = []
    for letter in letters:
        body = letter.body.decode(errors="replace")
        hits = [m for m in wanted if m in body]
        if not hits:
            problems.append(f"unexpected dead letter from {letter.source}: {letter.reason[:160]}")
            continue
        if not letter.reason.strip():
            problems.append(f"dead letter {hits[0]} has no reason")
        found.update(hits)
    return found, problems


def poison_marker(body: str, markers: set[str]) -> str | None:
    """The poison marker a dead letter's body carries (no marker contains another)."""
    for marker in markers:
        if marker in body:
            return marker
    return None


def lag(settings: Settings) -> dict[str, int]:
    """Records of each worker input topic not yet committed by the worker group."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    topics = [
        settings.topic_raw,
        settings.topic_events,
        settings.topic_relationship_events,
        settings.topic_deadletters,
    ]
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="chaos-lag")
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, client_id="chaos-lag")
    try:
        if hasattr(admin, "list_consumer_group_offsets"):  # kafka-python 2.x
            offsets = admin.list_consumer_group_offsets(settings.worker_id)
        else:  # kafka-python 3.x
            offsets = admin.list_group_offsets(settings.worker_id).get(settings.worker_id, {})
        done = {(tp.topic, tp.partition): max(meta.offset, 0) for tp, meta in offsets.items()}
        parts = [TopicPartition(t, p) for t in topics for p in range(settings.partitions)]
        ends = consumer.end_offsets(parts)
    finally:
        consumer.close()
        admin.close()
    out: Counter[str] = Counter()
    for tp, end in ends.items():
        out[tp.topic] += max(0, int(end) - done.get((tp.topic, tp.partition), 0))
    return {topic: n for topic, n in out.items() if n}


def wait_drained(settings: Settings, timeout_s: float, say: Callable[[str], None]) -> bool:
    """Block until the worker group has committed every record of its input topics."""
    deadline = time.monotonic() + timeout_s
    left: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            left = lag(settings)
        except Exception as exc:  # the broker between restarts: ask again, but say so
            say(f"lag not readable yet: {type(exc).__name__}: {exc}")
            left = {"?": -1}
        if not left:
            return True
        time.sleep(2)
    say(f"still not committed after {timeout_s:.0f} s: {left}")
    return False


def converge(
    readers: Callable[[], Mapping[str, SqlReader]],
    replayed: Replayed,
    timeout_s: float,
    say: Callable[[str], None],
) -> ClickHouseState | None:
    """Wait until ClickHouse holds every logged event and every relationship's last revision."""
    want_rev = {
        key.split("|", 1)[1]: int(view["revision"]) for key, view in replayed.outcome.views.items()
    }
    deadline = time.monotonic() + timeout_s
    state: ClickHouseState | None = None
    last_error = ""
    while time.monotonic() < deadline:
        try:
            state = read_state(readers())
        except StoreUnavailable as exc:  # a worker restarting or rebalancing: read again
            last_error = str(exc)
            time.sleep(2)
            continue
        have_rev = {k: int(r["revision"]) for k, r in state.relationships.items()}
        if have_rev == want_rev and replayed.ids <= state.interactions.keys():
            return state
        time.sleep(2)
    if last_error:
        say(f"last read error: {last_error[:300]}")
    return state


def verify(
    verdict: Verdict,
    settings: Settings,
    plan: Plan,
    readers: Callable[[], Mapping[str, SqlReader]],
    *,
    timeout_s: float = 300.0,
    say: Callable[[str], None] = print,
) -> Verdict:
    """Fill `verdict` with the counts and every difference found (see the module docstring)."""
    expected = plan.expected_ids
    if not wait_drained(settings, timeout_s, say):
        verdict.problems.append("the workers did not commit all their input in time")
    replayed = replay_log(settings)
    outcome = replayed.outcome
    missing_in_log = expected - replayed.ids
    if missing_in_log:
        verdict.problems.append(f"{len(missing_in_log)} planned events are not in the event log")
    if replayed.ids - expected:
        verdict.problems.append(f"{len(replayed.ids - expected)} logged events were never planned")
    if outcome.invalid:
        verdict.problems.append(f"{outcome.invalid} unreadable records in the event log")
    verdict.notes.append(
        f"log: {replayed.log_records} records, {outcome.interactions} distinct, "
        f"{outcome.duplicates} duplicates"
    )
    state = converge(readers, replayed, min(timeout_s, 120.0), say)
    if state is None:
        verdict.problems.append("ClickHouse could not be read")
        return verdict
    verdict.relationships = len(state.relationships)
    in_clickhouse = set(state.interactions)
    verdict.counted = len(expected & in_clickhouse)
    verdict.lost = len(expected - in_clickhouse)
    verdict.doubled = len(doubled_events(state))
    verdict.copies = state.copies
    if state.copies:
        verdict.notes.append(
            f"{state.copies} events sunk by two workers (one row in a shared table: same sort key)"
        )
    if in_clickhouse - replayed.ids:
        verdict.problems.append(f"{len(in_clickhouse - replayed.ids)} interactions not in the log")
    wrong = [
        eid for eid, rows in state.interactions.items()
        if eid in replayed.rows and any(row != replayed.rows[eid] for row in rows)
    ]  # fmt: skip
    if wrong:
        eid = wrong[0]
        verdict.problems.append(
            f"{len(wrong)} interactions differ from the replay, e.g. "
            f"{sorted(state.interactions[eid])} != {replayed.rows[eid]}"
        )
    verdict.problems += relationship_problems(state, outcome)
    per_contact = plan.per_contact()
    total = sum(int(r["interactions"]) for r in state.relationships.values())
    if total != sum(per_contact.values()):
        verdict.problems.append(
            f"relationships count {total} interactions, the plan {sum(per_contact.values())}"
        )
    off = [
        c for c, n in per_contact.items()
        if int(state.relationships.get(c, {}).get("interactions", 0)) != n
    ]  # fmt: skip
    if off:
        verdict.problems.append(f"{len(off)} relationships count other than planned, e.g. {off[0]}")
    late = sum(int(r["late_events"]) for r in state.relationships.values())
    if late:
        verdict.notes.append(f"{late} late events (the plan spans less than the lateness)")
    # Dead letters: the topic, and the table of every database.
    markers = set(plan.poison)
    found, problems = dead_letters_in_kafka(settings, plan.poison)
    verdict.problems += problems[:5]
    verdict.dead_letters = len(found)
    verdict.expected_dead_letters = len(markers)
    in_table = {
        m for _, _, body in state.dead_letters.values() if (m := poison_marker(body, markers))
    }
    if in_table != markers:
        verdict.problems.append(
            f"dead_letters table holds {len(in_table)} of {len(markers)} poison bodies"
        )
    return verdict


def check_routing(worker_urls: list[str], outcome: Outcome, sample: int = 30) -> list[str]:
    """GET /relationships/{workspace}/{contact} on every worker answers the owner's state."""
    problems: list[str] = []
    views = sorted(
        (k.split("|", 1)[1], v) for k, v in outcome.views.items() if k.startswith(f"{WORKSPACE}|")
    )
    step = max(1, len(views) // sample)
    for contact, view in views[::step][:sample]:
        answers = []
        for url in worker_urls:
            target = f"{url}/relationships/{WORKSPACE}/{urllib.parse.quote(contact)}"
            answer, error = _get_json(target)
            if answer is None:
                problems.append(f"GET {target}: {error}")
            else:
                answers.append(answer)
        for answer in answers:
            if (answer.get("interactions"), answer.get("revision")) != (
                view["interactions"],
                view["revision"],
            ):
                problems.append(
                    f"{contact}: a worker answered interactions={answer.get('interactions')} "
                    f"revision={answer.get('revision')}, the replay {view['interactions']}/"
                    f"{view['revision']}"
                )
    return problems


def _get_json(url: str, attempts: int = 5) -> tuple[dict[str, Any] | None, str]:
    """A JSON answer, retrying a 5xx (a worker between rebalances answers 503) a few times."""
    error = ""
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return json.loads(response.read()), ""
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}: {exc.read()[:200]!r}"
            if exc.code < 500:
                return None, error
        except (urllib.error.URLError, OSError, ValueError) as exc:
            error = str(exc)
        time.sleep(1)
    return None, error
