"""A replay from an archive (`rapport replay --from FILE`, one process) with the native core
against Python alone, on the same archive in the same run.

The archive: bench_replay's events (real CollegeMsg messages as X DMs, repeated under several
workspaces) written by `streams.archive.ArchiveWriter` as `rapport export` writes them. Each
round replays it twice into fresh versions of one embedded ClickHouse, alternating: with the
native core (`RAPPORT_REPLAY_NATIVE`, the default: decoded, folded and written as Arrow) and in
Python alone (the Python decoder, the Python fold in forked processes). An archive replay has
no snapshot, so it writes no worker state and needs no broker. Baseline in the same run: the
archive read alone (`read_archive`, nothing done with the records). CPU is this process's and
its children's (the Python fold forks), from `os.times()`.

    .venv/bin/python bench/bench_replay_archive.py [--events 500000] [--rounds 2]
        [--format ndjson|parquet]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_replay import records
from bench.common import rate
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry
from streams.archive import ArchiveWriter, read_archive
from streams.replay import native
from streams.replay.build import replay


def cpu() -> float:
    mine = os.times()
    return mine.user + mine.system + mine.children_user + mine.children_system


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--format", choices=["ndjson", "parquet"], default="ndjson")
    args = parser.parse_args()
    if native.module() is None:
        raise SystemExit("the native core is not built: `make setup`")
    data = records(args.events)
    workspaces = sorted({key.split(b"|")[0].decode() for key, _ in data})
    with tempfile.TemporaryDirectory(prefix="rapport-bench-") as tmp:
        root = Path(tmp)
        path = root / f"events.{args.format}"
        writer = ArchiveWriter(path, args.format)
        writer.write([(0, n, key, value) for n, (key, value) in enumerate(data)])
        writer.close()
        count = len(data)
        del data
        gc.collect()
        print(f"archive: {count:,} events, {path.stat().st_size / 1e6:,.0f} MB {args.format}")
        settings = Settings(
            home=root / "home",
            clickhouse_url=f"chdb://{root / 'clickhouse'}",
            workspaces=root / "workspaces.toml",
        )
        settings.home.mkdir(parents=True, exist_ok=True)
        settings.workspaces.write_text("".join(f"[workspaces.{w}]\n" for w in workspaces))
        registry = WorkspaceRegistry.load(settings.workspaces)
        best: dict[bool, float] = {}
        version = 1
        for _ in range(args.rounds):
            started = time.perf_counter()
            read = sum(len(batch) for batch in read_archive(path))
            bare = time.perf_counter() - started
            print(f"bare read of the archive       {rate(read, bare):>12} ({bare:.1f} s)")
            for use_native in (True, False):
                version += 1
                settings.replay_native = use_native
                gc.collect()
                before, started = cpu(), time.perf_counter()
                result = replay(settings, registry, version, source=path)
                seconds, used = time.perf_counter() - started, cpu() - before
                best[use_native] = min(best.get(use_native, seconds), seconds)
                name = "native core" if use_native else "Python alone"
                print(
                    f"replay --from FILE, {name:<12} {rate(count, seconds):>10} ({seconds:.1f} s,"
                    f" CPU {used:.1f} s), {result.relationships:,} relationships",
                    flush=True,
                )
        print(
            f"best of the rounds: native core {rate(count, best[True])}, Python alone "
            f"{rate(count, best[False])}: {best[False] / best[True]:.2f}x"
        )
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; {count:,} events")


if __name__ == "__main__":
    main()
