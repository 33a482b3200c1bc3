"""Appending to Rapport's topics from outside the worker (CLI, import, replay).

Records are grouped into one batch per partition and sent with aiokafka's `send_batch` (acks=all):
several times faster than a future per record (the import of a large file, the replay's
changelogs). The partition of a keyed record is the one Kafka's default partitioner gives
(murmur2 of the key, as kafka-python, aiokafka and the Java client compute it), so a key lands
where the normalizer and Faust would put it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any

from events.models import Event, dump_event
from rapport.settings import Settings
from streams.keys import event_key

MAX_REQUEST = 8 * 1024 * 1024
BATCH_BYTES = 1024 * 1024


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition of a key (murmur2, positive, modulo the partition count)."""
    from aiokafka.partitioner import murmur2

    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


def append_events(
    settings: Settings,
    events: Iterable[Event],
    timeout_s: float = 60.0,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Produce events to `rapport.events` keyed like the normalizer does; returns how many."""
    return append_records(
        settings,
        settings.topic_events,
        ((event_key(event), dump_event(event)) for event in events),
        timeout_s=timeout_s,
        progress=progress,
    )


def append_records(
    settings: Settings,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    *,
    timeout_s: float = 60.0,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Produce (key, value) records with acks=all; raises if the broker refused any."""
    coro = _append(settings.kafka_bootstrap, topic, records, timeout_s, progress)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from inside an event loop (an async caller): run on a loop of our own.
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["count"] = asyncio.run(coro)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, name="rapport-append")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return int(result["count"])


async def _append(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    timeout_s: float,
    progress: Callable[[int], None] | None,
) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=BATCH_BYTES,
        max_request_size=MAX_REQUEST,
        request_timeout_ms=int(timeout_s * 1000),
        client_id="rapport-cli",
    )
    await producer.start()
    count = 0
    try:
        partitions = sorted(await producer.partitions_for(topic))
        if not partitions:
            raise RuntimeError(f"topic {topic} has no partitions (does it exist?)")
        batches: dict[int, Any] = {}
        pending: list[asyncio.Future[Any]] = []
        sizes: dict[int, int] = {}
        spread = 0

        async def send(partition: int) -> None:
            batch = batches.pop(partition)
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=partition))
            if progress is not None:
                progress(sizes.pop(partition))
            else:
                sizes.pop(partition)

        for key, value in records:
            if key is not None:
                partition = partitions[partition_for(key, len(partitions))]
            else:
                partition = partitions[spread % len(partitions)]
                spread += 1
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                await send(partition)
                batch = batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a record of {len(value or b'')} bytes exceeds the limit")
            sizes[partition] = sizes.get(partition, 0) + 1
            count += 1
            if len(pending) > 64:  # bound what is in flight
                done = [f for f in pending if f.done()]
                if len(done) < 32:
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    done = [f for f in pending if f.done()]
                for future in done:
                    future.result()  # raises if the broker refused the batch
                    pending.remove(future)
        for partition in list(batches):
            await send(partition)
        await asyncio.wait_for(asyncio.gather(*pending), timeout_s)
    finally:
        await producer.stop()
    return count
