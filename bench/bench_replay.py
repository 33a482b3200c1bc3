"""Replay throughput end to end (log -> reducers -> ClickHouse) against the in-memory fold.

In the same run, on the same events:
  fold (models):   `projections.relationship.fold` over the decoded `Interaction` models, in log
                   order (what the live path computes, one event at a time);
  fold (touches):  `apply_all` per relationship over its sorted touches (the live path's fold
                   of a whole history: no Kafka, no decoding, no ClickHouse);
  fold (replayed): `replayed` per relationship over the same touches (the replay's own fold,
                   equal to the line above field for field, with the aggregates in locals; the
                   native fold where it is built);
  replay:          `streams.replay.build.replay` from a private real broker's `rapport.events` (8
                   partitions) into `relationships_v2` / `interactions_v2` of the embedded engine
                   (no worker running, so it writes directly), plus the Faust state of version
                   2 (changelogs and offsets), timed from start to the recorded build.
Each replay and the bare read print the broker's CPU by kind of thread (its JIT compilers, its
request handlers, the rest), from `/proc`. `--warm-read` first reads the whole log once as the
shards do (a broker that has served reads before, as a long-running one has), and prints what
that read cost the broker.
Events: the real CollegeMsg messages as X DMs of a workspace owning the 20 most active students,
repeated under several workspaces (as bench/bench_worker.py), only those with a contact.

    .venv/bin/python bench/bench_replay.py [--events 500000] [--replays N] [--warm-read]
        [--alternate]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_worker import top_users
from bench.common import private_broker, rate
from events.ids import event_id
from events.models import Interaction, dump_event, parse_event
from projections.policy import DEFAULT_POLICY
from projections.relationship import (
    RelationshipState,
    apply_all,
    fold,
    replayed,
    touch_from_doc,
)
from projections.store import ClickHouseStore
from rapport.process import read_pid
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry
from streams.archive import Snapshot, _scan, take_snapshot
from streams.eventlog import append_records
from streams.keys import event_key
from streams.replay import native
from streams.replay.build import replay
from streams.replay.recalculation import fold_parallelism
from streams.replay.writers import arrow_inserts
from streams.topics import ensure_topics
from tests.datasets import collegemsg_interactions


def records(count: int) -> list[tuple[bytes, bytes]]:
    """(key, JSON) of bench_worker's events: copy n is workspace `bench<n>`, same ids scheme."""
    base = [
        e
        for e in collegemsg_interactions(top_users(20), workspace="bench0")
        if e.contact is not None and e.direction.counts
    ]
    out: list[tuple[bytes, bytes]] = []
    copy = 0
    while len(out) < count:
        workspace = f"bench{copy}"
        for e in base:
            event = e.model_copy(
                update={
                    "workspace": workspace,
                    "event_id": event_id(workspace, "x", f"dm:{e.object_id}"),
                }
            )
            out.append((event_key(event), dump_event(event)))
            if len(out) == count:
                break
        copy += 1
    return out


def bare_read(settings: Settings, snapshot: Snapshot) -> int:
    """Every record of the snapshot with the replay's reader (`streams.log_reader`), nothing
    else: no JSON, no touches, no rows. Returns the count."""
    count = 0

    def on_records(partition: int, records: list[Any]) -> None:
        nonlocal count
        count += len(records)

    asyncio.run(_scan(settings.kafka_bootstrap, snapshot, on_records))
    return count


def bare_read_forked(settings: Settings, snapshot: Snapshot, parts: int) -> None:
    """`bare_read` in `parts` forked processes, each its share of the partitions (as the
    replay's shards read)."""
    shares: list[dict[int, int]] = [{} for _ in range(parts)]
    for n, partition in enumerate(sorted(snapshot.ends)):  # as the replay's shards split them
        shares[n % parts][partition] = snapshot.ends[partition]
    pids = []
    for ends in filter(None, shares):
        share = Snapshot(snapshot.topic, ends, {p: snapshot.begins.get(p, 0) for p in ends})
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if bare_read(settings, share) == share.total else 1
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError("a bare read process failed")


def bare_insert(settings: Settings, source: str, rows: int) -> float:
    """The replay's interaction rows, as Arrow already, inserted into a fresh table of the same
    engine in the pieces and with the settings of the replay's writer (`arrow_inserts`,
    `unique`): ClickHouse's own cost. Seconds."""
    store = ClickHouseStore(settings.clickhouse_url, settings.clickhouse_database)
    try:
        db = settings.clickhouse_database
        store.command(f"CREATE TABLE {db}.floor_interactions AS {db}.{source}")
        data = store.client.query_arrow(f"SELECT * FROM {db}.{source}")
        assert data.num_rows == rows, (data.num_rows, rows)
        t = time.perf_counter()
        for number, piece in enumerate(arrow_inserts(data)):
            store.insert_arrow("floor_interactions", piece, f"floor:{number}", unique=True)
        seconds = time.perf_counter() - t
        got = store.query(f"SELECT count() FROM {db}.floor_interactions").rows[0][0]
        assert int(got) == rows, (got, rows)
        return seconds
    finally:
        store.close()


def cpu_seconds(settings: Settings) -> tuple[float, float, float]:
    """CPU used so far by this process (its threads, the embedded ClickHouse), by its reaped
    children (the replay's forked shards, the bare readers) and by the broker: what the work
    costs whatever else runs on the machine."""
    mine = os.times()
    broker = 0.0
    pid = read_pid(settings.run_dir / "kafka.pid")
    if pid is not None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        broker = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return mine.user + mine.system, mine.children_user + mine.children_system, broker


def broker_threads(settings: Settings) -> dict[str, float]:
    """The broker's CPU so far by kind of thread (from `/proc`): its JIT compilers, its request
    handlers (`data-plane-kafka-request-handler`), and the rest."""
    out = {"JIT compilers": 0.0, "request handlers": 0.0, "other": 0.0}
    pid = read_pid(settings.run_dir / "kafka.pid")
    if pid is None:
        return out
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        kind = (
            "JIT compilers" if "CompilerThre" in name
            else "request handlers" if name.startswith("data-plane-kafk")
            else "other"
        )  # fmt: skip
        out[kind] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def broker_threads_since(settings: Settings, before: dict[str, float]) -> dict[str, float]:
    """The broker's CPU by kind of thread since `before` (a `broker_threads` reading)."""
    return {kind: seconds - before[kind] for kind, seconds in broker_threads(settings).items()}


def by_kind(threads: dict[str, float]) -> str:
    return ", ".join(f"{kind} {seconds:.2f} s" for kind, seconds in threads.items())


class Phases:
    """Progress that records how long each phase of the replay took."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []
        # Until the first phase: the log's snapshot and the shards forked (or the one-process
        # reader made), what a replay does before it reads.
        self._name, self._start = "starting", time.perf_counter()

    def phase(self, name: str, total: int | None) -> None:
        self._close()
        self._name, self._start = name, time.perf_counter()

    def advance(self, n: int) -> None:
        pass

    def _close(self) -> None:
        if self._name:
            self.times.append((self._name, time.perf_counter() - self._start))
            self._name = ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument(
        "--replays",
        type=int,
        default=1,
        help="replay this many times in this process (versions 2, 3, ...); the ratios and the "
        "floor use the first, which pays for loading the embedded ClickHouse",
    )
    parser.add_argument(
        "--warm-read",
        action="store_true",
        help="read the whole log once before the replays (the broker's read path compiled)",
    )
    parser.add_argument(
        "--alternate",
        action="store_true",
        help="every other replay (the 2nd, 4th, ...) decodes and folds in Python alone "
        "(RAPPORT_REPLAY_NATIVE=false), the baseline of the native core in the same run",
    )
    args = parser.parse_args()
    t = time.perf_counter()
    data = records(args.events)
    workspaces = sorted({json.loads(v)["workspace"] for _, v in data[:: max(1, len(data) // 50)]})
    print(f"generated {len(data):,} events in {time.perf_counter() - t:.1f} s", flush=True)

    # The in-memory folds, on the same events.
    gc.collect()
    models = [parse_event(v) for _, v in data]
    interactions = [m for m in models if isinstance(m, Interaction)]
    gc.freeze()
    t = time.perf_counter()
    states = fold(interactions)
    fold_models = time.perf_counter() - t
    print(f"fold (models): {rate(len(data), fold_models)} ({len(states):,} relationships)")
    del states, models, interactions
    gc.unfreeze()
    gc.collect()
    groups: dict[tuple[str, str], list] = {}  # type: ignore[type-arg]
    for _, value in data:
        doc = json.loads(value)
        contact = doc["contact"]
        key = (doc["workspace"], f"{contact['platform']}:{contact['user_id']}")
        groups.setdefault(key, []).append(touch_from_doc(doc))
    for touches in groups.values():
        touches.sort(key=lambda touch: (touch.at, touch.event_id))
    t = time.perf_counter()
    for (workspace, contact), touches in groups.items():
        fresh = RelationshipState(workspace=workspace, contact_id=contact)
        apply_all(fresh, touches, DEFAULT_POLICY)
    fold_touches = time.perf_counter() - t
    print(f"fold (touches): {rate(len(data), fold_touches)}", flush=True)
    t = time.perf_counter()
    for (workspace, contact), touches in groups.items():
        replayed(workspace, contact, touches, DEFAULT_POLICY)
    fold_replayed = time.perf_counter() - t
    print(f"fold (replayed): {rate(len(data), fold_replayed)}", flush=True)
    del groups
    gc.collect()

    with private_broker(partitions=8) as (settings, _root):
        settings.workspaces.write_text("".join(f"[workspaces.{w}]\n" for w in workspaces))
        ensure_topics(settings)
        t = time.perf_counter()
        append_records(settings, settings.topic_events, data, timeout_s=300)
        print(f"produced {len(data):,} events in {time.perf_counter() - t:.1f} s", flush=True)
        del data
        gc.collect()
        registry = WorkspaceRegistry.load(settings.workspaces)
        cores = os.cpu_count() or 1
        if args.warm_read:
            threads_before = broker_threads(settings)
            t = time.perf_counter()
            bare_read_forked(settings, take_snapshot(settings), fold_parallelism())
            threads = broker_threads_since(settings, threads_before)
            print(f"warm-up read of the whole log: {time.perf_counter() - t:.1f} s")
            print("  broker: " + by_kind(threads))
        first: tuple[Any, float, float, float] | None = None
        for n in range(args.replays):
            threads_before = broker_threads(settings)
            cpu_before = cpu_seconds(settings)
            python_only = args.alternate and n % 2 == 1
            settings.replay_native = not python_only
            phases = Phases()
            t = time.perf_counter()
            result = replay(settings, registry, 2 + n, progress=phases)
            seconds = time.perf_counter() - t
            used = [a - b for a, b in zip(cpu_seconds(settings), cpu_before, strict=True)]
            threads = broker_threads_since(settings, threads_before)
            load = os.getloadavg()
            phases._close()
            label = "replay" if n == 0 else f"replay {n + 1} (same process)"
            decoder = "Python alone" if python_only else "native core"
            if native.module() is None:
                decoder = "Python alone: the native core is not built"
            label += f", {decoder}"
            print(f"{label}: {rate(result.events, seconds)} end to end ({seconds:.1f} s)")
            for name, phase_seconds in phases.times:
                print(f"  {name:<28} {phase_seconds:6.1f} s")
            print(f"  relationships {result.relationships:,}, tables {result.tables}")
            cpu = used[0] + used[1]
            print(
                f"  CPU: replay {cpu:.1f} s ({cpu / result.events * 1e6:.1f} us/event: parent "
                f"{used[0]:.1f} s, shards {used[1]:.1f} s), broker {used[2]:.1f} s; load "
                f"average after {load[0]:.2f}"
            )
            print("  broker: " + by_kind(threads))
            print(
                f"  on {cores} idle cores, that CPU allows at most "
                f"{rate(result.events, (cpu + used[2]) / cores)} end to end",
                flush=True,
            )
            if first is None:
                first = (result, seconds, cpu, used[2])
        assert first is not None
        result, total, replay_cpu, broker_cpu = first
        print(f"ratio replay / fold (models): {fold_models / total:.2f}x")
        print(f"ratio replay / fold (touches): {fold_touches / total:.2f}x")
        print(f"ratio replay / fold (replayed): {fold_replayed / total:.2f}x", flush=True)

        # The floor: what Kafka and ClickHouse alone cost here, on the same events and rows.
        snapshot = take_snapshot(settings)
        t = time.perf_counter()
        assert bare_read(settings, snapshot) == snapshot.total
        read_one = time.perf_counter() - t
        parts = fold_parallelism()
        t = time.perf_counter()
        cpu_before = cpu_seconds(settings)
        threads_before = broker_threads(settings)
        bare_read_forked(settings, snapshot, parts)
        read_forked = time.perf_counter() - t
        cpu_after = cpu_seconds(settings)
        threads = broker_threads_since(settings, threads_before)
        read_cpu = sum(cpu_after) - sum(cpu_before)
        readers_cpu = cpu_after[1] - cpu_before[1]
        int_rows = result.tables["interactions_v2"]
        cpu_before = cpu_seconds(settings)
        insert = bare_insert(settings, "interactions_v2", int_rows)
        insert_cpu = sum(cpu_seconds(settings)) - sum(cpu_before)  # includes the query back
        read_best = min(read_one, read_forked)
        n = result.events
        print("floor (Kafka and ClickHouse alone, same events and rows):")
        print(f"  bare read, 1 reader            {read_one:6.1f} s  {rate(n, read_one)}")
        label = f"bare read, {parts} processes"
        print(f"  {label:<30} {read_forked:6.1f} s  {rate(n, read_forked)}")
        print(f"  bare insert interactions       {insert:6.1f} s  {rate(int_rows, insert)}")
        print(f"  read then insert allows        {rate(n, read_best + insert)} end to end")
        print(f"  read and insert overlapped     {rate(n, max(read_best, insert))} end to end")
        print(
            f"  CPU: bare read ({parts} processes, broker included) {read_cpu:.1f} s, "
            f"bare insert (with reading the rows back) {insert_cpu:.1f} s; the readers alone "
            f"(streams.log_reader) {readers_cpu:.1f} s, "
            f"{readers_cpu / snapshot.total * 1e6:.1f} us/event"
        )
        print("  broker, bare read: " + by_kind(threads))
        print(f"ratio replay / floor (read then insert): {(read_best + insert) / total:.2f}x")
        budget = cores / 100_000 * 1e6
        used = (replay_cpu + broker_cpu) / n * 1e6
        print(
            f"CPU per event: at 100,000/s {cores} cores give {budget:.1f} us; Kafka and ClickHouse "
            f"alone use {(read_cpu + insert_cpu) / n * 1e6:.1f} us, the bare fold (one core) "
            f"{fold_replayed / n * 1e6:.1f} us (apply_all {fold_touches / n * 1e6:.1f}), the "
            f"replay used {used:.1f} us (broker included)"
        )
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpus; "
        f"{args.events:,} events"
    )


if __name__ == "__main__":
    main()
