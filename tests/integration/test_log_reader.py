"""`streams.log_reader.scan_log` against the real broker: exactly the asked offsets, in order.

The oracle is aiokafka's own consumer reading the same partitions (what the replay used before),
and what the test produced itself.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from streams.log_reader import LogReadError, scan_log

pytestmark = pytest.mark.integration

PARTITIONS = 3


def _topic(bootstrap: str, partitions: int = PARTITIONS) -> str:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    name = f"t{uuid.uuid4().hex[:8]}.scan"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="rapport-test")
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    return name


async def _produce(
    bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes]], batch: bool = True
) -> None:
    """(partition, key, value) records; with `batch`, each partition's go out together (a few
    record batches holding many records, so offsets fall inside batches)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50 if batch else 0)
    await producer.start()
    try:
        if batch:
            sent = [await producer.send(topic, v, key=k, partition=p) for p, k, v in records]
            await asyncio.gather(*sent)
        else:
            for p, k, v in records:
                await producer.send_and_wait(topic, v, key=k, partition=p)
    finally:
        await producer.stop()


async def _consumer_read(
    bootstrap: str, topic: str, ends: dict[int, int]
) -> dict[int, list[tuple[int, bytes | None, bytes | None]]]:
    """What aiokafka's consumer reads from each partition's start up to `ends`."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: dict[int, list[tuple[int, bytes | None, bytes | None]]] = {p: [] for p in ends}
    try:
        wanted = {TopicPartition(topic, p): end for p, end in ends.items() if end > 0}
        consumer.assign(list(wanted))
        await consumer.seek_to_beginning(*wanted)
        while wanted:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                end = wanted.get(tp)
                if end is None:
                    continue
                out[tp.partition] += [(r.offset, r.key, r.value) for r in records if r.offset < end]
                if records[-1].offset >= end - 1:
                    del wanted[tp]
                    consumer.pause(tp)
            for tp in list(wanted):  # a control batch may hold the last offsets
                if await consumer.position(tp) >= wanted[tp]:
                    del wanted[tp]
    finally:
        await consumer.stop()
    return out


def _scan(
    bootstrap: str, topic: str, begins: dict[int, int], ends: dict[int, int]
) -> tuple[dict[int, list[tuple[int, bytes | None, bytes | None]]], int]:
    """What the scan hands over per partition, and in how many calls."""
    got: dict[int, list[tuple[int, bytes | None, bytes | None]]] = {p: [] for p in ends}
    calls = 0

    def on_records(partition: int, records: list[Any]) -> None:
        nonlocal calls
        calls += 1
        got[partition] += [(r.offset, r.key, r.value) for r in records]

    asyncio.run(scan_log(bootstrap, topic, begins, ends, on_records))
    return got, calls


def _records(count: int) -> list[tuple[int, bytes, bytes]]:
    return [
        (i % PARTITIONS, f"k{i}".encode(), f'{{"n":{i},"pad":"{"x" * (i % 700)}"}}'.encode())
        for i in range(count)
    ]


def test_reads_every_record_below_the_ends_as_the_consumer_does(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    produced = _records(6_000)
    asyncio.run(_produce(kafka_bootstrap, topic, produced))
    per_partition = {p: [(k, v) for q, k, v in produced if q == p] for p in range(PARTITIONS)}
    ends = {p: len(rows) for p, rows in per_partition.items()}

    got, calls = _scan(kafka_bootstrap, topic, {}, ends)

    for p, rows in per_partition.items():
        expected = [(offset, k, v) for offset, (k, v) in enumerate(rows)]
        assert got[p] == expected, f"partition {p}"
    assert got == asyncio.run(_consumer_read(kafka_bootstrap, topic, ends))
    assert calls >= PARTITIONS


def test_begins_and_ends_inside_record_batches(kafka_bootstrap: str) -> None:
    """A fetch answers with whole batches: the records before the begin and from the end on
    must not be handed over."""
    topic = _topic(kafka_bootstrap, partitions=1)
    produced = [(0, f"k{i}".encode(), f"v{i}".encode()) for i in range(500)]
    asyncio.run(_produce(kafka_bootstrap, topic, produced))  # one or a few batches

    got, _ = _scan(kafka_bootstrap, topic, {0: 123}, {0: 377})

    assert [o for o, _, _ in got[0]] == list(range(123, 377))
    assert [v for _, _, v in got[0]] == [f"v{i}".encode() for i in range(123, 377)]


def test_control_batches_of_transactions_are_skipped(kafka_bootstrap: str) -> None:
    """A transaction's commit marker takes an offset but is no record: read_uncommitted sees
    the transaction's records (committed or aborted) and no marker."""
    from aiokafka import AIOKafkaProducer

    topic = _topic(kafka_bootstrap, partitions=1)

    async def produce() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, transactional_id=f"scan-{uuid.uuid4().hex[:6]}"
        )
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(3):
                    await producer.send_and_wait(topic, f"t{i}".encode(), partition=0)
        finally:
            await producer.stop()
        await _produce(kafka_bootstrap, topic, [(0, b"k", b"after")], batch=False)

    asyncio.run(produce())
    # 4 records and the commit marker: 5 offsets (the marker's place depends on when the broker
    # wrote it).
    deadline = time.monotonic() + 30
    while _end(kafka_bootstrap, topic) < 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    got, _ = _scan(kafka_bootstrap, topic, {}, {0: 5})
    assert [v for _, _, v in got[0]] == [b"t0", b"t1", b"t2", b"after"]
    offsets = [o for o, _, _ in got[0]]
    assert offsets == sorted(set(offsets)) and len(set(range(5)) - set(offsets)) == 1
    assert got == asyncio.run(_consumer_read(kafka_bootstrap, topic, {0: 5}))


def _end(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        return int(consumer.end_offsets([tp])[tp])
    finally:
        consumer.close()


def test_an_end_past_the_partition_is_an_error_not_a_wait(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap, partitions=1)
    asyncio.run(_produce(kafka_bootstrap, topic, [(0, b"k", b"v")] * 10))
    started = time.monotonic()
    with pytest.raises(LogReadError, match="ends at offset 10, below the 20"):
        _scan(kafka_bootstrap, topic, {}, {0: 20})
    assert time.monotonic() - started < 20


def test_events_deleted_under_the_scan_are_an_error_not_a_gap(kafka_bootstrap: str) -> None:
    """A partition whose start moved past the asked begin (retention, DeleteRecords) would
    silently lose events: the scan refuses."""
    from kafka import KafkaAdminClient
    from kafka.structs import TopicPartition

    topic = _topic(kafka_bootstrap, partitions=1)
    asyncio.run(_produce(kafka_bootstrap, topic, [(0, b"k", b"v")] * 50))
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="rapport-test")
    try:
        admin.delete_records({TopicPartition(topic, 0): 30})
    finally:
        admin.close()
    with pytest.raises(LogReadError, match=r"OffsetOutOfRange.*deleted"):
        _scan(kafka_bootstrap, topic, {0: 0}, {0: 50})
    got, _ = _scan(kafka_bootstrap, topic, {0: 30}, {0: 50})
    assert [o for o, _, _ in got[0]] == list(range(30, 50))


def test_nothing_to_read_reads_nothing(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap, partitions=1)
    got, calls = _scan(kafka_bootstrap, topic, {0: 0}, {0: 0})
    assert got == {0: []} and calls == 0
