"""The ingest producer's partitioner and its refusal without a broker (the outage with a real
broker is in tests/integration/test_ingest_delivery.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace

import pytest
from aiokafka.structs import TopicPartition

from rapport.process import free_port
from rapport.settings import Settings
from streams.ingest_producer import Producer, StickyPartitioner


def test_sticky_partitioner_fills_runs_and_spreads_evenly() -> None:
    part = StickyPartitioner(run=4)
    picks = [part(None, [0, 1, 2], [0, 1, 2]) for _ in range(24)]
    runs = [picks[i : i + 4] for i in range(0, 24, 4)]
    assert all(len(set(r)) == 1 for r in runs)  # one partition per run of 4
    assert Counter(picks) == {0: 8, 1: 8, 2: 8}  # and all of them over time


def test_sticky_partitioner_leaves_unavailable_partitions_and_hashes_keys() -> None:
    part = StickyPartitioner(run=100)
    first = part(None, [0, 1, 2], [0, 1, 2])
    others = [p for p in (0, 1, 2) if p != first]
    assert part(None, [0, 1, 2], others) in others  # its partition lost its leader: move on
    assert part(None, [0, 1], []) in (0, 1)  # none known available: any partition
    keyed = {part(b"workspace-a", [0, 1, 2, 3], [0, 1, 2, 3]) for _ in range(10)}
    assert len(keyed) == 1  # keyed records keep the default (murmur2) placement


def test_send_before_connecting_refuses_at_once() -> None:
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", produce_timeout_s=5.0)

    async def go() -> None:
        producer = Producer(settings)
        producer.start()
        try:
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(producer.send(b"{}"), timeout=1.0)
            assert not producer.connected and not await producer.ready()
        finally:
            await producer.stop()

    asyncio.run(go())


class _Accumulator:
    def __init__(self) -> None:
        self.added: list[tuple[TopicPartition, bytes, float]] = []

    async def add_message(
        self, tp: TopicPartition, key: bytes | None, value: bytes, timeout: float
    ) -> str:
        assert key is None
        self.added.append((tp, value, timeout))
        return "future"


class _Cluster:
    def __init__(self) -> None:
        self.leaders: dict[int, int | None] = {}

    def leader_for_partition(self, tp: TopicPartition) -> int | None:
        return self.leaders.get(tp.partition, 1)


class _AIOKafka:
    """What `Producer._enqueue` touches of an AIOKafkaProducer; `send` runs the partitioner."""

    def __init__(self, partitioner: StickyPartitioner) -> None:
        self.partitioner = partitioner
        self.client = SimpleNamespace(cluster=_Cluster())
        self._message_accumulator = _Accumulator()
        self.sent: list[tuple[int, bytes]] = []

    async def send(self, topic: str, value: bytes) -> str:
        led = [p for p in (0, 1, 2) if self.client.cluster.leaders.get(p, 1) not in (None, -1)]
        self.sent.append((self.partitioner(None, [0, 1, 2], led), value))
        return "future"


def test_records_within_a_run_go_straight_to_the_accumulator() -> None:
    settings = Settings(produce_timeout_s=3.0)
    producer = Producer(settings)
    producer._sticky = StickyPartitioner(run=3)
    fake = _AIOKafka(producer._sticky)

    async def enqueue(value: bytes) -> str:
        return await producer._enqueue(fake, value)  # type: ignore[arg-type]

    async def go() -> None:
        for i in range(6):
            assert await enqueue(b"%d" % i) == "future"
        # each run's first record takes aiokafka's `send` (metadata, size check, partitioner) ...
        assert [value for _, value in fake.sent] == [b"0", b"3"]
        # ... the rest of the run goes to the same partition, with send's timeout
        added = fake._message_accumulator.added
        assert [value for _, value, _ in added] == [b"1", b"2", b"4", b"5"]
        assert [tp.partition for tp, _, _ in added[:2]] == [fake.sent[0][0]] * 2
        assert [tp.partition for tp, _, _ in added[2:]] == [fake.sent[1][0]] * 2
        assert all(tp.topic == settings.topic_raw and t == 3.0 for tp, _, t in added)
        # a partition that lost its leader, or a record near the request limit, takes `send`
        await enqueue(b"6")
        fake.client.cluster.leaders[fake.sent[-1][0]] = -1
        await enqueue(b"7")
        assert fake.sent[-1][1] == b"7" and fake.sent[-1][0] != fake.sent[-2][0]
        await enqueue(b"x" * producer._direct_limit)
        assert fake.sent[-1][1] == b"x" * producer._direct_limit

    asyncio.run(go())


def test_the_producer_stays_idempotent_with_acks_all() -> None:
    async def go() -> None:
        producer = Producer(Settings(produce_timeout_s=2.0))._new()
        try:
            assert producer._txn_manager is not None  # enable_idempotence=True
            assert producer._sender._acks == -1  # acks="all"
            assert producer._request_timeout_ms == 2000
        finally:
            await producer.stop()  # never started: closes nothing but its client

    asyncio.run(go())
