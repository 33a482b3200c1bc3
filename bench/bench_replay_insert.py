"""How the replay inserts its interaction rows into the embedded ClickHouse, against the ways
it did before, on the same rows in the same run.

The rows: bench_replay's events, split in two as two shards hold them, each shard's rows as the
shard builds them (`interaction_arrow` per fetch of about 500 records, so one Arrow chunk per
fetch).
Each way inserts both tables into a fresh `interactions_vN` (cast to the table's types, as the
writer does), then the replay's `FINAL` count runs, then the process idles 3 s while ClickHouse
merges what it wants to. CPU is this process's (the embedded engine runs in its threads), from
`time.process_time()`. Ways, alternated over the rounds:

  100,000 a slice:       the replay three changes ago (slices of INSERT_ROWS, the chunks as
                         they came);
  500,000 a slice:       larger slices, still one chunk per fetch;
  arrow_inserts:         the replay two changes ago (`streams.replay.writers.arrow_inserts`:
                         500,000-row slices, each one chunk);
  arrow_inserts, unique: the replay before: the same slices inserted with `unique`
                         (`projections.store.UNIQUE_ROWS`: no merge of a block with itself on
                         insert; the rows are unique), through clickhouse-connect's
                         `insert_arrow` (an Arrow file in memory, copied to bytes, then to a
                         temporary file the engine reads);
  a shard's file (now):  each shard's rows cast to the table's types in one chunk and left in
                         a file in shared memory (the shard's side, timed apart: the shards do
                         it in parallel), which the engine reads itself
                         (`ClickHouseStore.insert_arrow_file`, `INSERT ... FROM INFILE`),
                         `unique` as well.

Also the CPU of one DDL command through `ClickHouseStore.command` (it passes per-call settings,
which clickhouse-connect's chdb backend reads, sets and restores around the command) against
the same command with no settings.

    .venv/bin/python bench/bench_replay_insert.py [--events 500000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa

from bench.bench_replay import records
from rapport.settings import Settings
from streams.replay.arrow import interaction_arrow, shared_memory_dir
from streams.replay.recalculation import Recalculation
from streams.replay.writers import INSERT_ROWS, DirectWriter, arrow_inserts, wait_for_rows

FETCH = 500  # records per partition fetch, about, with these events
Pieces = Callable[[Any], Iterator[Any]]


def cpu() -> float:
    return time.process_time()  # every thread of this process, ns resolution


def shard_tables(values: list[bytes], shards: int = 2) -> list[Any]:
    """Each shard's interaction rows as it sends them: one Arrow chunk per fetch."""
    tables = []
    share = -(-len(values) // shards)
    for start in range(0, len(values), share):
        calc = Recalculation(None, flat_rows=True)
        parts = []
        mine = values[start : start + share]
        for i in range(0, len(mine), FETCH):
            calc.add_many(mine[i : i + FETCH])
            parts.append(interaction_arrow(calc.take_rows()))
        tables.append(pa.concat_tables(parts))
    return tables


def slices(size: int) -> Pieces:
    def pieces(data: Any) -> Iterator[Any]:
        for start in range(0, data.num_rows, size):
            yield data.slice(start, size)

    return pieces


SHARD_FILE = "a shard's file (now)"


def shard_files(tables: list[Any], schema: Any, where: str) -> tuple[list[str], float]:
    """Each shard's rows as a shard leaves them for the engine, and the CPU that took."""
    started = cpu()
    paths = []
    for n, table in enumerate(tables):
        data = table.select(schema.names).cast(schema).combine_chunks()
        path = f"{where}/rows-{n}.arrow"
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, schema) as stream:
            stream.write_table(data)
        paths.append(path)
    return paths, cpu() - started


def measure(
    writer: DirectWriter, version: int, tables: list[Any], pieces: Pieces | None, unique: bool
) -> tuple[float, float, float, int, float]:
    """CPU of the inserts, of the FINAL count, of the 3 s after; active parts at the end; and
    the shards' side (their files, for `pieces` None)."""
    name = f"interactions_v{version}"
    writer.prepare(version, f"bench{version}")
    schema = writer._arrow_schema(name)
    total = sum(t.num_rows for t in tables)
    paths, shard_side = ([], 0.0) if pieces else shard_files(tables, schema, shared_memory_dir())
    started = cpu()
    number = 0
    for path in paths:
        writer.store.insert_arrow_file(name, path, schema.names, f"b{version}:{number}", unique)
        number += 1
    for table in tables if pieces else []:
        for piece in pieces(table.select(schema.names)):
            writer.store.insert_arrow(name, piece.cast(schema), f"b{version}:{number}", unique)
            number += 1
    inserted = cpu()
    for path in paths:
        os.unlink(path)
    wait_for_rows(writer.reader(), "rapport", {name: total}, 60)
    counted = cpu()
    time.sleep(3)
    after = cpu()
    parts = writer.store.query(
        f"SELECT count() FROM system.parts WHERE database = 'rapport' AND table = '{name}' "
        "AND active"
    ).rows[0][0]
    writer.store.command(f"DROP TABLE rapport.{name} SYNC")
    return inserted - started, counted - inserted, after - counted, int(parts), shard_side


def command_cpu(writer: DirectWriter, repeat: int = 200) -> tuple[float, float]:
    """CPU per DDL command with the store's per-call settings, and with none."""
    sql = "CREATE TABLE IF NOT EXISTS rapport.bench_t (x Int32) ENGINE = MergeTree ORDER BY x"
    writer.store.client.command(sql)
    started = cpu()
    for _ in range(repeat):
        writer.store.command(sql)
    with_settings = (cpu() - started) / repeat
    started = cpu()
    for _ in range(repeat):
        writer.store.client.command(sql)
    without = (cpu() - started) / repeat
    writer.store.command("DROP TABLE rapport.bench_t SYNC")
    return with_settings, without


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tables = shard_tables([v for _, v in records(args.events)])
    rows = sum(t.num_rows for t in tables)
    chunks = [t.column(0).num_chunks for t in tables]
    print(f"{rows:,} rows in {len(tables)} shard tables of {chunks} chunks")
    ways: dict[str, tuple[Pieces | None, bool]] = {
        f"{INSERT_ROWS:,} a slice": (slices(INSERT_ROWS), False),
        "500,000 a slice, chunked": (slices(500_000), False),
        "arrow_inserts": (arrow_inserts, False),
        "arrow_inserts, unique": (arrow_inserts, True),
        SHARD_FILE: (None, True),
    }
    with tempfile.TemporaryDirectory(prefix="rapport-bench-") as tmp:
        settings = Settings(home=Path(tmp) / "home", clickhouse_url=f"chdb://{tmp}/clickhouse")
        writer = DirectWriter(settings)
        try:
            print(f"{'way':<28} {'insert':>8} {'FINAL count':>12} {'3 s after':>10} {'parts':>6}"
                  f" {'shards':>7}")  # fmt: skip
            best: dict[str, float] = {}
            version = 10
            for _ in range(args.rounds):
                for name, (pieces, unique) in ways.items():
                    version += 1
                    insert, count, merges, parts, shards = measure(
                        writer, version, tables, pieces, unique
                    )
                    whole = insert + count + merges
                    best[name] = min(best.get(name, whole), whole)
                    print(
                        f"{name:<28} {insert:7.2f}s {count:11.2f}s {merges:9.2f}s {parts:6d}"
                        f" {shards:6.2f}s",
                        flush=True,
                    )
            now = best[SHARD_FILE]
            for name, seconds in best.items():
                print(f"best of the rounds, all three: {name:<28} {seconds:5.2f} s CPU", end="")
                print(f"   {seconds / now:4.2f}x now")
            with_settings, without = command_cpu(writer)
            print(
                f"a DDL command: {with_settings * 1000:.2f} ms CPU with per-call settings, "
                f"{without * 1000:.2f} ms without ({with_settings / without:.0f}x)"
            )
        finally:
            writer.close()


if __name__ == "__main__":
    main()
