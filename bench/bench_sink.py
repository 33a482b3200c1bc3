"""Sink throughput into the embedded engine: `interactions` rows per second.

Both passes insert the same pre-built rows (the real CollegeMsg messages as X DMs, repeated
under several workspaces) into a fresh, fully migrated `rapport` schema (ReplacingMergeTree
partitioned by month, the `workspace_daily` materialized view, a deduplication window), in
batches of the same size, in the same process and engine:
  baseline: a bare `client.insert(table, rows, column_names, settings={"async_insert": 0})` of
            clickhouse-connect (its row-wise Native encoding);
  sink:     `ClickHouseSink.flush` as the worker calls it: its own thread, a deduplication token
            per batch from the Kafka offsets, async_insert=0, the Arrow encoding of
            `ClickHouseStore.insert`, retries (none needed here).
Each figure is the best of `--runs` passes, each into a new database.

    .venv/bin/python bench/bench_sink.py [--rows 300000] [--batches 1000,10000,50000] [--runs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import rate
from projections.rows import interaction_row
from projections.schema import INTERACTION_COLUMNS
from projections.store import ClickHouseStore
from rapport.settings import Settings
from streams.sink import ClickHouseSink, batch_token
from tests.datasets import collegemsg_interactions, collegemsg_most_active


def build_rows(count: int) -> list[tuple[Any, ...]]:
    owned = set(collegemsg_most_active(20))
    out: list[tuple[Any, ...]] = []
    copy = 0
    while len(out) < count:
        out.extend(interaction_row(e) for e in collegemsg_interactions(owned, f"bench{copy}"))
        copy += 1
    return out[:count]


def batches(rows: Sequence[tuple[Any, ...]], size: int) -> list[Sequence[tuple[Any, ...]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


class Databases:
    """Fresh migrated databases in one embedded engine."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.count = 0

    def new(self) -> str:
        self.count += 1
        name = f"bench{self.count}"
        store = ClickHouseStore(self.url, name)
        store.migrate()
        store.close()
        return name


def baseline(url: str, database: str, parts: list[Sequence[tuple[Any, ...]]]) -> float:
    store = ClickHouseStore(url, database)
    try:
        started = time.perf_counter()
        for part in parts:
            store.client.insert(
                f"{database}.interactions",
                list(part),
                column_names=list(INTERACTION_COLUMNS),
                settings={"async_insert": 0},
            )
        return time.perf_counter() - started
    finally:
        store.close()


def sink_pass(url: str, database: str, parts: list[Sequence[tuple[Any, ...]]]) -> float:
    async def run() -> float:
        sink = ClickHouseSink(url, database)
        try:
            await sink.start()
            # The (topic, partition, offset) of each row, as the agent hands them over.
            offsets, first = [], 0
            for part in parts:
                offsets.append(
                    [("rapport.events", (first + i) % 8, first + i) for i in range(len(part))]
                )
                first += len(part)
            started = time.perf_counter()
            for part, spans in zip(parts, offsets, strict=True):
                token = batch_token("interactions", spans)
                await sink.flush("interactions", INTERACTION_COLUMNS, part, token)
            return time.perf_counter() - started
        finally:
            sink.close()

    return asyncio.run(run())


def landed_and_dropped(url: str, database: str) -> int:
    """Distinct interactions counted by workspace_daily; then the database goes (DROP ... SYNC),
    so its background merges do not run during the next pass."""
    store = ClickHouseStore(url, database)
    try:
        row = store.query(
            f"SELECT toInt64(sum(c)) FROM (SELECT uniqExactMerge(interactions) AS c "
            f"FROM {database}.workspace_daily GROUP BY workspace)"
        ).rows[0]
        store.command(f"DROP DATABASE {database} SYNC")
        return int(row[0])
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--batches", default=f"1000,{Settings().sink_batch_rows},50000")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.batches.split(",")})

    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpus; "
        f"building {args.rows:,} interactions rows ...",
        flush=True,
    )
    rows = build_rows(args.rows)
    with tempfile.TemporaryDirectory(prefix="rapport-bench-sink-") as tmp:
        url = f"chdb://{Path(tmp) / 'clickhouse'}"
        keep = ClickHouseStore(url, "rapport")  # holds the engine open between passes
        version = keep.query("SELECT version()").rows[0][0]
        print(f"embedded engine {version}; best of {args.runs} runs; default sink batch "
              f"{Settings().sink_batch_rows:,} rows")  # fmt: skip
        dbs = Databases(url)
        print(f"{'batch rows':>10} {'baseline s':>10} {'baseline':>12} {'sink s':>8} "
              f"{'sink':>12} {'sink/base':>9}")  # fmt: skip
        for size in sizes:
            parts = batches(rows, size)
            base_times, sink_times = [], []
            for _ in range(args.runs):  # alternate, so load changes hit both alike
                for run, times in ((baseline, base_times), (sink_pass, sink_times)):
                    database = dbs.new()
                    times.append(run(url, database, parts))
                    daily = landed_and_dropped(url, database)
                    assert daily == len(rows), f"workspace_daily counts {daily} of {len(rows)}"
            base_s, sink_s = min(base_times), min(sink_times)
            print(
                f"{size:>10,} {base_s:>10.2f} {rate(len(rows), base_s):>12} {sink_s:>8.2f} "
                f"{rate(len(rows), sink_s):>12} {base_s / sink_s:>9.2f}",
                flush=True,
            )
        keep.close()


if __name__ == "__main__":
    main()
