"""The pure part of a replay: a log's events in, every relationship recalculated out.

Decoding the logged events (current-version interactions straight into a struct, the rest
through the full parser), the final identity map, each relationship's touches sorted by
(occurred_at, event_id) and folded by `replayed` under its workspace's policy. No Kafka and no
ClickHouse: the shards, the archive replay, the chaos checks and the tests all run this. Where
the native core is built (`streams.replay.native`), a flat-rows read (a shard's, a one-process
replay's) decodes, groups and folds with it (`add_records`, `fold_natively`, `finish_natively`);
the Python path here stays the reference.
"""

from __future__ import annotations

import os
import sys
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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
from projections.tally import Touch
from rapport.workspaces import WorkspaceRegistry
from streams.replay import native as native_core
from streams.replay.arrow import interaction_arrow
from streams.replay.interfaces import NoProgress, Progress
from streams.replay.rows import interaction_values_of, relationship_values


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
    """`rows.interaction_values` of the same event (tested equal)."""
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
# What the native fold hands over per 500 relationships: read-model rows, table records, touches.
Emit = Callable[[list[tuple[str, dict[str, Any]]], list[tuple[bytes, bytes]], int], None]


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
    # Interaction rows as Arrow (`interaction_arrow`, contacts resolved): a native read's,
    # not in `interaction_rows`.
    interaction_tables: list[Any] = field(default_factory=list)

    @property
    def relationships(self) -> int:
        return len(self.views) + sum(int(t.num_rows) for t in self.relationship_tables)

    @property
    def interaction_count(self) -> int:
        return len(self.interaction_rows) + sum(int(t.num_rows) for t in self.interaction_tables)

    def relationship_rows(self, updated_at_ms: int) -> Iterator[list[Any]]:
        for view in self.views.values():
            yield relationship_values(view, updated_at_ms)


def fold_jobs(
    jobs: list[Job], policies: dict[str, Policy], keep_states: bool, native: bool = True
) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[bytes, bytes]], list[RelationshipState]]:
    """Each job's relationship, its read-model row and its table record (`native`: with the
    native fold where it is built)."""
    states = [(w, c, replayed(w, c, touches, policies[w], native)) for w, c, touches in jobs]
    views, changelog = state_rows(states, policies)
    return views, changelog, [s for _, _, s in states] if keep_states else []


def state_rows(
    states: list[tuple[str, str, RelationshipState]], policies: dict[str, Policy]
) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[bytes, bytes]]]:
    """Each relationship's read-model row and its table record."""
    views: list[tuple[str, dict[str, Any]]] = []
    changelog: list[tuple[bytes, bytes]] = []
    for workspace, contact, state in states:
        key = relationship_key(workspace, contact)
        views.append((key, view_row(state, policies[workspace])))
        changelog.append((key.encode(), state.to_json()))  # the bytes the live worker writes
    return views, changelog


_FORKED: dict[str, Any] = {}  # what a forked fold process inherits


def _fold_forked(share: int) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[bytes, bytes]]]:
    views, changelog, _ = fold_jobs(
        _FORKED["shares"][share], _FORKED["policies"], False, _FORKED["native"]
    )
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


def jobs_of(
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

    def __init__(
        self,
        workspaces: Collection[str] | None = None,
        flat_rows: bool = False,
        native: bool = True,
    ) -> None:
        self.only = frozenset(workspaces) if workspaces else None
        # flat_rows: every interaction row goes into one list in read order (`take_rows`), its
        # contact_id the identity before links, instead of staying with its identity's touches.
        self._flat: list[list[Any]] | None = [] if flat_rows else None
        self._by_identity: dict[tuple[str, str | None], _Identity] = {}
        self._links: dict[tuple[str, str], tuple[tuple[int, str], str | None]] = {}
        self._seen: set[str] = set()
        self._events = 0
        self._interactions = 0
        self._duplicates = 0
        # native: the native core where it is built (`streams.replay.native`). Its decoder
        # takes the current-version interactions of a flat-rows read (the shards') and hands
        # the rest back to `add`, and then holds the seen ids of both; its fold folds.
        self.native = native
        self._decoder = (
            native_core.decoder(Touch, _CONVERSATIONAL, self.only) if flat_rows and native else None
        )
        self.links = 0
        self.other = 0
        self.invalid = 0

    @property
    def events(self) -> int:
        return self._events + (self._decoder.events if self._decoder else 0)

    @property
    def interactions(self) -> int:
        return self._interactions + (self._decoder.interactions if self._decoder else 0)

    @property
    def duplicates(self) -> int:
        return self._duplicates + (self._decoder.duplicates if self._decoder else 0)

    def add_many(self, values: Iterable[bytes]) -> None:
        for value in values:
            self.add(value)

    def add_records(self, records: list[tuple[bytes | None, bytes]]) -> None:
        """A batch of logged (key, value) records: `add` of each value, the native decoder
        first where there is one."""
        if self._decoder is not None:
            index, count = 0, len(records)
            while index < count:
                index = self._decoder.add_records(records, index)
                if index < count:  # one it does not take: here, in its place in the log
                    self.add(records[index][1])
                    index += 1
            return
        for _, value in records:
            self.add(value)

    def _first(self, event_id: str) -> bool:
        """Whether the event is seen for the first time (it is from now on)."""
        if self._decoder is not None:
            return bool(self._decoder.first_seen(event_id))
        if event_id in self._seen:
            return False
        self._seen.add(event_id)
        return True

    def add(self, value: bytes) -> None:
        """One logged event (its JSON, any stored version); an unreadable one is counted in
        `invalid` and skipped (the live worker dead-letters it)."""
        self._events += 1
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
        if not self._first(event_id):
            self._duplicates += 1
            return
        self._interactions += 1
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

    def take_arrow(self) -> Any:
        """The rows collected since the last call (flat_rows only) as one Arrow table
        (`interaction_arrow`), or None."""
        tables = []
        if self._decoder is not None:
            count, strings, numbers = self._decoder.take_rows()
            if count:
                tables.append(native_core.interaction_table(count, strings, numbers))
        made = interaction_arrow(self.take_rows())
        if made is not None:
            tables.append(made)
        if len(tables) < 2:
            return tables[0] if tables else None
        import pyarrow as pa

        return pa.concat_tables(tables)

    def _interaction(self, event: Interaction) -> None:
        """An interaction that needed the full parser (an older stored version, upcast)."""
        if self.only is not None and event.workspace not in self.only:
            return
        if not self._first(event.event_id):
            self._duplicates += 1
            return
        self._interactions += 1
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
        """What a shard of a sharded replay tells the parent after reading (`Shards`)."""
        return {
            "events": self.events,
            "interactions": self.interactions,
            "duplicates": self.duplicates,
            "links": self.links,
            "invalid": self.invalid,
            "link_orders": self._links,
            "identities": list(
                dict.fromkeys(
                    [key for key in self._by_identity if key[1] is not None]
                    + (self._decoder.identities() if self._decoder else [])
                )
            ),
            "ids": self._id_hashes(),
            "touches": sum(len(b.touches) for b in self._by_identity.values())
            + (self._decoder.touches() if self._decoder else 0),
        }

    def _id_hashes(self) -> array[int]:
        if self._decoder is not None:  # it holds every id seen (`_first`)
            ids = array("q")
            ids.frombytes(self._decoder.id_hashes())
            if sys.byteorder != "little":
                ids.byteswap()
            return ids
        # Forked shards share the parent's string hash seed: equal ids, equal hashes.
        return array("q", map(hash, self._seen))

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
        if self._decoder is not None:
            for (workspace, identity), touches in self._decoder.take_touches().items():
                contact = contacts.get((workspace, identity), identity)
                groups.setdefault((workspace, contact), []).append(touches)
        return rows, groups

    @property
    def folds_natively(self) -> bool:
        """Whether `fold_natively` may be used (a flat-rows read with the native core)."""
        return self._decoder is not None

    def fold_natively(
        self,
        contacts: dict[tuple[str, str], str],
        shared: Collection[tuple[str, str]],
        policy_of: Callable[[str], Policy],
    ) -> tuple[
        dict[tuple[str, str], list[list[Touch]]], Callable[[Emit], tuple[dict[str, Policy], Any]]
    ]:
        """The native core's side of `assign` then `fold_jobs`, with no Python object per
        relationship it folds: the touches of the `shared` relationships at once (they leave),
        and a call that folds every other relationship and returns the workspaces' policies and
        the natively folded relationships' rows (as `relationship_arrow` makes them). Each 500
        relationships go to its `emit(views, changelog, touches)`: the read-model rows of those
        the Python fold took (`views`), every table record, and how many touches they folded.
        Consumes the events."""
        native = self._decoder
        assert native is not None
        for (workspace, identity), bucket in self._by_identity.items():
            if identity is not None and bucket.touches:  # read by the Python decoder
                native.add_touches(workspace, identity, bucket.touches)
        self._by_identity = {}
        native.group(contacts)
        handed = native.take_groups(list(shared))
        policies: dict[str, Policy] = {}

        def policy(workspace: str) -> Policy:
            found = policies.get(workspace)
            if found is None:
                found = policies[workspace] = policy_of(workspace)
            return found

        def fold(emit: Emit) -> tuple[dict[str, Policy], Any]:
            def fallback(workspace: str, contact: str, touches: list[Touch]) -> RelationshipState:
                return replayed(workspace, contact, touches, policy(workspace), self.native)

            def emitted(
                states: list[tuple[str, str, RelationshipState]],
                changelog: list[tuple[bytes, bytes]],
                touches: int,
            ) -> None:
                views, more = state_rows(states, policies)
                emit(views, changelog + more, touches)

            count, columns = native.replay(policy, fallback, emitted)
            return policies, native_core.relationship_table(count, columns)

        return handed, fold

    def finish_natively(
        self, policy_of: Callable[[str], Policy], parts: list[Any], progress: Progress | None = None
    ) -> Outcome:
        """`finish` of a flat-rows read with the native core, in this process: the interaction
        rows as Arrow (`parts`, the `take_arrow` tables so far, and the rest), contacts
        resolved; the relationships folded natively as Arrow rows, those the Python fold took
        as views. What a one-process replay (an archive, the overlap fallback) writes."""
        from streams.replay.arrow import resolve_contacts

        assert self._decoder is not None
        progress = progress or NoProgress()
        contacts = self.identity_map()
        last = self.take_arrow()
        tables = [t for t in [*parts, last] if t is not None]
        parts.clear()
        rows = None
        if tables:
            import pyarrow as pa

            rows = resolve_contacts(pa.concat_tables(tables), contacts)
        progress.phase("folding", self.summary()["touches"])
        views: list[tuple[str, dict[str, Any]]] = []
        changelog: list[tuple[bytes, bytes]] = []

        def emit(more_views: Any, more_changelog: Any, touches: int) -> None:
            views.extend(more_views)
            changelog.extend(more_changelog)
            progress.advance(touches)

        _, fold = self.fold_natively(contacts, (), policy_of)
        policies, table = fold(emit)
        return Outcome(
            views=dict(views),
            changelog=changelog,
            policies=dict(sorted(policies.items())),
            identities={f"{w}|{i}": c for (w, i), c in contacts.items()},
            interaction_rows=[],
            interaction_tables=[rows] if rows is not None else [],
            relationship_tables=[table] if table.num_rows else [],
            events=self.events,
            interactions=self.interactions,
            duplicates=self.duplicates,
            links=self.links,
            invalid=self.invalid,
        )

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
        jobs, policies = jobs_of(groups, policy_of)
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
            _FORKED.update(shares=shares, policies=policies, native=self.native)  # inherited
            with ProcessPoolExecutor(processes - 1, mp_context=get_context("fork")) as pool:
                futures = [pool.submit(_fold_forked, n) for n in range(1, len(shares))]
                mine = fold_jobs(shares[0], policies, False, self.native)
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
                more = fold_jobs(part, policies, keep_states, self.native)
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
