"""The sharded read and fold of `rapport.events`: one forked process per core, each with a
share of the partitions (the log is keyed by identity, so a shard holds whole identities)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Collection
from typing import Any

from projections.policy import Policy
from projections.tally import Touch
from rapport.settings import Settings
from streams.archive import Snapshot, read_log
from streams.eventlog import append_records
from streams.replay import native as native_core
from streams.replay.arrow import (
    relationship_arrow,
    resolve_contacts,
    send_arrow,
    shared_memory_dir,
    unpack_arrow,
)
from streams.replay.interfaces import Progress, ReplayError, TableWriter
from streams.replay.recalculation import Outcome, Recalculation, fold_jobs, jobs_of


class Overlap(Exception):
    """The shards' events are not disjoint (an identity or an event id in two of them)."""


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

        calc = Recalculation(workspaces, flat_rows=True, native=settings.replay_native)
        parts: list[Any] = []

        def handle(batch: list[tuple[bytes | None, bytes]]) -> None:
            calc.add_records(batch)
            read.value += len(batch)
            # Rows to Arrow as they come (meanwhile the broker serves the next fetch).
            made = calc.take_arrow()
            if made is not None:
                parts.append(made)

        read_log(settings, snapshot, handle)
        conn.send(("read", calc.summary()))
        message = conn.recv()
        if message[0] != "go":
            return
        contacts, shared, changelog_topic, rows_schema = message[1:5]
        data = resolve_contacts(pa.concat_tables(parts), contacts) if parts else None
        parts.clear()
        if data is not None and rows_schema is not None:  # the file the engine itself reads
            data = data.select(rows_schema.names).cast(rows_schema).combine_chunks()
        send_arrow(conn, "rows", data, 0 if data is None else data.num_rows, spool=spool)
        del data
        views: list[tuple[str, dict[str, Any]]] = []
        changelog: list[tuple[bytes, bytes]] = []

        def emit(more_views: Any, more_changelog: Any, touches: int) -> None:
            views.extend(more_views)
            changelog.extend(more_changelog)
            folded.value += touches

        tables: list[Any] = []
        if calc.folds_natively:  # no Python object per relationship it can take
            handed, fold = calc.fold_natively(contacts, shared, policy_of)
            conn.send(("shared", handed))
            policies, made = fold(emit)
            tables.append(made)
        else:
            _, groups = calc.assign(contacts)
            conn.send(("shared", {key: groups.pop(key) for key in shared if key in groups}))
            jobs, policies = jobs_of(groups, policy_of)
            del groups
            for start in range(0, len(jobs), 500):
                part = jobs[start : start + 500]
                emit(*fold_jobs(part, policies, False, settings.replay_native)[:2],
                     sum(len(j[2]) for j in part))  # fmt: skip
        tables.append(relationship_arrow([view for _, view in views]))
        views.clear()
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        produced = 0
        if changelog_topic is not None:  # the worker state: this shard's records, from here
            append_records(settings, changelog_topic, changelog, timeout_s=120)
            produced, changelog = len(changelog), []
        send_arrow(conn, "folded", table, changelog, sorted(policies), produced, spool=spool)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
        raise
    finally:
        conn.close()


def partition_shares(snapshot: Snapshot, parts: int) -> list[Snapshot]:
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


class Shards:
    """A replay of the log read and folded by forked processes, each owning some partitions.

    rapport.events is keyed by (workspace, identity), so every event of an identity is in one
    partition and each shard holds whole identities: it reads and decodes its partitions, and
    once the parent has merged every shard's identity links into the final identity map, it
    sends its interaction rows (with their contacts, as Arrow), hands over the touches of the
    relationships whose identities other shards hold too (an identity linked to a contact in
    another partition; the parent folds those), and folds the rest. The parent only inserts and
    merges. If two shards hold the same identity or the same event id (the topic's partition
    count changed), `Overlap` is raised and the caller replays in one process instead.
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

        if not native_core.in_use(settings.replay_native):
            # pyarrow imports pandas (a chdb dependency) on its first conversion of a list:
            # Python shards convert lists, so here, before forking, not in each (0.2-0.4 s of
            # CPU each). Native shards make their rows from buffers and never import it: the
            # 0.2-0.4 s the shards would wait for here.
            pa.array([0])

        context = multiprocessing.get_context("fork")
        self.spool = tempfile.mkdtemp(prefix="rapport-replay-", dir=shared_memory_dir())
        self.policy_of = policy_of
        self.native = settings.replay_native
        self.conns: list[Any] = []
        self.procs: list[Any] = []
        self.read: list[Any] = []
        self.folded: list[Any] = []
        self.summaries: list[dict[str, Any]] = []
        for share in partition_shares(snapshot, parts):
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

    def _recv_arrow(self, n: int, in_place: bool = False) -> Any:
        """A message `send_arrow` sent, with its table (`unpack_arrow`)."""
        try:
            return unpack_arrow(self.conns[n], self._recv(n), in_place)
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
        whose identities other shards hold too. `Overlap` when the shards are not disjoint."""
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
                raise Overlap("an event id in two shards")
            seen_ids.update(ids)
            identities = summary["identities"]
            if not seen_identities.isdisjoint(identities):
                raise Overlap("an identity in two shards")
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
        rows_schema: Any = None,
    ) -> None:
        """The shards go on: the identity map, each one's shared relationships, where they
        produce their table records, and the schema their interaction rows are cast to (for
        a writer that reads them from their file, `TableWriter.arrow_file_schema`)."""
        for conn, mine in zip(self.conns, shared, strict=True):
            conn.send(("go", contacts, mine, changelog_topic, rows_schema))

    def rows(self, in_place: bool = False) -> list[tuple[Any, int]]:
        """Every shard's interaction rows (an Arrow table or None, and their count); with
        `in_place`, the path of the file a shard left them in where it did (the caller
        removes it)."""
        return [self._recv_arrow(n, in_place)[1:] for n in range(len(self.conns))]

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
        writer: TableWriter,
        int_table: str,
        progress: Progress,
        changelog_topic: str | None = None,
    ) -> tuple[Outcome, int]:
        """After `read_all`: the identity map to the shards, their interaction rows written
        to `int_table` while the shards fold (from the files they left them in where the
        writer reads files, else as Arrow tables), the shared relationships folded here, the
        shards' folds merged. Returns the outcome (no `interaction_rows`: they were written)
        and how many rows were written."""
        contacts, shared = self.identity_map()
        rows_schema = writer.arrow_file_schema(int_table)
        self.go(contacts, shared, changelog_topic, rows_schema)
        tables = self.rows(in_place=rows_schema is not None)
        try:
            handed = self.shared()
            count = sum(n for _, n in tables)
            # The shards fold meanwhile: the interactions do not depend on the fold.
            progress.phase("writing " + int_table, count)
            for data, rows in tables:
                if isinstance(data, str):
                    writer.insert_arrow_file(int_table, data, rows, progress)
                elif data is not None:
                    writer.write_arrow(int_table, data, progress)
        finally:
            for data, _ in tables:
                if isinstance(data, str):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(data)
        del tables
        progress.phase("folding", self.total("touches"))
        done = 0
        views: list[tuple[str, dict[str, Any]]] = []
        changelog: list[tuple[bytes, bytes]] = []
        names: set[str] = set()
        if handed:  # relationships whose identities are in several shards: folded here
            jobs, policies = jobs_of(handed, policy_of)
            views, changelog, _ = fold_jobs(jobs, policies, False, self.native)
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
