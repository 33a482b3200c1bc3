"""The replay's Kafka reader (aiokafka) against librdkafka (confluent-kafka), same records.

Both read the same snapshot of `rapport.events` (bench_replay's events, produced once to a
private broker) and do nothing with the records but count them and their bytes (checked equal).
Rounds alternate (aiokafka, librdkafka, aiokafka, ...) so a change in the machine's load falls on
both. CPU is this process's (its threads included: librdkafka fetches in threads of its own),
from `os.times()`; the broker's is left out, it serves both the same way.

confluent-kafka is not a dependency of Rapport (the replay reads with aiokafka); without it the
bench measures aiokafka alone and says so:

    .venv/bin/pip install confluent-kafka     # for the comparison
    .venv/bin/python bench/bench_readers.py [--events 500000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_replay import records
from common import private_broker, rate

from rapport.settings import Settings
from streams.archive import Snapshot, _scan, take_snapshot
from streams.eventlog import append_records
from streams.topics import ensure_topics

Reader = Callable[[Settings, Snapshot], tuple[int, int]]


def read_aiokafka(settings: Settings, snapshot: Snapshot) -> tuple[int, int]:
    """(records, value bytes) of the snapshot through the replay's own scan."""
    import asyncio

    count = size = 0

    def on_records(partition: int, batch: list[Any]) -> None:
        nonlocal count, size
        count += len(batch)
        size += sum(len(r.value) for r in batch)

    asyncio.run(_scan(settings.kafka_bootstrap, snapshot, on_records))
    return count, size


def read_librdkafka(settings: Settings, snapshot: Snapshot) -> tuple[int, int]:
    """The same with confluent-kafka's batched `consume`, up to the same end offsets."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "rapport-bench-readers",
            "enable.auto.commit": False,
            "fetch.max.bytes": 50 * 1024 * 1024,
            "max.partition.fetch.bytes": 10 * 1024 * 1024,
        }
    )
    ends = {p: e for p, e in snapshot.ends.items() if e > snapshot.begins.get(p, 0)}
    consumer.assign(
        [TopicPartition(snapshot.topic, p, snapshot.begins.get(p, 0)) for p in sorted(ends)]
    )
    count = size = 0
    try:
        while ends:
            for message in consumer.consume(num_messages=10_000, timeout=1.0):
                error = message.error()
                if error is not None:
                    raise RuntimeError(f"librdkafka: {error}")
                partition, offset = message.partition(), message.offset()
                end = ends.get(partition)
                if end is None or offset >= end:
                    continue
                count += 1
                size += len(message.value())
                if offset >= end - 1:
                    del ends[partition]
    finally:
        consumer.close()
    return count, size


def measure(name: str, reader: Reader, settings: Settings, snapshot: Snapshot) -> float:
    """Runs one read; prints and returns its CPU seconds."""
    before, started = os.times(), time.perf_counter()
    count, size = reader(settings, snapshot)
    after, wall = os.times(), time.perf_counter() - started
    cpu = (after.user - before.user) + (after.system - before.system)
    if count != snapshot.total:
        raise RuntimeError(f"{name} read {count:,} records of {snapshot.total:,}")
    print(
        f"  {name:<11} {wall:5.2f} s wall {rate(count, wall):>11}  CPU {cpu:5.2f} s "
        f"{cpu / count * 1e6:5.2f} us/record  ({size:,} bytes)",
        flush=True,
    )
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    readers: list[tuple[str, Reader]] = [("aiokafka", read_aiokafka)]
    try:
        import confluent_kafka

        readers.append(("librdkafka", read_librdkafka))
        print(f"confluent-kafka {importlib.metadata.version('confluent-kafka')}, librdkafka "
              f"{confluent_kafka.libversion()[0]}")  # fmt: skip
    except ImportError:
        print("librdkafka not measured: confluent-kafka is not installed (see the docstring)")
    with private_broker(partitions=8) as (settings, _root):
        ensure_topics(settings)
        append_records(settings, settings.topic_events, records(args.events), timeout_s=300)
        snapshot = take_snapshot(settings)
        print(f"{snapshot.total:,} records in 8 partitions")
        cpu: dict[str, list[float]] = {name: [] for name, _ in readers}
        for number in range(1, args.rounds + 1):
            print(f"round {number}")
            for name, reader in readers:
                cpu[name].append(measure(name, reader, settings, snapshot))
    if len(readers) == 2:
        ratios = [a / b for a, b in zip(cpu["aiokafka"], cpu["librdkafka"], strict=True)]
        print(
            "CPU aiokafka / librdkafka per round: "
            + ", ".join(f"{r:.2f}x" for r in ratios)
            + f"; librdkafka would save {min(cpu['aiokafka']) - max(cpu['librdkafka']):.2f}-"
            f"{max(cpu['aiokafka']) - min(cpu['librdkafka']):.2f} s of CPU per "
            f"{snapshot.total:,} records"
        )


if __name__ == "__main__":
    main()
