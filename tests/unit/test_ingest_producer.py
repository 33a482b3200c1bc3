"""The ingest producer's partitioner and its refusal without a broker (the outage with a real
broker is in tests/integration/test_ingest_delivery.py)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

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
