"""Prometheus series of one ingest process.

Labels are bounded: `platform` is one of the known protocols or `unknown` (the URL's platform
segment is caller-controlled), `status` an HTTP status, `reason` a refusal class from
`streams.webhooks.REFUSAL_CLASSES`. No workspace label: tenants are unbounded and the URL's
workspace segment is caller-controlled too.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streams.webhooks import PROTOCOLS, REFUSAL_CLASSES

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


def platform_label(platform: str) -> str:
    return platform if platform in PROTOCOLS else "unknown"


class Metrics:
    """Requests by platform and status, refusals by class, produce latency, in-flight."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rapport_ingest_requests_total",
            "Webhook requests by platform and HTTP status",
            ["platform", "status"],
            registry=self.registry,
        )
        self.refused = Counter(
            "rapport_ingest_refused_total",
            "Webhook requests refused, by platform and reason class "
            f"({', '.join(REFUSAL_CLASSES)})",
            ["platform", "reason"],
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
        # Label children resolved once: the hot path must not pay for label lookups.
        self._requests: dict[tuple[str, int], Counter] = {}
        for platform in [*PROTOCOLS, "unknown"]:
            for reason in REFUSAL_CLASSES:
                self.refused.labels(platform, reason)

    def count(self, platform: str, status: int) -> None:
        key = (platform_label(platform), status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(*key)
        child.inc()

    def refuse(self, platform: str, reason: str) -> None:
        if reason not in REFUSAL_CLASSES:
            reason = "malformed"
        self.refused.labels(platform_label(platform), reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
