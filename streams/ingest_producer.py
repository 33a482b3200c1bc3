"""The ingest's Kafka producer: idempotent, acks=all, and never late.

"Never late" is the point of this module. An idempotent aiokafka producer retries a batch until
the broker takes it, however long that is, so a delivery the ingest already refused with 503
(the platform will retry it) could still reach the log once the broker returns, next to the
platform's retry. So when a send fails or overruns `produce_timeout_s`, the producer that holds
it is retired: its unsent batches are failed, it is closed, and a fresh producer (a new producer
id) connects in the background; until it has, deliveries are answered 503 at once. The only
duplicate left is a request the broker had already written when its connection died, which
at-least-once delivery allows and the worker's deterministic event ids collapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from rapport.settings import Settings

log = logging.getLogger("rapport.ingest")

# Errors that mean "not in the log (as far as we know)": the ingest answers 503 for these.
SEND_ERRORS = (TimeoutError, KafkaError, ConnectionError, OSError)


class Producer:
    """An idempotent acks=all producer that (re)connects in the background."""

    def __init__(self, settings: Settings, linger_ms: int = 2) -> None:
        self.settings = settings
        self.topic = settings.topic_raw
        self.linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._stopped = False
        self.retired = 0  # producers retired after a failed or late send (for tests and logs)

    def _new(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id="rapport-ingest",
            acks="all",
            enable_idempotence=True,
            max_request_size=8 * 1024 * 1024,
            linger_ms=self.linger_ms,
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
        if self._stopped or (self._connector is not None and not self._connector.done()):
            return
        self._connector = asyncio.create_task(self._connect_forever())

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def send(self, value: bytes) -> None:
        """Produce and wait for the broker's ack; raises one of SEND_ERRORS otherwise.

        When this raises, the record will not be written later by this process.
        """
        producer = self._producer
        if producer is None:
            raise ConnectionError("not connected to Kafka (reconnecting)")
        try:
            async with asyncio.timeout(self.settings.produce_timeout_s):
                await producer.send_and_wait(self.topic, value)
        except SEND_ERRORS as exc:
            self._retire(producer, exc)
            raise

    def _retire(self, producer: AIOKafkaProducer, cause: BaseException) -> None:
        """Drop everything `producer` still holds and replace it (see the module docstring)."""
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
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self._producer is not None:
            await self._close(self._producer)
            self._producer = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
