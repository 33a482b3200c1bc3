"""Replay: recalculate every projection from the event log into a new projection version.

    rapport.events (snapshot: end offsets now) or an archive
        -> Recalculation (pure): final identity map, events grouped by (workspace, contact),
           sorted by (occurred_at, event_id), folded (`replayed`: `apply_all` of the whole
           history at once) with each workspace's policy
        -> relationships_vN, interactions_vN (through the worker that owns the embedded engine,
           or directly) + the Faust state of the worker of version N (table changelogs, consumer
           group offsets at the snapshot)
    activate N: stop the worker, hand the consumer offsets over, start the worker of version N,
        which exchanges the tables before it writes anything (streams.replay_sink).

The fold sees every event in order, so the result is the exact ordered definition of
docs/metrics.md for every event, late or not, and equal field for field to what the live path
holds for events that arrived on time. docs/replay.md describes the procedure.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec

from events.models import (
    CONVERSATIONAL_KINDS,
    IdentityLinked,
    IdentityUnlinked,
    Interaction,
    epoch_ms,
    parse_event,
)
from projections.policy import Policy, policy_for
from projections.relationship import (
    RelationshipState,
    relationship_key,
    replayed,
    touch_of,
    view_row,
)
from projections.store import ClickHouseStore, SqlReader, arrow_type, is_embedded
from projections.tally import Touch
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry
from streams import versions
from streams.archive import Snapshot, archive_size, read_archive, read_log, take_snapshot
from streams.eventlog import append_records
from streams.replay_rows import (
    columns_of,
    encode_chunks,
    interaction_values_of,
    relationship_values,
    replay_topic,
)

T = TypeVar("T")
log = logging.getLogger("rapport.replay")
INSERT_ROWS = 100_000
# Arrow inserts: each insert writes a part per month it spans, which ClickHouse then merges and
# `FINAL` reads across, so fewer, larger inserts cost less CPU (`bench/bench_replay_insert.py`).
# Below ClickHouse's max_insert_block_size, so one insert stays one block.
ARROW_INSERT_ROWS = 500_000
COUNTS = frozenset({"inbound", "outbound"})


class ReplayError(RuntimeError):
    """The replay or the activation cannot go on; the message says why and what to do."""


class Progress(Protocol):
    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, n: int) -> None: ...


class NoProgress:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


# --- the pure part ----------------------------------------------------------------------------


class _Party(msgspec.Struct):
    platform: str
    user_id: str


class _Pointer(msgspec.Struct):
    partition: int
    offset: int


class _Doc(msgspec.Struct):
    """The fields of a logged current-version interaction the replay reads (others ignored)."""

    type: str
    schema_version: int = 0
    event_id: str = ""
    workspace: str = ""
    occurred_at: datetime | None = None
    received_at: datetime | None = None
    platform: str = ""
    kind: str = ""
    direction: str = ""
    actor: _Party | None = None
    subject: _Party | None = None
    contact: _Party | None = None
    account: _Party | None = None
    member: str | None = None
    conversation_id: str | None = None
    object_id: str = ""
    in_reply_to: str | None = None
    intent: str = "neutral"
    raw: _Pointer | None = None


_DECODE = msgspec.json.Decoder(_Doc).decode
_CONVERSATIONAL = frozenset(k.value for k in CONVERSATIONAL_KINDS)


def _complete(d: _Doc) -> bool:
    return bool(
        d.type == "interaction" and d.schema_version == 1 and d.event_id and d.workspace
        and d.occurred_at and d.received_at and d.platform and d.kind and d.direction
        and d.object_id and d.actor is not None
    )  # fmt: skip


def touch_of_doc(d: _Doc, at: int | None = None) -> Touch:
    """`touch_from_doc` of the same event (tested equal), from the decoded struct."""
    return Touch(
        at=epoch_ms(d.occurred_at) if at is None else at,  # type: ignore[arg-type]
        event_id=d.event_id,
        inbound=d.direction == "inbound",
        kind=d.kind,
        conversational=d.kind in _CONVERSATIONAL,
        intent=d.intent,
        platform=d.platform,
        conversation_id=d.conversation_id,
        member=d.member,
    )


def row_of_doc(d: _Doc, contact_id: str, at: int | None = None) -> list[Any]:
    """`replay_rows.interaction_values` of the same event (tested equal)."""
    assert d.actor is not None and d.occurred_at is not None and d.received_at is not None
    raw = d.raw
    if at is None:
        at = epoch_ms(d.occurred_at)
    received = at if d.received_at == d.occurred_at else epoch_ms(d.received_at)
    return [
        d.event_id, d.workspace, contact_id, d.platform, d.kind, d.direction, d.intent,
        d.actor.user_id, d.subject.user_id if d.subject else "",
        d.account.user_id if d.account else "", d.member or "", at, received,
        d.conversation_id or "", d.object_id, d.in_reply_to or "",
        raw.partition if raw else -1, raw.offset if raw else -1, 1,
    ]  # fmt: skip


def _order(touch: Touch) -> tuple[int, str]:
    return (touch.at, touch.event_id)


@dataclass
class _Identity:
    """What one (workspace, identity) contributed: its touches and its interaction rows."""

    touches: list[Touch] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)


Job = tuple[str, str, list[Touch]]  # workspace, contact, its touches sorted


@dataclass
class Outcome:
    """The recalculated projections of a log: per relationship its read-model row (`view_row`)
    and its Faust table record (key, JSON of `RelationshipState.to_dict()`)."""

    views: dict[str, dict[str, Any]]
    changelog: list[tuple[bytes, bytes]]
    policies: dict[str, Policy]
    identities: dict[str, str]  # "<workspace>|<identity>" -> contact id (final links)
    interaction_rows: list[list[Any]]
    events: int
    interactions: int
    duplicates: int
    links: int
    invalid: int
    states: dict[str, RelationshipState] | None = None  # kept when asked (tests)
    # The rows of relationships folded by replay shards, as Arrow (`relationship_arrow`):
    # they are not in `views`.
    relationship_tables: list[Any] = field(default_factory=list)
    # Table records the shards produced to the changelog themselves: not in `changelog`.
    changelog_produced: int = 0

    @property
    def relationships(self) -> int:
        return len(self.views) + sum(int(t.num_rows) for t in self.relationship_tables)

    def relationship_rows(self, updated_at_ms: int) -> Iterator[list[Any]]:
        for view in self.views.values():
            yield relationship_values(view, updated_at_ms)


def _fold_jobs(
    jobs: list[Job], policies: dict[str, Policy], keep_states: bool
) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[bytes, bytes]], list[RelationshipState]]:
    views: list[tuple[str, dict[str, Any]]] = []
    changelog: list[tuple[bytes, bytes]] = []
    kept: list[RelationshipState] = []
    for workspace, contact, touches in jobs:
        policy = policies[workspace]
        state = replayed(workspace, contact, touches, policy)
        key = relationship_key(workspace, contact)
        views.append((key, view_row(state, policy)))
        changelog.append((key.encode(), state.to_json()))  # the bytes the live worker writes
        if keep_states:
            kept.append(state)
    return views, changelog, kept


_FORKED: dict[str, Any] = {}  # what a forked fold process inherits


def _fold_forked(share: int) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[bytes, bytes]]]:
    views, changelog, _ = _fold_jobs(_FORKED["shares"][share], _FORKED["policies"], False)
    return views, changelog


def _split(jobs: list[Job], parts: int) -> list[list[Job]]:
    """Jobs in `parts` shares of about equal work (touches), biggest first."""
    shares: list[list[Job]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for job in sorted(jobs, key=lambda j: -len(j[2])):
        least = loads.index(min(loads))
        shares[least].append(job)
        loads[least] += len(job[2])
    return shares


def fold_parallelism() -> int:
    """Processes for the fold: the cores this process may use (fork only), at most 4."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _jobs_of(
    groups: dict[tuple[str, str], list[list[Touch]]], policy_of: Callable[[str], Policy]
) -> tuple[list[Job], dict[str, Policy]]:
    """One job per relationship, its touches sorted by (occurred_at, event_id)."""
    policies: dict[str, Policy] = {}
    jobs: list[Job] = []
    for (workspace, contact), lists in groups.items():
        touches = lists[0] if len(lists) == 1 else [t for part in lists for t in part]
        touches.sort(key=_order)
        if workspace not in policies:
            policies[workspace] = policy_of(workspace)
        jobs.append((workspace, contact, touches))
    return jobs, policies


class Recalculation:
    """Collects a log's events (`add`), then folds them in the exact order (`finish`). Pure.

    Interactions are kept per (workspace, contact identity) until the final identity map is
    known: the last `identity.linked` / `identity.unlinked` of an identity by (occurred_at,
    event_id) decides the contact its whole history counts for. Duplicates (same event_id)
    count once, the first one read.
    """

    def __init__(self, workspaces: Collection[str] | None = None, flat_rows: bool = False) -> None:
        self.only = frozenset(workspaces) if workspaces else None
        # flat_rows: every interaction row goes into one list in read order (`take_rows`), its
        # contact_id the identity before links, instead of staying with its identity's touches.
        self._flat: list[list[Any]] | None = [] if flat_rows else None
        self._by_identity: dict[tuple[str, str | None], _Identity] = {}
        self._links: dict[tuple[str, str], tuple[tuple[int, str], str | None]] = {}
        self._seen: set[str] = set()
        self.events = 0
        self.interactions = 0
        self.duplicates = 0
        self.links = 0
        self.other = 0
        self.invalid = 0

    def add_many(self, values: Iterable[bytes]) -> None:
        for value in values:
            self.add(value)

    def add(self, value: bytes) -> None:
        """One logged event (its JSON, any stored version); an unreadable one is counted in
        `invalid` and skipped (the live worker dead-letters it)."""
        self.events += 1
        try:
            doc = _DECODE(value)
        except msgspec.DecodeError:
            doc = None
        if doc is not None and _complete(doc):
            self._fast(doc)
            return
        try:
            event = parse_event(value)  # link events, older versions (upcast)
        except ValueError:
            self.invalid += 1
            return
        if isinstance(event, Interaction):
            self._interaction(event)
        elif isinstance(event, IdentityLinked | IdentityUnlinked):
            self._link(event)
        else:
            self.other += 1

    def _fast(self, d: _Doc) -> None:
        """A current-version interaction, straight from the decoded struct (the hot path)."""
        workspace, event_id = d.workspace, d.event_id
        if self.only is not None and workspace not in self.only:
            return
        if event_id in self._seen:
            self.duplicates += 1
            return
        self._seen.add(event_id)
        self.interactions += 1
        contact = d.contact
        if contact is not None and (d.direction == "inbound" or d.direction == "outbound"):
            identity = f"{contact.platform}:{contact.user_id}"
            key: tuple[str, str | None] = (workspace, identity)
            bucket = self._by_identity.get(key)
            if bucket is None:
                bucket = self._by_identity[key] = self._bucket()
            at = epoch_ms(d.occurred_at)  # type: ignore[arg-type]
            bucket.touches.append(touch_of_doc(d, at))
            bucket.rows.append(row_of_doc(d, identity, at))
            return
        key = (workspace, None)
        bucket = self._by_identity.get(key)
        if bucket is None:
            bucket = self._by_identity[key] = self._bucket()
        bucket.rows.append(row_of_doc(d, ""))

    def _bucket(self) -> _Identity:
        return _Identity() if self._flat is None else _Identity(rows=self._flat)

    def take_rows(self) -> list[list[Any]]:
        """The rows collected since the last call (flat_rows only), in read order."""
        assert self._flat is not None
        rows = list(self._flat)
        self._flat.clear()
        return rows

    def _interaction(self, event: Interaction) -> None:
        """An interaction that needed the full parser (an older stored version, upcast)."""
        if self.only is not None and event.workspace not in self.only:
            return
        if event.event_id in self._seen:
            self.duplicates += 1
            return
        self._seen.add(event.event_id)
        self.interactions += 1
        identity: str | None = None
        if event.contact is not None and event.direction.counts:
            identity = event.contact.key
        bucket = self._by_identity.get((event.workspace, identity))
        if bucket is None:
            bucket = self._by_identity[(event.workspace, identity)] = self._bucket()
        if identity is not None:
            bucket.touches.append(touch_of(event))
        bucket.rows.append(interaction_values_of(event, identity or ""))

    def _link(self, event: IdentityLinked | IdentityUnlinked) -> None:
        if self.only is not None and event.workspace not in self.only:
            return
        self.links += 1
        key = (event.workspace, event.identity.key)
        order = (epoch_ms(event.occurred_at), event.event_id)
        contact = event.contact_id if isinstance(event, IdentityLinked) else None
        found = self._links.get(key)
        if found is None or order > found[0]:
            self._links[key] = (order, contact)

    def identity_map(self) -> dict[tuple[str, str], str]:
        """(workspace, identity) -> contact id, for identities linked in the end."""
        return {key: contact for key, (_, contact) in self._links.items() if contact}

    def summary(self) -> dict[str, Any]:
        """What a shard of a sharded replay tells the parent after reading (`_Shards`)."""
        return {
            "events": self.events,
            "interactions": self.interactions,
            "duplicates": self.duplicates,
            "links": self.links,
            "invalid": self.invalid,
            "link_orders": self._links,
            "identities": [key for key in self._by_identity if key[1] is not None],
            # Forked shards share the parent's string hash seed: equal ids, equal hashes.
            "ids": array("q", map(hash, self._seen)),
            "touches": sum(len(b.touches) for b in self._by_identity.values()),
        }

    def assign(
        self, contacts: dict[tuple[str, str], str]
    ) -> tuple[list[list[Any]], dict[tuple[str, str], list[list[Touch]]]]:
        """Interaction rows with their resolved contact ids, and the touches of each
        (workspace, contact) (consumes the collected events). With flat_rows, no rows: they
        were taken (`take_rows`) and `contact_ids` resolves them."""
        flat = self._flat is not None
        groups: dict[tuple[str, str], list[list[Touch]]] = {}
        rows: list[list[Any]] = []
        for (workspace, identity), bucket in self._by_identity.items():
            if identity is None:
                if not flat:
                    rows.extend(bucket.rows)  # no contact: contact_id stays ""
                continue
            contact = contacts.get((workspace, identity), identity)
            if not flat:
                for row in bucket.rows:
                    row[2] = contact
                rows.extend(bucket.rows)
            if bucket.touches:
                groups.setdefault((workspace, contact), []).append(bucket.touches)
        self._by_identity = {}
        return rows, groups

    def finish(
        self,
        policy_of: Callable[[str], Policy],
        progress: Progress | None = None,
        processes: int = 1,
        keep_states: bool = False,
    ) -> Outcome:
        """Fold every relationship over its sorted events (consumes the collected events).

        With `processes` > 1, relationships are folded in that many processes (forked: they
        inherit the touches; only the rows and table records come back).
        """
        progress = progress or NoProgress()
        contacts = self.identity_map()
        rows, groups = self.assign(contacts)
        jobs, policies = _jobs_of(groups, policy_of)
        del groups
        total = sum(len(j[2]) for j in jobs)
        progress.phase("folding", total)
        views: list[tuple[str, dict[str, Any]]] = []
        changelog: list[tuple[bytes, bytes]] = []
        states: list[RelationshipState] = []
        if processes > 1 and not keep_states and len(jobs) >= 2 * processes:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context

            shares = _split(jobs, processes)
            _FORKED.update(shares=shares, policies=policies)  # inherited by the forks
            with ProcessPoolExecutor(processes - 1, mp_context=get_context("fork")) as pool:
                futures = [pool.submit(_fold_forked, n) for n in range(1, len(shares))]
                mine = _fold_jobs(shares[0], policies, False)
                progress.advance(sum(len(j[2]) for j in shares[0]))
                views, changelog = mine[0], mine[1]
                for future, share in zip(futures, shares[1:], strict=True):
                    more_views, more_changelog = future.result()
                    views += more_views
                    changelog += more_changelog
                    progress.advance(sum(len(j[2]) for j in share))
            _FORKED.clear()
        else:
            for start in range(0, len(jobs), 1000):
                part = jobs[start : start + 1000]
                more = _fold_jobs(part, policies, keep_states)
                views += more[0]
                changelog += more[1]
                states += more[2]
                progress.advance(sum(len(j[2]) for j in part))
        identities = {f"{w}|{i}": c for (w, i), c in contacts.items()}
        return Outcome(
            views=dict(views),
            changelog=changelog,
            policies=policies,
            identities=identities,
            interaction_rows=rows,
            events=self.events,
            interactions=self.interactions,
            duplicates=self.duplicates,
            links=self.links,
            invalid=self.invalid,
            states={relationship_key(s.workspace, s.contact_id): s for s in states}
            if keep_states
            else None,
        )


def policies_from(registry: WorkspaceRegistry) -> Callable[[str], Policy]:
    """Each workspace's policy from the workspace file (the default for unknown workspaces)."""

    def policy_of(workspace: str) -> Policy:
        config = registry.get(workspace)
        return policy_for(config.policy if config else None)

    return policy_of


def recalculate(
    values: Iterable[bytes],
    registry: WorkspaceRegistry,
    workspaces: Collection[str] | None = None,
    processes: int = 1,
    keep_states: bool = False,
) -> Outcome:
    """The whole pure path in memory (tests, benchmarks)."""
    calc = Recalculation(workspaces)
    calc.add_many(values)
    return calc.finish(policies_from(registry), processes=processes, keep_states=keep_states)


# --- writing the versioned tables -------------------------------------------------------------


class TableWriter(Protocol):
    def prepare(self, version: int, build: str) -> None: ...

    def write(self, table: str, rows: Iterable[list[Any]], progress: Progress) -> None: ...

    def write_arrow(self, table: str, data: Any, progress: Progress) -> None: ...

    def record(self, version: int, event: str, worker_id: str, detail: dict[str, Any]) -> None: ...

    def reader(self) -> SqlReader: ...

    def close(self) -> None: ...


class DirectWriter:
    """Writes with a ClickHouseStore of its own: no worker owns the engine, or a server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = settings.clickhouse_database
        self.store = ClickHouseStore(settings.clickhouse_url, self.database)
        self.store.migrate()
        self.build = ""
        self._numbers: dict[str, int] = {}

    def prepare(self, version: int, build: str) -> None:
        self.build = build
        versions.prepare(self.store, self.database, version, build)

    def _token(self, table: str) -> str:
        number = self._numbers.get(table, 0)
        self._numbers[table] = number + 1
        return f"replay:{self.build}:{table}:{number}"

    def write(self, table: str, rows: Iterable[list[Any]], progress: Progress) -> None:
        columns = columns_of(table)
        batch: list[list[Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= INSERT_ROWS:
                self.store.insert(table, columns, batch, self._token(table), unique=True)
                progress.advance(len(batch))
                batch = []
        if batch:
            self.store.insert(table, columns, batch, self._token(table), unique=True)
            progress.advance(len(batch))

    def write_arrow(self, table: str, data: Any, progress: Progress) -> None:
        """Rows as an Arrow table (columns of `columns_of(table)`, times as epoch-ms ints), cast
        to the table's own types and inserted in batches of ARROW_INSERT_ROWS. A replay's rows
        are unique (`projections.store.UNIQUE_ROWS`), as in `write`."""
        schema = self._arrow_schema(table)
        if schema is None:
            self.write(table, _arrow_rows(data), progress)
            return
        for piece in arrow_inserts(data.select(schema.names)):
            self.store.insert_arrow(table, piece.cast(schema), self._token(table), unique=True)
            progress.advance(piece.num_rows)

    def _arrow_schema(self, table: str) -> Any:
        import pyarrow as pa

        columns = columns_of(table)
        described = self.store.query(f"DESCRIBE TABLE {self.database}.{table}").rows
        types = {str(row[0]): str(row[1]) for row in described}
        fields = [(name, arrow_type(types.get(name, ""))) for name in columns]
        return None if any(t is None for _, t in fields) else pa.schema(fields)

    def record(self, version: int, event: str, worker_id: str, detail: dict[str, Any]) -> None:
        versions.record(self.store, self.database, version, event, worker_id, detail)

    def reader(self) -> SqlReader:
        return self.store

    def close(self) -> None:
        self.store.close()


def _post(url: str, payload: dict[str, Any], timeout_s: float = 120.0) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise ReplayError(f"the worker refused {url} ({exc.code}): {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ReplayError(f"the worker at {url} did not answer: {exc}") from exc


class WorkerWriter:
    """Sends the rows through the replay topic to the worker that owns the embedded engine."""

    def __init__(self, settings: Settings) -> None:
        from projections.store import WorkerQueryClient

        self.settings = settings
        self.url = settings.worker_url
        self.topic = replay_topic(settings)
        self.build = ""
        self._reader = WorkerQueryClient(settings.worker_url, timeout_s=120)

    def prepare(self, version: int, build: str) -> None:
        self.build = build
        _post(f"{self.url}/projections/prepare", {"version": version, "build": build})

    def write(self, table: str, rows: Iterable[list[Any]], progress: Progress) -> None:
        counted = _Counted(rows, progress)
        chunks = encode_chunks(self.build, table, counted)
        append_records(
            self.settings,
            self.topic,
            ((f"{table}:{n}".encode(), chunk) for n, chunk in enumerate(chunks)),
            timeout_s=120.0,
        )

    def write_arrow(self, table: str, data: Any, progress: Progress) -> None:
        self.write(table, _arrow_rows(data), progress)

    def record(self, version: int, event: str, worker_id: str, detail: dict[str, Any]) -> None:
        _post(
            f"{self.url}/projections/record",
            {"version": version, "event": event, "worker_id": worker_id, "detail": detail},
        )

    def reader(self) -> SqlReader:
        return self._reader

    def close(self) -> None:
        pass


def arrow_inserts(data: Any) -> Iterator[Any]:
    """An Arrow table as the pieces to insert: ARROW_INSERT_ROWS rows each, each one chunk (a
    shard's table has one per fetch, which cost ClickHouse more CPU to insert;
    `bench/bench_replay_insert.py`)."""
    for start in range(0, data.num_rows, ARROW_INSERT_ROWS):
        yield data.slice(start, ARROW_INSERT_ROWS).combine_chunks()


def _arrow_rows(data: Any) -> Iterator[list[Any]]:
    """The rows of an Arrow table `_arrow_of` made (times stay epoch-ms ints)."""
    for row in zip(*(column.to_pylist() for column in data.columns), strict=True):
        yield list(row)


class _Counted:
    """An iterable of rows that reports progress as it is consumed."""

    def __init__(self, rows: Iterable[list[Any]], progress: Progress) -> None:
        self.rows = rows
        self.progress = progress

    def __iter__(self) -> Iterator[list[Any]]:
        pending = 0
        for row in self.rows:
            yield row
            pending += 1
            if pending >= 10_000:
                self.progress.advance(pending)
                pending = 0
        if pending:
            self.progress.advance(pending)


def worker_owns_engine(settings: Settings) -> bool:
    from rapport.stack import Stack

    return is_embedded(settings.clickhouse_url) and (
        Stack(settings).worker_running() or _answers(settings.worker_url)
    )


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def writer_for(settings: Settings) -> TableWriter:
    if worker_owns_engine(settings):
        return WorkerWriter(settings)
    return DirectWriter(settings)


def wait_for_rows(
    reader: SqlReader, database: str, expected: dict[str, int], timeout_s: float
) -> dict[str, int]:
    """Poll the tables until each has its expected row count (FINAL); returns the counts."""
    deadline = time.monotonic() + timeout_s
    have: dict[str, int] = {}
    while True:
        for table, want in expected.items():
            if have.get(table) == want:
                continue
            rows = reader.query(f"SELECT count() FROM {database}.{table} FINAL").rows
            have[table] = int(rows[0][0])
        if all(have.get(t) == n for t, n in expected.items()):
            return have
        if time.monotonic() > deadline:
            raise ReplayError(f"ClickHouse has {have} rows, expected {expected}")
        time.sleep(0.5)


# --- the Faust state of the new version -------------------------------------------------------


def changelog_topics(worker_id: str) -> dict[str, str]:
    """The changelog topic of each Faust table of the app `worker_id` (Faust's naming)."""
    return {name: f"{worker_id}-{name}-changelog" for name in ("relationships", "identities")}


def _admin(settings: Settings) -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="rapport-replay")


def _with_admin(settings: Settings, call: Callable[[Any], T], timeout_s: float = 60.0) -> T:
    """Run an admin call, retrying while the group coordinator is not ready (a fresh broker
    creates `__consumer_offsets` on the first group request)."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    while True:
        admin = _admin(settings)
        try:
            return call(admin)
        except KafkaError as exc:
            if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                raise
        finally:
            admin.close()
        time.sleep(0.5)


def group_state(settings: Settings, group: str) -> str:
    """The consumer group's state (Empty, Stable, ...; Dead when it does not exist)."""
    described = _with_admin(settings, lambda admin: admin.describe_groups([group]))
    info: Any = described.get(group) if isinstance(described, dict) else None
    if info is None and isinstance(described, list) and described:
        info = described[0]
    if info is None:
        return "Dead"
    if isinstance(info, dict):
        state = info.get("group_state") or info.get("state")
    else:
        state = getattr(info, "state", None)
    return str(state or "Dead")


def ensure_compacted_topics(
    settings: Settings, names: list[str], *, recreate: bool = False, timeout_s: float = 90.0
) -> None:
    """Compacted topics with the co-partitioned count, each partition with a leader.

    `recreate` deletes them first (a rebuild must not inherit an earlier build's state).
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

    admin = _admin(settings)
    try:
        existing = set(admin.list_topics())
        if recreate:
            doomed = [n for n in names if n in existing]
            if doomed:
                with contextlib.suppress(UnknownTopicOrPartitionError):
                    admin.delete_topics(doomed)
            existing -= set(doomed)
        deadline = time.monotonic() + timeout_s
        todo = [n for n in names if n not in existing]
        while todo:
            topic = todo[0]
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            topic,
                            settings.partitions,
                            settings.replication_factor,
                            topic_configs={"cleanup.policy": "compact"},
                        )
                    ]
                )
                todo.pop(0)
            except TopicAlreadyExistsError:
                if not recreate:
                    todo.pop(0)  # made meanwhile by someone else
                elif time.monotonic() > deadline:
                    raise ReplayError(f"topic {topic} could not be recreated") from None
                else:
                    time.sleep(0.5)  # still being deleted
        while True:  # wait until every partition has a leader
            described = admin.describe_topics(names)
            ready = all(
                len(d.get("partitions") or []) == settings.partitions
                and all(p.get("leader_id", p.get("leader", -1)) >= 0 for p in d["partitions"])
                for d in described
            )
            if ready or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        admin.close()


def _commit(settings: Settings, group: str, offsets: dict[tuple[str, int], int]) -> None:
    from kafka.structs import OffsetAndMetadata, TopicPartition

    wanted = {
        TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in sorted(offsets.items())
    }
    result = _with_admin(settings, lambda admin: admin.alter_group_offsets(group, wanted))
    failed = {tp: err for tp, err in result.items() if getattr(err, "errno", 0)}
    if failed:
        raise ReplayError(f"could not commit offsets of group {group}: {failed}")


def committed(settings: Settings, group: str) -> dict[tuple[str, int], int]:
    found = _with_admin(settings, lambda admin: admin.list_group_offsets({group: None})).get(
        group, {}
    )
    return {(tp.topic, tp.partition): int(om.offset) for tp, om in found.items() if om.offset >= 0}


def current_ends(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    import asyncio

    from streams.archive import end_offsets

    found = asyncio.run(end_offsets(settings.kafka_bootstrap, topics))
    return {(t, p): o for t, parts in found.items() for p, o in parts.items()}


def prepare_worker_state(settings: Settings, version: int) -> tuple[str, dict[str, str]]:
    """Check that no worker of `version` runs, and make its changelog topics afresh (a rebuild
    must not inherit an earlier build's state). Returns its app id and changelog topics."""
    worker_id = versions.worker_id_for(settings.worker_id, version)
    state = group_state(settings, worker_id)
    if state not in ("Empty", "Dead"):
        raise ReplayError(
            f"consumer group {worker_id} is {state}: a worker of version {version} is running; "
            "stop it before rebuilding its version"
        )
    topics = changelog_topics(worker_id)
    ensure_compacted_topics(settings, list(topics.values()), recreate=True)
    return worker_id, topics


def seed_worker_state(
    settings: Settings,
    version: int,
    outcome: Outcome,
    snapshot: Snapshot,
    prepared: tuple[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Table changelogs and consumer offsets of the worker of `version` (not running yet). It
    runs in a thread while the tables are written; `_write` shows its phase.

    The relationship and identity tables hold exactly the replayed states, each record in the
    partition its key has in `rapport.events` (the default partitioner), which is the partition
    the live worker would have written it to. The group's offsets on `rapport.events` are the
    snapshot's ends: the worker of this version continues with the first event the replay did
    not read. Its other topics start at their ends now (what they hold was handled by the worker
    that runs now); `activate` moves them again when that worker has stopped.
    """
    worker_id, topics = prepared or prepare_worker_state(settings, version)
    relationships = outcome.changelog  # those the replay's shards did not produce themselves
    append_records(settings, topics["relationships"], relationships, timeout_s=120)
    identities = ((k.encode(), json.dumps(c).encode()) for k, c in outcome.identities.items())
    append_records(settings, topics["identities"], identities, timeout_s=120)
    others = [
        settings.topic_relationship_events,
        settings.topic_raw,
        settings.topic_deadletters,
        replay_topic(settings),
    ]
    offsets = current_ends(settings, others)
    offsets.update({(snapshot.topic, p): end for p, end in snapshot.ends.items()})
    _commit(settings, worker_id, offsets)
    return {
        "worker_id": worker_id,
        "changelogs": list(topics.values()),
        "relationship_records": len(relationships) + outcome.changelog_produced,
    }


# --- the sharded read and fold (a replay of rapport.events) ------------------------------------


class _Overlap(Exception):
    """The shards' events are not disjoint (an identity or an event id in two of them)."""


def _resolve_contacts(data: Any, contacts: dict[tuple[str, str], str]) -> Any:
    """`_arrow_of` rows whose contact_id is the identity before links (or "" for none), with
    the contact each linked identity resolves to (as `Recalculation.assign` does row by row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if data is None or not contacts:
        return data
    index = data.schema.get_field_index("contact_id")
    identity = data.column(index)
    keys = pc.binary_join_element_wise(data.column("workspace"), identity, "|")
    linked = pa.array([f"{w}|{i}" for w, i in contacts], type=pa.string())
    found = pc.index_in(keys, value_set=linked)
    contact = pc.coalesce(pc.take(pa.array(list(contacts.values()), pa.string()), found), identity)
    return data.set_column(index, "contact_id", contact)


def _arrow_of(rows: list[list[Any]]) -> Any:
    """Interaction rows as one Arrow table (INTERACTION_COLUMNS; strings, and int64 for the
    times, still epoch ms, and the numbers; the writer casts to the table's own types)."""
    import pyarrow as pa

    from projections.schema import INTERACTION_COLUMNS

    if not rows:
        return None
    numbers = {"occurred_at", "received_at", "raw_partition", "raw_offset", "schema_version"}
    types = [pa.int64() if name in numbers else pa.string() for name in INTERACTION_COLUMNS]
    columns = zip(*rows, strict=True)
    return pa.Table.from_arrays(
        [pa.array(c, type=t) for c, t in zip(columns, types, strict=True)],
        names=list(INTERACTION_COLUMNS),
    )


def relationship_arrow(views: list[dict[str, Any]]) -> Any:
    """`relationship_values` of each view as one Arrow table, updated_at 0 (the writer stamps
    it, `_stamped`); times stay epoch-ms ints, the writer casts to the table's types. A shard
    sends its rows this way: Arrow crosses the pipe at the cost of a copy, a dict per view
    costs the parent more to unpickle and turn into rows than the shard to build."""
    import pyarrow as pa

    types = _relationship_arrow_types()
    rows = [relationship_values(view, 0) for view in views]
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in types]
    return pa.Table.from_arrays(
        [pa.array(c, type=t) for c, t in zip(columns, types.values(), strict=True)],
        names=list(types),
    )


@functools.cache
def _relationship_arrow_types() -> dict[str, Any]:
    import pyarrow as pa

    from projections.schema import RELATIONSHIP_COLUMNS, RELATIONSHIP_TIME_COLUMNS

    special = {
        "workspace": pa.string(), "contact_id": pa.string(), "last_platform": pa.string(),
        "stage": pa.string(), "policy_version": pa.string(), "ask_only": pa.bool_(),
        "qualified_at": pa.list_(pa.int64()), "platforms": pa.list_(pa.string()),
        "members": pa.list_(pa.string()), "updated_at": pa.int64(),
    }  # fmt: skip
    whole = {"interactions", "our_replies", "their_replies", "qualified_conversations",
             "platform_moves", "late_events", "revision"}  # fmt: skip
    return {
        name: special.get(name)
        or (pa.int64() if name in RELATIONSHIP_TIME_COLUMNS or name in whole else pa.float64())
        for name in RELATIONSHIP_COLUMNS
    }


def _stamped(data: Any, updated_at_ms: int) -> Any:
    """`relationship_arrow` rows with their updated_at."""
    import pyarrow as pa

    index = data.schema.get_field_index("updated_at")
    stamp = pa.array([updated_at_ms] * data.num_rows, type=pa.int64())
    return data.set_column(index, "updated_at", stamp)


def shared_memory_dir() -> str:
    """Where the shards leave their Arrow streams for the parent: shared memory (`/dev/shm`)
    where the system has it, the temp directory otherwise."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


def _send_arrow(conn: Any, tag: str, data: Any, *rest: Any, spool: str | None = None) -> None:
    """A message whose second item is an Arrow table (or None). The table goes as an Arrow IPC
    stream: written to a file in `spool` (shared memory), which the parent maps and reads in
    place, or, without a spool or when that file cannot be written (shared memory full), in a
    message of its own through the pipe. Pickling cost both processes about twice the CPU of
    the pipe, and the pipe 1.2-2x that of the file (`bench/bench_replay_parts.py`, `to the
    parent`)."""
    import pyarrow as pa

    if data is None:
        conn.send((tag, None, *rest))
        return
    if spool is not None:
        path = os.path.join(spool, f"{tag}-{os.getpid()}.arrow")
        try:
            with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, data.schema) as writer:
                writer.write_table(data)
        except OSError as error:
            log.warning("replay shard: %s not written (%s), the pipe takes the table", path, error)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        else:
            conn.send((tag, path, *rest))
            return
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write_table(data)
    buffer = sink.getvalue()
    conn.send((tag, buffer.size, *rest))
    conn.send_bytes(buffer)


def _with_arrow(conn: Any, message: Any) -> Any:
    """The message `_send_arrow` sent, its table read in place (from the mapped file, which is
    removed, or from the stream that followed in the pipe)."""
    import pyarrow as pa

    where = message[1]
    if where is None:
        return message
    if isinstance(where, str):
        data = pa.ipc.open_stream(pa.memory_map(where)).read_all()
        os.unlink(where)  # the mapping stays until the table is gone
    else:
        data = pa.ipc.open_stream(pa.py_buffer(conn.recv_bytes())).read_all()
    return (message[0], data, *message[2:])


def _shard_main(
    conn: Any,
    settings: Settings,
    snapshot: Snapshot,
    workspaces: Collection[str] | None,
    policy_of: Callable[[str], Policy],
    read: Any,
    folded: Any,
    spool: str,
) -> None:
    """One forked shard: read its partitions, then (told the final identity map) send its
    interaction rows as Arrow, hand over the relationships other shards share, fold the rest."""
    import traceback

    try:
        import pyarrow as pa

        calc = Recalculation(workspaces, flat_rows=True)
        add = calc.add
        parts: list[Any] = []

        def handle(batch: list[tuple[bytes | None, bytes]]) -> None:
            for _, value in batch:
                add(value)
            read.value += len(batch)
            # Rows to Arrow as they come (meanwhile the broker serves the next fetch).
            made = _arrow_of(calc.take_rows())
            if made is not None:
                parts.append(made)

        read_log(settings, snapshot, handle)
        conn.send(("read", calc.summary()))
        message = conn.recv()
        if message[0] != "go":
            return
        contacts, shared, changelog_topic = message[1], message[2], message[3]
        _, groups = calc.assign(contacts)
        data = _resolve_contacts(pa.concat_tables(parts), contacts) if parts else None
        parts.clear()
        _send_arrow(conn, "rows", data, 0 if data is None else data.num_rows, spool=spool)
        del data
        conn.send(("shared", {key: groups.pop(key) for key in shared if key in groups}))
        jobs, policies = _jobs_of(groups, policy_of)
        del groups
        views: list[tuple[str, dict[str, Any]]] = []
        changelog: list[tuple[bytes, bytes]] = []
        for start in range(0, len(jobs), 500):
            part = jobs[start : start + 500]
            more = _fold_jobs(part, policies, False)
            views += more[0]
            changelog += more[1]
            folded.value += sum(len(j[2]) for j in part)
        table = relationship_arrow([view for _, view in views])
        del views
        produced = 0
        if changelog_topic is not None:  # the worker state: this shard's records, from here
            append_records(settings, changelog_topic, changelog, timeout_s=120)
            produced, changelog = len(changelog), []
        _send_arrow(conn, "folded", table, changelog, sorted(policies), produced, spool=spool)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
        raise
    finally:
        conn.close()


def _partition_shares(snapshot: Snapshot, parts: int) -> list[Snapshot]:
    """The snapshot's non-empty partitions in `parts` shares of about equal size."""
    sizes = {p: end - snapshot.begins.get(p, 0) for p, end in snapshot.ends.items()}
    chosen: list[dict[int, int]] = [{} for _ in range(parts)]
    loads = [0] * parts
    for p in sorted((p for p in sizes if sizes[p] > 0), key=lambda p: (-sizes[p], p)):
        least = loads.index(min(loads))
        chosen[least][p] = snapshot.ends[p]
        loads[least] += sizes[p]
    return [
        Snapshot(snapshot.topic, ends, {p: snapshot.begins.get(p, 0) for p in ends})
        for ends in chosen
        if ends
    ]


class _Shards:
    """A replay of the log read and folded by forked processes, each owning some partitions.

    rapport.events is keyed by (workspace, identity), so every event of an identity is in one
    partition and each shard holds whole identities: it reads and decodes its partitions, and
    once the parent has merged every shard's identity links into the final identity map, it
    sends its interaction rows (with their contacts, as Arrow), hands over the touches of the
    relationships whose identities other shards hold too (an identity linked to a contact in
    another partition; the parent folds those), and folds the rest. The parent only inserts and
    merges. If two shards hold the same identity or the same event id (the topic's partition
    count changed), `_Overlap` is raised and the caller replays in one process instead.
    """

    def __init__(
        self,
        settings: Settings,
        snapshot: Snapshot,
        workspaces: Collection[str] | None,
        policy_of: Callable[[str], Policy],
        parts: int,
    ) -> None:
        import multiprocessing

        import pyarrow as pa
        import pyarrow.compute  # imported once here, not in every shard

        # pyarrow imports pandas (a chdb dependency) on its first conversion of a list: here,
        # before forking, so the shards do not each import it again (0.4 s of CPU each).
        pa.array([0])

        context = multiprocessing.get_context("fork")
        self.spool = tempfile.mkdtemp(prefix="rapport-replay-", dir=shared_memory_dir())
        self.policy_of = policy_of
        self.conns: list[Any] = []
        self.procs: list[Any] = []
        self.read: list[Any] = []
        self.folded: list[Any] = []
        self.summaries: list[dict[str, Any]] = []
        for share in _partition_shares(snapshot, parts):
            mine, theirs = context.Pipe()
            read, folded = context.RawValue("q", 0), context.RawValue("q", 0)
            proc = context.Process(
                target=_shard_main,
                args=(theirs, settings, share, workspaces, policy_of, read, folded, self.spool),
                name="rapport-replay-shard",
                daemon=True,
            )
            proc.start()
            theirs.close()
            self.conns.append(mine)
            self.procs.append(proc)
            self.read.append(read)
            self.folded.append(folded)

    def _recv(self, n: int) -> Any:
        try:
            message = self.conns[n].recv()
        except EOFError:
            raise ReplayError(
                f"replay shard {n} exited ({self.procs[n].exitcode}) without answering"
            ) from None
        if message[0] == "error":
            raise ReplayError(f"replay shard {n} failed:\n{message[1]}")
        return message

    def _recv_arrow(self, n: int) -> Any:
        """A message `_send_arrow` sent, with its table."""
        try:
            return _with_arrow(self.conns[n], self._recv(n))
        except EOFError:
            raise ReplayError(
                f"replay shard {n} exited ({self.procs[n].exitcode}) while sending its rows"
            ) from None

    def _poll(self, counters: list[Any], progress: Progress, done: int) -> int:
        now = int(sum(c.value for c in counters))
        if now > done:
            progress.advance(now - done)
        return max(now, done)

    def read_all(self, progress: Progress) -> None:
        """Wait until every shard has read its partitions (progress: events read)."""
        from multiprocessing.connection import wait

        done = 0
        pending = set(range(len(self.conns)))
        got: dict[int, dict[str, Any]] = {}
        while pending:
            ready = wait([self.conns[n] for n in pending], timeout=0.2)
            done = self._poll(self.read, progress, done)
            for conn in ready:
                n = self.conns.index(conn)
                got[n] = self._recv(n)[1]
                pending.discard(n)
        self._poll(self.read, progress, done)
        self.summaries = [got[n] for n in range(len(self.conns))]

    def identity_map(self) -> tuple[dict[tuple[str, str], str], list[set[tuple[str, str]]]]:
        """The final identity map over every shard's links, and per shard the relationships
        whose identities other shards hold too. `_Overlap` when the shards are not disjoint."""
        links: dict[tuple[str, str], tuple[tuple[int, str], str | None]] = {}
        for summary in self.summaries:
            for key, (order, contact) in summary["link_orders"].items():
                found = links.get(key)
                if found is None or order > found[0]:
                    links[key] = (order, contact)
        contacts = {key: contact for key, (_, contact) in links.items() if contact}
        seen_ids: set[int] = set()
        seen_identities: set[tuple[str, str]] = set()
        holders: dict[tuple[str, str], set[int]] = {}
        for n, summary in enumerate(self.summaries):
            ids = summary["ids"]
            if not seen_ids.isdisjoint(ids):
                raise _Overlap("an event id in two shards")
            seen_ids.update(ids)
            identities = summary["identities"]
            if not seen_identities.isdisjoint(identities):
                raise _Overlap("an identity in two shards")
            seen_identities.update(identities)
            for workspace, identity in identities:
                contact = contacts.get((workspace, identity), identity)
                holders.setdefault((workspace, contact), set()).add(n)
        shared = [set() for _ in self.summaries]  # type: list[set[tuple[str, str]]]
        for key, where in holders.items():
            if len(where) > 1:
                for n in where:
                    shared[n].add(key)
        return contacts, shared

    def total(self, name: str) -> int:
        return sum(int(s[name]) for s in self.summaries)

    def go(
        self,
        contacts: dict[tuple[str, str], str],
        shared: list[set[tuple[str, str]]],
        changelog_topic: str | None,
    ) -> None:
        for conn, mine in zip(self.conns, shared, strict=True):
            conn.send(("go", contacts, mine, changelog_topic))

    def rows(self) -> list[tuple[Any, int]]:
        """Every shard's interaction rows (Arrow tables or None, and their count)."""
        return [self._recv_arrow(n)[1:] for n in range(len(self.conns))]

    def shared(self) -> dict[tuple[str, str], list[list[Touch]]]:
        merged: dict[tuple[str, str], list[list[Touch]]] = {}
        for n in range(len(self.conns)):
            for key, lists in self._recv(n)[1].items():
                merged.setdefault(key, []).extend(lists)
        return merged

    def folded_all(
        self, progress: Progress, done: int
    ) -> tuple[list[Any], list[tuple[bytes, bytes]], set[str], int]:
        """Every shard's relationship rows (Arrow), table records (those it did not produce
        itself), workspaces, and how many records the shards produced."""
        from multiprocessing.connection import wait

        tables: list[Any] = []
        changelog: list[tuple[bytes, bytes]] = []
        workspaces: set[str] = set()
        produced = 0
        pending = set(range(len(self.conns)))
        while pending:
            ready = wait([self.conns[n] for n in pending], timeout=0.2)
            done = self._poll(self.folded, progress, done)
            for conn in ready:
                n = self.conns.index(conn)
                _, table, more_changelog, names, more_produced = self._recv_arrow(n)
                if table.num_rows:
                    tables.append(table)
                changelog += more_changelog
                produced += more_produced
                workspaces.update(names)
                pending.discard(n)
        self._poll(self.folded, progress, done)
        return tables, changelog, workspaces, produced

    def run(
        self,
        policy_of: Callable[[str], Policy],
        write: Callable[[str, Any], None],
        int_table: str,
        progress: Progress,
        changelog_topic: str | None = None,
    ) -> tuple[Outcome, int]:
        """After `read_all`: the identity map to the shards, their interaction rows to `write`
        (called with `int_table` and each Arrow table while the shards fold), the shared
        relationships folded here, the shards' folds merged. Returns the outcome (no
        `interaction_rows`: they were written) and how many rows were written."""
        contacts, shared = self.identity_map()
        self.go(contacts, shared, changelog_topic)
        tables = self.rows()
        handed = self.shared()
        count = sum(n for _, n in tables)
        # The shards fold meanwhile: the interactions do not depend on the fold.
        progress.phase("writing " + int_table, count)
        for data, _ in tables:
            if data is not None:
                write(int_table, data)
        del tables
        progress.phase("folding", self.total("touches"))
        done = 0
        views: list[tuple[str, dict[str, Any]]] = []
        changelog: list[tuple[bytes, bytes]] = []
        names: set[str] = set()
        if handed:  # relationships whose identities are in several shards: folded here
            jobs, policies = _jobs_of(handed, policy_of)
            views, changelog, _ = _fold_jobs(jobs, policies, False)
            names.update(policies)
            done = sum(len(j[2]) for j in jobs)
            progress.advance(done)
        tables, more_changelog, more_names, produced = self.folded_all(progress, done)
        changelog += more_changelog
        names.update(more_names)
        changelog.sort()
        outcome = Outcome(
            views=dict(sorted(views)),
            relationship_tables=tables,
            changelog_produced=produced,
            changelog=changelog,
            policies={w: policy_of(w) for w in sorted(names)},
            identities={f"{w}|{i}": c for (w, i), c in contacts.items()},
            interaction_rows=[],
            events=self.total("events"),
            interactions=self.total("interactions"),
            duplicates=self.total("duplicates"),
            links=self.total("links"),
            invalid=self.total("invalid"),
        )
        return outcome, count

    def close(self) -> None:
        """Stop the shards (told to stop, or terminated when they do not) and reap them."""
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
            conn.close()
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.spool)  # with the tables of a failed run, unread


# --- the replay -------------------------------------------------------------------------------


@dataclass
class ReplayResult:
    version: int
    build: str
    source: str
    events: int
    interactions: int
    duplicates: int
    links: int
    relationships: int
    seconds: float
    through_worker: bool
    seeded: bool
    snapshot: dict[str, Any] | None
    tables: dict[str, int]


def next_version(settings: Settings, reader: SqlReader | None = None) -> int:
    """One more than every version known here (tables, the log, the running one)."""
    known = {versions.active_version(settings)}
    if reader is not None:
        rows = reader.query(
            "SELECT name, comment FROM system.tables WHERE database = {db:String}",
            {"db": settings.clickhouse_database},
        ).rows
        for name, comment in rows:
            found = versions.VERSIONED_TABLE.match(str(name))
            if found:
                known.add(int(found.group(2)))
            parsed = versions.parse_comment(str(comment or ""))
            if parsed:
                known.add(parsed[0])
    return max(known) + 1


def replay(
    settings: Settings,
    registry: WorkspaceRegistry,
    version: int,
    source: Path | None = None,
    workspaces: Collection[str] | None = None,
    progress: Progress | None = None,
    timeout_s: float = 600.0,
) -> ReplayResult:
    """Recalculate the log (or an archive) into projection version `version`."""
    progress = progress or NoProgress()
    if version < 1:
        raise ReplayError("versions are numbered from 1")
    running = versions.active_version(settings)
    if version == running:
        raise ReplayError(
            f"version {version} is the version the worker runs; replay into another one "
            f"(e.g. --to-version {running + 1})"
        )
    build = uuid.uuid4().hex[:12]
    # Millions of long-lived objects and no cycles: the cyclic collector would walk them all,
    # again and again, for nothing (it doubled the time of a 500,000-event replay).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _replay(settings, registry, version, source, workspaces, progress, timeout_s, build)
    finally:
        if collecting:
            gc.enable()


def _replay(
    settings: Settings,
    registry: WorkspaceRegistry,
    version: int,
    source: Path | None,
    workspaces: Collection[str] | None,
    progress: Progress,
    timeout_s: float,
    build: str,
) -> ReplayResult:
    started = time.perf_counter()
    snapshot: Snapshot | None = None
    policy_of = policies_from(registry)
    if source is not None:
        progress.phase(f"reading {source.name}", archive_size(source))
        calc = Recalculation(workspaces)
        for batch in read_archive(source):
            for _, value in batch:
                calc.add(value)
            progress.advance(len(batch))
        outcome = calc.finish(policy_of, progress, processes=fold_parallelism())
        return _write(settings, version, build, outcome, None, workspaces, source, progress,
                      timeout_s, started)  # fmt: skip
    snapshot = take_snapshot(settings)
    parts = fold_parallelism()
    if parts > 1 and len(_partition_shares(snapshot, parts)) > 1:
        writer: TableWriter | None = None
        preparing: _Background | None = None
        shards = _Shards(settings, snapshot, workspaces, policy_of, parts)
        try:
            progress.phase("reading rapport.events", snapshot.total)
            if not workspaces:  # the worker state's topics, made while the shards read
                preparing = _Background(prepare_worker_state, settings, version)
            # The parent waits for the shards meanwhile: it opens the tables.
            writer = writer_for(settings)
            writer.prepare(version, build)
            shards.read_all(progress)
            # The shards produce their relationships' table records themselves, once the
            # worker state's topics exist (made while they read).
            making_topics, preparing = preparing, None
            topic = None if making_topics is None else making_topics.result()[1]["relationships"]
            try:
                sink = writer
                outcome, count = shards.run(
                    policy_of,
                    lambda table, data: sink.write_arrow(table, data, progress),
                    versions.versioned_table("interactions", version),
                    progress,
                    changelog_topic=topic,
                )
            except _Overlap:
                shards.close()
                writer.close()
                writer = None
                return _replay_one(settings, snapshot, workspaces, policy_of, version, build,
                                   progress, timeout_s, started)  # fmt: skip
            return _write(settings, version, build, outcome, snapshot, workspaces, None,
                          progress, timeout_s, started, writer=writer,
                          interactions_written=count, preparing=making_topics)  # fmt: skip
        except BaseException as exc:
            if preparing is not None:  # never leave it running; never lose its error
                try:
                    preparing.result()
                except BaseException as also:
                    exc.add_note(f"the worker state failed too: {also!r}")
            raise
        finally:
            shards.close()
            if writer is not None:
                writer.close()
    return _replay_one(settings, snapshot, workspaces, policy_of, version, build, progress,
                       timeout_s, started)  # fmt: skip


def _replay_one(
    settings: Settings,
    snapshot: Snapshot,
    workspaces: Collection[str] | None,
    policy_of: Callable[[str], Policy],
    version: int,
    build: str,
    progress: Progress,
    timeout_s: float,
    started: float,
) -> ReplayResult:
    """The log read by this process alone (one core, or shards that are not disjoint)."""
    calc = Recalculation(workspaces)
    progress.phase("reading rapport.events", snapshot.total)

    def handle(batch: list[tuple[bytes | None, bytes]]) -> None:
        for _, value in batch:
            calc.add(value)
        progress.advance(len(batch))

    read_log(settings, snapshot, handle)
    outcome = calc.finish(policy_of, progress, processes=fold_parallelism())
    return _write(settings, version, build, outcome, snapshot, workspaces, None, progress,
                  timeout_s, started)  # fmt: skip


def _write(
    settings: Settings,
    version: int,
    build: str,
    outcome: Outcome,
    snapshot: Snapshot | None,
    workspaces: Collection[str] | None,
    source: Path | None,
    progress: Progress,
    timeout_s: float,
    started: float,
    writer: TableWriter | None = None,
    interactions_written: int | None = None,
    preparing: _Background | None = None,
) -> ReplayResult:
    """Write the versioned tables (the interactions unless already written), the worker state
    of the version (in a thread, while ClickHouse writes) and the build record."""
    owned = writer is None
    if writer is None:
        writer = writer_for(settings)
        writer.prepare(version, build)
    seeded = snapshot is not None and not workspaces
    seeding: _Background | None = None
    try:
        now_ms = epoch_ms(datetime.now(UTC))
        rel_table = versions.versioned_table("relationships", version)
        int_table = versions.versioned_table("interactions", version)
        if seeded:
            assert snapshot is not None

            def seed() -> dict[str, Any]:
                prepared = preparing.result() if preparing is not None else None
                return seed_worker_state(settings, version, outcome, snapshot, prepared)

            seeding, preparing = _Background(seed), None
        progress.phase("writing " + rel_table, outcome.relationships)
        if outcome.views:
            writer.write(rel_table, outcome.relationship_rows(now_ms), progress)
        for data in outcome.relationship_tables:
            writer.write_arrow(rel_table, _stamped(data, now_ms), progress)
        interactions = interactions_written
        if interactions is None:
            interactions = len(outcome.interaction_rows)
            progress.phase("writing " + int_table, interactions)
            writer.write(int_table, outcome.interaction_rows, progress)
        progress.phase("waiting for ClickHouse", None)
        tables = wait_for_rows(
            writer.reader(),
            settings.clickhouse_database,
            {rel_table: outcome.relationships, int_table: interactions},
            timeout_s,
        )
        detail: dict[str, Any] = {
            "build": build,
            "source": "kafka" if source is None else str(source),
            "workspaces": sorted(workspaces) if workspaces else None,
            "events": outcome.events,
            "relationships": outcome.relationships,
            "interactions": interactions,
            "policies": {w: p.version for w, p in sorted(outcome.policies.items())},
            "snapshot": snapshot.to_json() if snapshot else None,
            "seeded": seeded,
        }
        if seeding is not None:
            produced = outcome.changelog_produced  # by the shards, while they folded
            remaining = len(outcome.changelog) + len(outcome.identities)
            progress.phase("worker state", produced + remaining)
            progress.advance(produced)
            detail.update(seeding.result())
            progress.advance(remaining)
            seeding = None
        writer.record(version, "built", versions.worker_id_for(settings.worker_id, version), detail)
    except BaseException as exc:
        for running in (seeding, preparing):  # never leave it producing; never lose its error
            if running is not None:
                try:
                    running.result()
                except BaseException as also:
                    exc.add_note(f"the worker state failed too: {also!r}")
        raise
    finally:
        if owned:
            writer.close()
    return ReplayResult(
        version=version,
        build=build,
        source="kafka" if source is None else str(source),
        events=outcome.events,
        interactions=outcome.interactions,
        duplicates=outcome.duplicates,
        links=outcome.links,
        relationships=outcome.relationships,
        seconds=time.perf_counter() - started,
        through_worker=isinstance(writer, WorkerWriter),
        seeded=seeded,
        snapshot=snapshot.to_json() if snapshot else None,
        tables=tables,
    )


class _Background:
    """A call in a thread of its own; `result()` joins it and raises what it raised."""

    def __init__(self, call: Callable[..., T], *args: Any) -> None:
        import threading

        self._out: dict[str, Any] = {}

        def run() -> None:
            try:
                self._out["value"] = call(*args)
            except BaseException as exc:
                self._out["error"] = exc

        self._thread = threading.Thread(target=run, name="rapport-replay-state", daemon=True)
        self._thread.start()

    def result(self) -> Any:
        self._thread.join()
        if "error" in self._out:
            raise self._out["error"]
        return self._out.get("value")


# --- activation (the swap) --------------------------------------------------------------------


def _history(settings: Settings) -> list[dict[str, Any]]:
    from rapport.stack import open_reader

    reader = open_reader(settings)
    try:
        exists = reader.query(
            f"EXISTS TABLE {settings.clickhouse_database}.{versions.LOG_TABLE}"
        ).rows
        if not exists or not int(exists[0][0]):
            return []
        return reader.query(
            f"SELECT version, event, worker_id, detail FROM {settings.clickhouse_database}."
            f"{versions.LOG_TABLE} ORDER BY at"
        ).dicts()
    finally:
        if isinstance(reader, ClickHouseStore):
            reader.close()


def _tables(settings: Settings) -> dict[str, tuple[int, str | None]]:
    from rapport.stack import open_reader

    reader = open_reader(settings)
    try:
        rows = reader.query(
            "SELECT name, comment FROM system.tables WHERE database = {db:String}",
            {"db": settings.clickhouse_database},
        ).rows
    finally:
        if isinstance(reader, ClickHouseStore):
            reader.close()
    out = {}
    for name, comment in rows:
        name = str(name)
        if name in versions.PROJECTED or versions.VERSIONED_TABLE.match(name):
            parsed = versions.parse_comment(str(comment or ""))
            if parsed is None:
                found = versions.VERSIONED_TABLE.match(name)
                parsed = (int(found.group(2)) if found else 1, None)
            out[name] = parsed
    return out


def check_activatable(settings: Settings, version: int) -> None:
    """Refuse versions that are not built completely, or were built without a worker state."""
    tables = _tables(settings)
    if tables.get("relationships", (1, None))[0] == version:
        return  # already active: the activation only makes sure its worker runs
    name = versions.versioned_table("relationships", version)
    if name not in tables or tables[name][0] != version:
        raise ReplayError(f"version {version} is not built; run rapport replay --to-version N")
    build = tables[name][1]
    if build is None:
        return  # a version that ran before (its worker's state and offsets are its own)
    for row in _history(settings):
        detail = json.loads(row["detail"] or "{}")
        mine = int(row["version"]) == version and detail.get("build") == build
        if mine and row["event"] == "built":
            if not detail.get("seeded"):
                raise ReplayError(
                    f"version {version} was built from an archive or for some workspaces only: "
                    "it has no worker state and cannot be activated; replay the log into it"
                )
            return
    raise ReplayError(f"version {version} (build {build}) did not finish building; replay again")


@dataclass
class Activation:
    version: int
    previous: int
    worker_restarted: bool
    offsets: dict[str, int]
    seconds: float


def activate(settings: Settings, version: int, progress: Progress | None = None) -> Activation:
    """Make `version` the one readers see and the worker runs (docs/replay.md, "swap")."""
    from rapport.process import stop_pid_file
    from rapport.stack import Stack

    progress = progress or NoProgress()
    started = time.perf_counter()
    stack = Stack(settings)
    managed = stack.worker_running()
    if not managed and _answers(settings.worker_url):
        raise ReplayError(
            f"a worker answers at {settings.worker_url} but was not started by `rapport up`: "
            f"stop it, run this again, then start it with RAPPORT_PROJECTION_VERSION={version}"
        )
    check_activatable(settings, version)
    previous = versions.active_version(settings)
    new_group = versions.worker_id_for(settings.worker_id, version)
    old_group = versions.worker_id_for(settings.worker_id, previous)
    if managed:
        progress.phase(f"stopping the worker of version {previous}", None)
        stop_pid_file(settings.run_dir / "worker.pid", timeout_s=60.0)
    moved: dict[tuple[str, int], int] = {}
    if new_group != old_group:
        # Raw envelopes and dead letters: continue where the worker that ran stopped. Replay
        # records: only what is produced from now on (never another version's rows).
        handed = committed(settings, old_group)
        for (topic, partition), offset in handed.items():
            if topic in (settings.topic_raw, settings.topic_deadletters):
                moved[(topic, partition)] = offset
        moved.update(current_ends(settings, [replay_topic(settings)]))
        if group_state(settings, new_group) not in ("Empty", "Dead"):
            raise ReplayError(f"consumer group {new_group} is active: is a worker running?")
        _commit(settings, new_group, moved)
    versions.persist_version(settings, version, previous)
    if managed:
        progress.phase(f"starting the worker of version {version}", None)
        stack.start_services()
        answer = _post(f"{settings.worker_url}/projections/swap", {"version": version}, 300)
        previous = int(answer.get("previous") or previous)
    else:
        progress.phase("exchanging tables", None)
        store = ClickHouseStore(settings.clickhouse_url, settings.clickhouse_database)
        try:
            store.migrate()
            versions.ensure_active(store, settings.clickhouse_database, version, new_group)
        finally:
            store.close()
    return Activation(
        version=version,
        previous=previous,
        worker_restarted=managed,
        offsets={f"{t}:{p}": o for (t, p), o in sorted(moved.items())},
        seconds=time.perf_counter() - started,
    )
