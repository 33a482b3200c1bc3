"""The replay's Kafka reader against aiokafka's consumer and librdkafka, same records.

Each reads the same snapshot of `rapport.events` (bench_replay's events, produced once to a
private broker) and does nothing with the records but count them and their bytes (checked equal):
  scan:       `streams.log_reader.scan_log`, the replay's reader (fetch requests through
              aiokafka's client, records straight from its C record batches);
  consumer:   `AIOKafkaConsumer.getmany` up to the same ends (what the replay read with before:
              the baseline);
  librdkafka: confluent-kafka's batched `consume`, when installed.
Rounds alternate (scan, consumer, librdkafka, scan, ...) so a change in the machine's load falls
on all. CPU is this process's (its threads included: librdkafka fetches in threads of its own),
from `os.times()`; the broker's, from `/proc`, is printed beside it (it is not in the ratios).

confluent-kafka is not a dependency of Rapport; without it the bench leaves librdkafka out and
says so:

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

from bench_replay import cpu_seconds, records
from common import private_broker, rate

from rapport.settings import Settings
from streams.archive import FETCH_RECORDS, Snapshot, _consumer, _scan, take_snapshot
from streams.eventlog import append_records
from streams.topics import ensure_topics

Reader = Callable[[Settings, Snapshot], tuple[int, int]]


def read_scan(settings: Settings, snapshot: Snapshot) -> tuple[int, int]:
    """(records, value bytes) of the snapshot through the replay's own scan."""
    import asyncio

    count = size = 0

    def on_records(partition: int, batch: list[Any]) -> None:
        nonlocal count, size
        count += len(batch)
        size += sum(len(r.value) for r in batch)

    asyncio.run(_scan(settings.kafka_bootstrap, snapshot, on_records))
    return count, size


def read_consumer(settings: Settings, snapshot: Snapshot) -> tuple[int, int]:
    """The same with `AIOKafkaConsumer.getmany`, the replay's settings before the scan."""
    import asyncio

    from aiokafka.structs import TopicPartition

    async def read() -> tuple[int, int]:
        consumer = _consumer(settings.kafka_bootstrap)  # the replay's reading settings before
        wanted = {
            TopicPartition(snapshot.topic, p): end
            for p, end in snapshot.ends.items()
            if end > snapshot.begins.get(p, 0)
        }
        count = size = 0
        await consumer.start()
        try:
            consumer.assign(list(wanted))
            await consumer.seek_to_beginning(*wanted)
            while wanted:
                fetched = await consumer.getmany(
                    *wanted, timeout_ms=1000, max_records=FETCH_RECORDS
                )
                for tp, got in fetched.items():
                    end = wanted.get(tp)
                    if end is None:
                        continue
                    below = [r for r in got if r.offset < end]
                    count += len(below)
                    size += sum(len(r.value) for r in below)
                    if got and got[-1].offset >= end - 1:
                        del wanted[tp]
                        consumer.pause(tp)
                for tp in list(wanted):
                    if await consumer.position(tp) >= wanted[tp]:
                        del wanted[tp]
        finally:
            await consumer.stop()
        return count, size

    return asyncio.run(read())


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
    """Runs one read; prints and returns its CPU seconds (and prints the broker's meanwhile)."""
    before, broker_before = os.times(), cpu_seconds(settings)[2]
    started = time.perf_counter()
    count, size = reader(settings, snapshot)
    after, wall = os.times(), time.perf_counter() - started
    broker = cpu_seconds(settings)[2] - broker_before
    cpu = (after.user - before.user) + (after.system - before.system)
    if count != snapshot.total:
        raise RuntimeError(f"{name} read {count:,} records of {snapshot.total:,}")
    print(
        f"  {name:<11} {wall:5.2f} s wall {rate(count, wall):>11}  CPU {cpu:5.2f} s "
        f"{cpu / count * 1e6:5.2f} us/record, broker {broker:4.2f} s  ({size:,} bytes)",
        flush=True,
    )
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    readers: list[tuple[str, Reader]] = [("scan", read_scan), ("consumer", read_consumer)]
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
    for name, _ in readers[1:]:
        ratios = [b / a for a, b in zip(cpu["scan"], cpu[name], strict=True)]
        print(
            f"CPU {name} / scan per round: "
            + ", ".join(f"{r:.2f}x" for r in ratios)
            + f"; the scan saves {min(cpu[name]) - max(cpu['scan']):.2f}-"
            f"{max(cpu[name]) - min(cpu['scan']):.2f} s of CPU per {snapshot.total:,} records"
        )


if __name__ == "__main__":
    main()
