"""The ingest service: authenticate a webhook, put its raw bytes in Kafka, then answer 2xx.

It never parses bodies deeply (that is the worker's job) and keeps no state, so several
instances can run behind one address. 2xx means the envelope is in `rapport.raw` with acks=all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from events.envelope import KEPT_HEADERS, RawEnvelope
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry
from streams.webhooks import PROTOCOLS, Reply

log = logging.getLogger("rapport.ingest")


class Metrics:
    """Prometheus series of one ingest process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rapport_ingest_requests_total",
            "Webhook requests by platform and HTTP status",
            ["platform", "status"],
            registry=self.registry,
        )
        self.produce_seconds = Histogram(
            "rapport_ingest_produce_seconds",
            "Time from request to broker ack",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "rapport_ingest_in_flight", "Requests being handled", registry=self.registry
        )


class Producer:
    """An idempotent acks=all producer that (re)connects in the background."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None

    def _new(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id="rapport-ingest",
            acks="all",
            enable_idempotence=True,
            max_request_size=8 * 1024 * 1024,
            linger_ms=2,
            request_timeout_ms=int(self.settings.produce_timeout_s * 1000),
        )

    async def _connect_forever(self) -> None:
        delay = 0.2
        while self._producer is None:
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
                delay = min(delay * 2, 5.0)
                continue
            self._producer = producer
            log.info("connected to Kafka at %s", self.settings.kafka_bootstrap)

    def start(self) -> None:
        self._connector = asyncio.create_task(self._connect_forever())

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def send(self, value: bytes) -> None:
        """Produce and wait for the broker's ack; raises on failure or timeout."""
        if self._producer is None:
            raise ConnectionError("not connected to Kafka yet")
        await asyncio.wait_for(
            self._producer.send_and_wait(self.settings.topic_raw, value),
            timeout=self.settings.produce_timeout_s,
        )

    async def ready(self) -> bool:
        """Whether the broker answers a metadata request now."""
        if self._producer is None:
            return False
        try:
            return bool(
                await asyncio.wait_for(self._producer.client.force_metadata_update(), timeout=2.0)
            ) and bool(self._producer.client.cluster.brokers())
        except (TimeoutError, KafkaError, OSError):
            return False

    async def stop(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self._producer is not None:
            await self._producer.stop()


def _reply(reply: Reply) -> web.Response:
    if reply.content_type == "application/json":
        return web.json_response(reply.body, status=reply.status, headers=dict(reply.headers))
    return web.Response(
        text=str(reply.body),
        status=reply.status,
        content_type=reply.content_type,
        headers=dict(reply.headers),
    )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def create_ingest_app(settings: Settings, registry: WorkspaceRegistry) -> web.Application:
    """The aiohttp application of the ingest service."""
    metrics = Metrics()
    producer = Producer(settings)
    app = web.Application(client_max_size=settings.max_body_bytes)

    def count(platform: str, response: web.StreamResponse) -> web.StreamResponse:
        metrics.requests.labels(platform, str(response.status)).inc()
        return response

    def resolve(request: web.Request) -> tuple[Any, Any] | web.Response:
        workspace = registry.get(request.match_info["workspace"])
        protocol = PROTOCOLS.get(request.match_info["platform"])
        if workspace is None:
            return _error(404, "unknown workspace")
        if protocol is None:
            return _error(404, f"unknown platform; one of: {', '.join(sorted(PROTOCOLS))}")
        return workspace, protocol

    async def handshake(request: web.Request) -> web.StreamResponse:
        platform = request.match_info["platform"]
        found = resolve(request)
        if isinstance(found, web.Response):
            return count(platform, found)
        workspace, protocol = found
        reply = protocol.handshake(workspace, request.query, request.headers)
        if reply is None:
            return count(platform, _error(400, "not a verification request for this platform"))
        return count(platform, _reply(reply))

    async def deliver(request: web.Request) -> web.StreamResponse:
        platform = request.match_info["platform"]
        started = time.perf_counter()
        metrics.in_flight.inc()
        try:
            return count(platform, await _deliver(request, started))
        finally:
            metrics.in_flight.dec()

    async def _deliver(request: web.Request, started: float) -> web.Response:
        found = resolve(request)
        if isinstance(found, web.Response):
            return found
        workspace, protocol = found
        if request.content_length is not None and request.content_length > settings.max_body_bytes:
            return _error(413, f"body over the limit of {settings.max_body_bytes} bytes")
        mime = request.content_type
        if mime != "application/json" and not mime.endswith("+json"):
            return _error(415, f"content type must be application/json, got {mime or 'none'}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body over the limit of {settings.max_body_bytes} bytes")
        verdict = protocol.verify(workspace, request.headers, body, time.time())
        if not verdict.ok:
            return _error(verdict.status, verdict.reason)
        reply = protocol.post_handshake(workspace, request.headers, body)
        if reply is not None:
            return _reply(reply)
        envelope = RawEnvelope(
            workspace=workspace.name,
            source=protocol.name,
            received_at=datetime.now(UTC),
            headers={k.lower(): v for k, v in request.headers.items() if k.lower() in KEPT_HEADERS},
            body=body,
        )
        try:
            await producer.send(envelope.dumps())
        except (TimeoutError, KafkaError, ConnectionError, OSError) as exc:
            log.warning(
                "could not hand a %s delivery to Kafka: %s",
                protocol.name,
                exc or type(exc).__name__,
            )
            return web.json_response(
                {"error": "event log unavailable, retry later"},
                status=503,
                headers={"Retry-After": "5"},
            )
        metrics.produce_seconds.observe(time.perf_counter() - started)
        return web.json_response({"status": "accepted"}, status=200)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if await producer.ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "kafka unavailable"}, status=503)

    async def metrics_view(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        producer.start()
        yield
        await producer.stop()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/webhooks/{workspace}/{platform}", handshake)
    app.router.add_post("/webhooks/{workspace}/{platform}", deliver)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    app["rapport_metrics"] = metrics
    return app


def run_ingest(settings: Settings, registry: WorkspaceRegistry) -> None:
    """Serve the ingest in the foreground until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    web.run_app(
        create_ingest_app(settings, registry),
        host=settings.ingest_host,
        port=settings.ingest_port,
        access_log=None,
        print=lambda *_: log.info("ingest listening on %s", settings.ingest_url),
    )
