"""Worker throughput through the whole projection path against a bare consume loop.

Both read the same `rapport.events` topic of a real local broker in the same run:
  baseline: an aiokafka consumer that only iterates the records (no decoding);
  rapport:  `rapport worker` (resolve -> project with the Faust table -> relationships topic ->
            ClickHouse sinks), timed from the first record to the moment ClickHouse holds the
            final relationship rows.
Events: the real CollegeMsg messages as X DMs of a workspace owning the 20 most active
students, repeated under several workspaces to reach the requested count.

    .venv/bin/python bench/bench_worker.py [--events 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer

from bench.common import private_broker, rate
from events.models import Interaction
from projections.store import WorkerQueryClient
from rapport.process import read_pid, spawn, stop_pid_file
from rapport.settings import Settings
from rapport.stack import settings_env
from streams.eventlog import append_events
from streams.topics import ensure_topics
from tests.datasets import collegemsg_interactions


def top_users(n: int) -> set[str]:
    counts: Counter[str] = Counter()
    for line in (
        Path(__file__).resolve().parent.parent / "data/snap_collegemsg/CollegeMsg.txt"
    ).open():
        a, b, _ = line.split()
        counts[a] += 1
        counts[b] += 1
    return {u for u, _ in counts.most_common(n)}


def events(count: int) -> list[Interaction]:
    owned = top_users(20)
    out: list[Interaction] = []
    copy = 0
    while len(out) < count:
        batch = collegemsg_interactions(owned, workspace=f"bench{copy}")
        out.extend(e for e in batch if e.contact is not None and e.direction.counts)
        copy += 1
    return out[:count]


async def bare_loop(bootstrap: str, topic: str, expected: int) -> float:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
        enable_auto_commit=False, max_poll_records=5000,
    )  # fmt: skip
    await consumer.start()
    try:
        seen = 0
        started = 0.0
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                if not started:
                    started = time.perf_counter()
                seen += len(records)
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def faust_floor(settings: Settings, count: int) -> dict[str, float]:
    """Events/s of a do-nothing Faust agent over the same topic (and with one re-produce)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(f"{settings.topic_events}.floor", settings.partitions, 1)])
    admin.close()
    out: dict[str, float] = {}
    settings.home.mkdir(parents=True, exist_ok=True)
    for mode in ("batch", "forward"):
        env = dict(
            os.environ, FLOOR_BOOTSTRAP=settings.kafka_bootstrap, FLOOR_TOPIC=settings.topic_events,
            FLOOR_EVENTS=str(count), FLOOR_MODE=mode,
        )  # fmt: skip
        done = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("faust_floor_app.py")), "worker",
             "-l", "warn"],
            capture_output=True, text=True, env=env, timeout=600, check=False,
            cwd=settings.home,  # Faust writes its data directory into the working directory
        )  # fmt: skip
        # Faust's worker routes print() through its logger, so look in both streams.
        found = re.findall(rf"\b{mode}: (\d+)", done.stdout + done.stderr)
        if not found:
            raise SystemExit(f"faust floor ({mode}) failed:\n{done.stderr[-2000:]}")
        out[mode] = float(found[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    data = events(args.events)
    relationships = {(e.workspace, e.contact.key) for e in data if e.contact}
    workspaces = sorted({e.workspace for e in data})
    with private_broker(partitions=8) as (settings, root):
        toml = "".join(f"[workspaces.{w}]\n" for w in workspaces)
        settings.workspaces.write_text(toml)
        ensure_topics(settings)
        t = time.perf_counter()
        append_events(settings, data)
        print(f"produced {len(data):,} events in {time.perf_counter() - t:.1f} s", flush=True)

        bare = asyncio.run(bare_loop(settings.kafka_bootstrap, settings.topic_events, len(data)))
        print(f"bare aiokafka loop: {rate(len(data), bare)}", flush=True)
        floors = faust_floor(settings, len(data))
        for mode, value in floors.items():
            print(f"faust floor ({mode}): {value:,.0f}/s", flush=True)

        pid_file = root / "worker.pid"
        started = time.perf_counter()
        spawn([sys.executable, "-m", "rapport", "worker"], log_file=root / "worker.log",
              pid_file=pid_file, env=settings_env(settings))  # fmt: skip
        try:
            reader = WorkerQueryClient(settings.worker_url, timeout_s=10)
            sql = "SELECT count(), toInt64(sum(interactions)) FROM rapport.relationships FINAL"
            first = None
            while True:
                if read_pid(pid_file) is None:
                    raise SystemExit(f"the worker died; see {root / 'worker.log'}")
                try:
                    rows, total = reader.query(sql).rows[0]
                except Exception:
                    time.sleep(0.5)
                    continue
                if first is None and int(rows) > 0:
                    first = time.perf_counter()
                if int(rows) == len(relationships) and int(total or 0) == len(data):
                    break
                time.sleep(0.5)
            done = time.perf_counter()
        finally:
            stop_pid_file(pid_file, timeout_s=60)
        full = done - (first or started)
        startup = (first or done) - started
        print(f"rapport worker: {rate(len(data), full)} (first row after {startup:.1f} s start-up)")
        print(f"ratio worker/bare: {bare / full:.3f}")
        for mode, value in floors.items():
            print(f"ratio worker/faust floor ({mode}): {len(data) / full / value:.3f}")
        print(f"relationships: {len(relationships):,}; workspaces: {len(workspaces)}")


if __name__ == "__main__":
    main()
