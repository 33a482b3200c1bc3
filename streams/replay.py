"""Replay: recalculate every projection from the event log into a new projection version.

    rapport.events (snapshot: end offsets now) or an archive
        -> Recalculation (pure): final identity map, events grouped by (workspace, contact),
           sorted by (occurred_at, event_id), folded with `apply_all` and each workspace's policy
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
import gc
import json
import time
import urllib.error
import urllib.request
import uuid
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
    apply_all,
    relationship_key,
    touch_of,
    view_row,
)
from projections.store import ClickHouseStore, SqlReader, is_embedded
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
INSERT_ROWS = 100_000
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
        fresh = RelationshipState(workspace=workspace, contact_id=contact)
        state = apply_all(fresh, touches, policy)
        key = relationship_key(workspace, contact)
        views.append((key, view_row(state, policy)))
        changelog.append(
            (key.encode(), json.dumps(state.to_dict(), separators=(",", ":")).encode())
        )
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
    import os

    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


class Recalculation:
    """Collects a log's events (`add`), then folds them in the exact order (`finish`). Pure.

    Interactions are kept per (workspace, contact identity) until the final identity map is
    known: the last `identity.linked` / `identity.unlinked` of an identity by (occurred_at,
    event_id) decides the contact its whole history counts for. Duplicates (same event_id)
    count once, the first one read.
    """

    def __init__(self, workspaces: Collection[str] | None = None) -> None:
        self.only = frozenset(workspaces) if workspaces else None
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
            key: tuple[str, str | None] = (workspace, f"{contact.platform}:{contact.user_id}")
            bucket = self._by_identity.get(key)
            if bucket is None:
                bucket = self._by_identity[key] = _Identity()
            at = epoch_ms(d.occurred_at)  # type: ignore[arg-type]
            bucket.touches.append(touch_of_doc(d, at))
            bucket.rows.append(row_of_doc(d, "", at))
            return
        key = (workspace, None)
        bucket = self._by_identity.get(key)
        if bucket is None:
            bucket = self._by_identity[key] = _Identity()
        bucket.rows.append(row_of_doc(d, ""))

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
            bucket = self._by_identity[(event.workspace, identity)] = _Identity()
        if identity is not None:
            bucket.touches.append(touch_of(event))
        bucket.rows.append(interaction_values_of(event, ""))

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
        groups: dict[tuple[str, str], list[list[Touch]]] = {}
        rows: list[list[Any]] = []
        for (workspace, identity), bucket in self._by_identity.items():
            if identity is None:
                rows.extend(bucket.rows)  # no contact: contact_id stays ""
                continue
            contact = contacts.get((workspace, identity), identity)
            for row in bucket.rows:
                row[2] = contact
            rows.extend(bucket.rows)
            if bucket.touches:
                groups.setdefault((workspace, contact), []).append(bucket.touches)
        self._by_identity = {}
        policies: dict[str, Policy] = {}
        jobs: list[Job] = []
        for (workspace, contact), lists in groups.items():
            touches = lists[0] if len(lists) == 1 else [t for part in lists for t in part]
            touches.sort(key=_order)
            if workspace not in policies:
                policies[workspace] = policy_of(workspace)
            jobs.append((workspace, contact, touches))
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

    def prepare(self, version: int, build: str) -> None:
        self.build = build
        versions.prepare(self.store, self.database, version, build)

    def write(self, table: str, rows: Iterable[list[Any]], progress: Progress) -> None:
        columns = columns_of(table)
        batch: list[list[Any]] = []
        number = 0
        for row in rows:
            batch.append(row)
            if len(batch) >= INSERT_ROWS:
                self.store.insert(table, columns, batch, f"replay:{self.build}:{table}:{number}")
                progress.advance(len(batch))
                batch, number = [], number + 1
        if batch:
            self.store.insert(table, columns, batch, f"replay:{self.build}:{table}:{number}")
            progress.advance(len(batch))

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

    def record(self, version: int, event: str, worker_id: str, detail: dict[str, Any]) -> None:
        _post(
            f"{self.url}/projections/record",
            {"version": version, "event": event, "worker_id": worker_id, "detail": detail},
        )

    def reader(self) -> SqlReader:
        return self._reader

    def close(self) -> None:
        pass


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


def seed_worker_state(
    settings: Settings, version: int, outcome: Outcome, snapshot: Snapshot, progress: Progress
) -> dict[str, Any]:
    """Table changelogs and consumer offsets of the worker of `version` (not running yet).

    The relationship and identity tables hold exactly the replayed states, each record in the
    partition its key has in `rapport.events` (the default partitioner), which is the partition
    the live worker would have written it to. The group's offsets on `rapport.events` are the
    snapshot's ends: the worker of this version continues with the first event the replay did
    not read. Its other topics start at their ends now (what they hold was handled by the worker
    that runs now); `activate` moves them again when that worker has stopped.
    """
    worker_id = versions.worker_id_for(settings.worker_id, version)
    state = group_state(settings, worker_id)
    if state not in ("Empty", "Dead"):
        raise ReplayError(
            f"consumer group {worker_id} is {state}: a worker of version {version} is running; "
            "stop it before rebuilding its version"
        )
    topics = changelog_topics(worker_id)
    ensure_compacted_topics(settings, list(topics.values()), recreate=True)
    progress.phase("worker state", len(outcome.changelog) + len(outcome.identities))
    relationships = outcome.changelog
    append_records(
        settings, topics["relationships"], relationships, timeout_s=120, progress=progress.advance
    )
    identities = ((k.encode(), json.dumps(c).encode()) for k, c in outcome.identities.items())
    append_records(
        settings, topics["identities"], identities, timeout_s=120, progress=progress.advance
    )
    others = [
        settings.topic_relationship_events,
        settings.topic_raw,
        settings.topic_relationships,
        settings.topic_deadletters,
        replay_topic(settings),
    ]
    offsets = current_ends(settings, others)
    offsets.update({(snapshot.topic, p): end for p, end in snapshot.ends.items()})
    _commit(settings, worker_id, offsets)
    return {"worker_id": worker_id, "changelogs": list(topics.values())}


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
    calc = Recalculation(workspaces)
    snapshot: Snapshot | None = None
    if source is None:
        snapshot = take_snapshot(settings)
        progress.phase("reading rapport.events", snapshot.total)

        def handle(batch: list[tuple[bytes | None, bytes]]) -> None:
            for _, value in batch:
                calc.add(value)
            progress.advance(len(batch))

        read_log(settings, snapshot, handle)
    else:
        progress.phase(f"reading {source.name}", archive_size(source))
        for batch in read_archive(source):
            for _, value in batch:
                calc.add(value)
            progress.advance(len(batch))
    outcome = calc.finish(policies_from(registry), progress, processes=fold_parallelism())

    writer = writer_for(settings)
    try:
        writer.prepare(version, build)
        now_ms = epoch_ms(datetime.now(UTC))
        rel_table = versions.versioned_table("relationships", version)
        int_table = versions.versioned_table("interactions", version)
        progress.phase("writing " + rel_table, len(outcome.views))
        writer.write(rel_table, outcome.relationship_rows(now_ms), progress)
        progress.phase("writing " + int_table, len(outcome.interaction_rows))
        writer.write(int_table, outcome.interaction_rows, progress)
        progress.phase("waiting for ClickHouse", None)
        tables = wait_for_rows(
            writer.reader(),
            settings.clickhouse_database,
            {rel_table: len(outcome.views), int_table: len(outcome.interaction_rows)},
            timeout_s,
        )
        seeded = snapshot is not None and not workspaces
        detail: dict[str, Any] = {
            "build": build,
            "source": "kafka" if source is None else str(source),
            "workspaces": sorted(workspaces) if workspaces else None,
            "events": outcome.events,
            "relationships": len(outcome.views),
            "interactions": len(outcome.interaction_rows),
            "policies": {w: p.version for w, p in sorted(outcome.policies.items())},
            "snapshot": snapshot.to_json() if snapshot else None,
            "seeded": seeded,
        }
        if seeded:
            assert snapshot is not None
            detail.update(seed_worker_state(settings, version, outcome, snapshot, progress))
        writer.record(version, "built", versions.worker_id_for(settings.worker_id, version), detail)
    finally:
        writer.close()
    return ReplayResult(
        version=version,
        build=build,
        source="kafka" if source is None else str(source),
        events=outcome.events,
        interactions=outcome.interactions,
        duplicates=outcome.duplicates,
        links=outcome.links,
        relationships=len(outcome.views),
        seconds=time.perf_counter() - started,
        through_worker=isinstance(writer, WorkerWriter),
        seeded=seeded,
        snapshot=snapshot.to_json() if snapshot else None,
        tables=tables,
    )


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
        # Raw envelopes and dead letters: continue where the worker that ran stopped. Views and
        # replay records: only what is produced from now on (never another version's rows).
        handed = committed(settings, old_group)
        for (topic, partition), offset in handed.items():
            if topic in (settings.topic_raw, settings.topic_deadletters):
                moved[(topic, partition)] = offset
        moved.update(current_ends(settings, [settings.topic_relationships, replay_topic(settings)]))
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
