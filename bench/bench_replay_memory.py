"""A replay's memory against the length of the log: what to give a machine or a Job per event.

`rapport replay --to-version N` (the CLI, as an operator runs it, writing the embedded engine
itself) over a private real broker's `rapport.events` (8 partitions) of bench_replay's events,
at several lengths of the same log (each replay reads it whole). While it runs, the
proportional set size (PSS, `/proc/<pid>/smaps_rollup`: pages the forked shards share with the
parent count once) of the CLI and of every process it forked is sampled every 0.1 s; the peak
of their sum is what the replay needs. The baseline, in the same run: `rapport replay --status`,
the same CLI with ClickHouse open and nothing read (its peak PSS). The marginal memory per event
is the slope between the shortest and the longest log.

    .venv/bin/python bench/bench_replay_memory.py [--sizes 250000,500000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_replay import records
from bench.common import private_broker
from rapport.settings import Settings
from rapport.stack import settings_env
from streams.eventlog import append_records
from streams.topics import ensure_topics


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:  # the process ended meanwhile
        pass
    return 0


def _tree(root: int) -> list[int]:
    """`root` and every process below it (from each process's parent in /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, todo = [root], [root]
    while todo:
        pid = todo.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        tree += children
        todo += children
    return tree


def peak_pss(settings: Settings, *args: str) -> tuple[float, int, int, int]:
    """Run `rapport *args` to its end: seconds, and the peak PSS (KiB) of the whole process
    tree, of the CLI process alone, and of the processes it forked."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rapport", *args],
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    total = parent = children = 0
    while proc.poll() is None:
        tree = _tree(proc.pid)
        sizes = {pid: _pss_kib(pid) for pid in tree}
        total = max(total, sum(sizes.values()))
        parent = max(parent, sizes.get(proc.pid, 0))
        children = max(children, sum(size for pid, size in sizes.items() if pid != proc.pid))
        time.sleep(0.1)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"rapport {' '.join(args)} failed:\n{out}\n{err}")
    return time.perf_counter() - started, total, parent, children


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="250000,500000,1000000")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    data = records(sizes[-1])
    workspaces = sorted({json.loads(v)["workspace"] for _, v in data[:: max(1, len(data) // 50)]})
    mib = 1024.0
    with private_broker(partitions=8) as (settings, _root):
        settings.workspaces.write_text("".join(f"[workspaces.{w}]\n" for w in workspaces))
        ensure_topics(settings)
        seconds, base, _, _ = peak_pss(settings, "replay", "--status")
        print(f"baseline (replay --status, ClickHouse open): {base / mib:,.0f} MiB PSS")
        peaks: list[tuple[int, int]] = []
        sent = 0
        for n, size in enumerate(sizes):
            append_records(settings, settings.topic_events, data[sent:size], timeout_s=600)
            sent = size
            seconds, total, parent, children = peak_pss(
                settings, "replay", "--to-version", str(2 + n)
            )
            peaks.append((size, total))
            print(
                f"{size:>9,} events: peak {total / mib:7,.0f} MiB PSS (the CLI {parent / mib:,.0f},"
                f" its shards {children / mib:,.0f}), {(total - base) * 1024 / size:,.0f} bytes "
                f"per event above the baseline; {seconds:.1f} s",
                flush=True,
            )
    (small, low), (large, high) = peaks[0], peaks[-1]
    if large > small:
        slope = (high - low) * 1024 / (large - small)
        print(f"marginal: {slope:,.0f} bytes per event ({small:,} -> {large:,} events)")
    print(f"{os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
