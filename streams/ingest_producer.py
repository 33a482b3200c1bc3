"""The ingest's Kafka producer: idempotent, acks=all, and never late.

"Never late" is the point of this module. An idempotent aiokafka producer retries a batch until
the broker takes it, however long that is, so a delivery the ingest already refused with 503
(the platform will retry it) could still reach the log once the broker returns, next to the
platform's retry. So when a send fails or overruns `produce_timeout_s`, the producer that holds
it is retired: its unsent batches are failed, it is closed, and a fresh producer (a new producer
id) connects in the background; until it has, deliveries are answered 503 at once. The only
duplicate left is a request the broker had already written when its connection died, which
at-least-once delivery allows and the worker's deterministic event ids collapse.

Throughput (bench/bench_ingest.py): aiokafka keeps one request in flight per broker, so records
batch up while it is out; a sticky partitioner and `linger_ms=2` make those batches few and
full (about 35 records a request at 64 concurrent deliveries). Batches may grow to 512 KiB:
at aiokafka's default of 16 KiB a partition's batch filled in one round trip, and every
further send to it waited for that batch to leave. Records within a partition's run skip
`AIOKafkaProducer.send`'s per-record bookkeeping (see `Producer._enqueue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Awaitable
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

from rapport.settings import Settings

log = logging.getLogger("rapport.ingest")

# Errors that mean "not in the log (as far as we know)": the ingest answers 503 for these.
SEND_ERRORS = (TimeoutError, KafkaError, ConnectionError, OSError)
WATCH_INTERVAL_S = 0.05
BATCH_BYTES = 512 * 1024  # a batch's size limit; the topic takes 8 MiB (streams.topics)
MAX_REQUEST_BYTES = 8 * 1024 * 1024


class StickyPartitioner:
    """Key-less records fill one partition for a run of `run` records, then the next one.

    aiokafka picks a random partition per key-less record, which splits every linger window
    into one small batch per partition; a run per partition gives few, full batches (what the
    Java client's sticky partitioner does) at the same long-run spread.
    """

    def __init__(self, run: int = 256) -> None:
        self.run = run
        self._keyed = DefaultPartitioner()
        self._turn = 0
        self._left = 0
        self._current = -1

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is not None:
            return int(self._keyed(key, all_partitions, available))
        candidates = available or all_partitions
        if self._left <= 0 or self._current not in candidates:
            self._turn += 1
            self._current = candidates[self._turn % len(candidates)]
            self._left = self.run
        self._left -= 1
        return self._current

    def in_run(self) -> int | None:
        """The current run's partition while it has records left, else None (see `take`)."""
        return self._current if self._left > 0 else None

    def take(self) -> None:
        """Count one record placed in the current run's partition without a call."""
        self._left -= 1


class Producer:
    """An idempotent acks=all producer that (re)connects in the background."""

    def __init__(self, settings: Settings, linger_ms: int = 2) -> None:
        self.settings = settings
        self.topic = settings.topic_raw
        self.linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._retired: weakref.WeakSet[AIOKafkaProducer] = weakref.WeakSet()
        self._deadlines: deque[tuple[float, asyncio.Future[Any], AIOKafkaProducer]] = deque()
        self._sticky = StickyPartitioner()  # the current producer's (each producer gets one)
        self._partitions: dict[int, TopicPartition] = {}
        # Records this size or larger take aiokafka's `send`, with its request-size check.
        self._direct_limit = MAX_REQUEST_BYTES - 64 * 1024
        self._watchdog: asyncio.Task[None] | None = None
        self._stopped = False
        self.retired = 0  # producers retired after a failed or late send (for tests and logs)

    def _new(self) -> AIOKafkaProducer:
        self._sticky = StickyPartitioner()
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id="rapport-ingest",
            acks="all",
            enable_idempotence=True,
            max_request_size=MAX_REQUEST_BYTES,
            linger_ms=self.linger_ms,
            max_batch_size=BATCH_BYTES,
            partitioner=self._sticky,
            request_timeout_ms=int(self.settings.produce_timeout_s * 1000),
        )

    async def _connect_forever(self) -> None:
        delay = 0.2
        while self._producer is None and not self._stopped:
            producer = self._new()
            try:
                await producer.start()
            except (KafkaError, OSError) as exc:
                log.warning(
                    "Kafka at %s not reachable yet (%s); retrying",
                    self.settings.kafka_bootstrap,
                    exc,
                )
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._producer = producer
            log.info("connected to Kafka at %s", self.settings.kafka_bootstrap)

    def start(self) -> None:
        """Connect in the background (again, after a retirement); idempotent."""
        if self._stopped:
            return
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch_deadlines())
        if self._connector is None or self._connector.done():
            self._connector = asyncio.create_task(self._connect_forever())

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def send(self, value: bytes) -> None:
        """Produce and wait for the broker's ack; raises one of SEND_ERRORS otherwise.

        When this raises, the record will not be written later by this process. The deadline is
        kept by one watchdog task for all sends (a timer per request is measurable at thousands
        of requests per second): a send still unacknowledged at its deadline retires the
        producer, which fails every record it holds.
        """
        producer = self._producer
        if producer is None:
            raise ConnectionError("not connected to Kafka (reconnecting)")
        deadline = asyncio.get_running_loop().time() + self.settings.produce_timeout_s
        try:
            # aiokafka bounds this part (metadata, a full buffer) by request_timeout_ms
            future = await self._enqueue(producer, value)
            self._deadlines.append((deadline, future, producer))
            await future
        except SEND_ERRORS as exc:
            self._retire(producer, exc)
            raise

    def _enqueue(self, producer: AIOKafkaProducer, value: bytes) -> Awaitable[asyncio.Future[Any]]:
        """Hand `value` to aiokafka: straight to its accumulator while a sticky run lasts.

        `AIOKafkaProducer.send` waits on the topic's metadata, copies its partition lists,
        checks the size and asks the partitioner, for every record (about 5 us, a few per cent
        of a delivery); it then appends to the accumulator, which is what this does directly
        when the partition is already chosen: within a run whose partition has a leader, for
        a record well under the request limit. A run's first record, a partition without a
        leader and a large record take `send`, with all its checks (it starts the next run).
        """
        partition = self._sticky.in_run()
        if partition is not None and len(value) < self._direct_limit:
            tp = self._partitions.get(partition)
            if tp is None:
                tp = self._partitions[partition] = TopicPartition(self.topic, partition)
            leader = producer.client.cluster.leader_for_partition(tp)
            if leader is not None and leader >= 0:
                self._sticky.take()
                # the timeout `send` passes: its request_timeout_ms, our produce_timeout_s
                timeout = self.settings.produce_timeout_s
                added = producer._message_accumulator.add_message(tp, None, value, timeout)
                return cast(Awaitable[asyncio.Future[Any]], added)
        return cast(Awaitable[asyncio.Future[Any]], producer.send(self.topic, value))

    async def _watch_deadlines(self) -> None:
        loop = asyncio.get_running_loop()
        pending = self._deadlines
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = loop.time()
            while pending and (pending[0][0] <= now or pending[0][1].done()):
                _, future, producer = pending.popleft()
                if not future.done():
                    late = TimeoutError("no broker ack within produce_timeout_s")
                    self._retire(producer, late)  # fails every record it holds
                    if not future.done():  # in case aiokafka's internals ever move
                        future.set_exception(late)

    def _retire(self, producer: AIOKafkaProducer, cause: BaseException) -> None:
        """Drop everything `producer` still holds and replace it (see the module docstring)."""
        if producer in self._retired:
            return
        self._retired.add(producer)
        if self._producer is producer:
            self._producer = None
            self.retired += 1
            log.warning("retiring the Kafka producer after %r; reconnecting", cause)
            self.start()
        accumulator = getattr(producer, "_message_accumulator", None)
        if accumulator is not None:  # aiokafka's pending batches: fail them, never send them
            accumulator.fail_all(KafkaTimeoutError("retired after a failed or late send"))
        task = asyncio.create_task(self._close(producer))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close(producer: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10.0):
                await producer.stop()

    async def ready(self) -> bool:
        """Whether the broker answers a metadata request now."""
        producer = self._producer
        if producer is None:
            return False
        try:
            async with asyncio.timeout(2.0):
                updated = await producer.client.force_metadata_update()
            return bool(updated) and bool(producer.client.cluster.brokers())
        except (TimeoutError, KafkaError, OSError):
            return False

    async def stop(self) -> None:
        self._stopped = True
        for task in (self._connector, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._producer is not None:
            await self._close(self._producer)
            self._producer = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
