"""Prometheus series of one ingest process.

Labels are bounded: `platform` is one of the known protocols or `unknown` (the URL's platform
segment is caller-controlled), `status` an HTTP status, `reason` a refusal class from
`streams.webhooks.REFUSAL_CLASSES`. No workspace label: tenants are unbounded and the URL's
workspace segment is caller-controlled too.

The three series every delivery touches (requests, produce latency, in-flight) are plain
numbers on the hot path, turned into the usual counter, histogram and gauge families only when
`/metrics` is scraped: prometheus_client's metric objects take a lock and walk the buckets in
Python on every update (about 5 us a delivery, measurable at thousands of requests a second).
The process is one event loop, so nothing else updates them concurrently.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample

from streams.webhooks import PROTOCOLS, REFUSAL_CLASSES

__all__ = ["CONTENT_TYPE_LATEST", "PRODUCE_BUCKETS", "Metrics"]

INF = float("inf")
PRODUCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def platform_label(platform: str) -> str:
    return platform if platform in PROTOCOLS else "unknown"


class Metrics:
    """Requests by platform and status, refusals by class, produce latency, in-flight."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.refused = Counter(
            "rapport_ingest_refused_total",
            "Webhook requests refused, by platform and reason class "
            f"({', '.join(REFUSAL_CLASSES)})",
            ["platform", "reason"],
            registry=self.registry,
        )
        for platform in [*PROTOCOLS, "unknown"]:
            for reason in REFUSAL_CLASSES:
                self.refused.labels(platform, reason)
        self.created = time.time()
        self._requests: dict[tuple[str, int], list[float]] = {}  # label -> [count, created]
        self._produce_counts = [0] * (len(PRODUCE_BUCKETS) + 1)  # the last one is +Inf
        self._produce_sum = 0.0
        self.in_flight = 0  # requests being handled; the handler adds and removes itself
        self.registry.register(_Collector(self))

    def count(self, platform: str, status: int) -> None:
        key = (platform if platform in PROTOCOLS else "unknown", status)
        entry = self._requests.get(key)
        if entry is None:
            entry = self._requests[key] = [0, time.time()]
        entry[0] += 1

    def observe_produce(self, seconds: float) -> None:
        """One delivery's time from request to broker ack."""
        self._produce_counts[bisect_left(PRODUCE_BUCKETS, seconds)] += 1
        self._produce_sum += seconds

    def refuse(self, platform: str, reason: str) -> None:
        if reason not in REFUSAL_CLASSES:
            reason = "malformed"
        self.refused.labels(platform_label(platform), reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Collector:
    """The hot-path series as Prometheus families, at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(
            "rapport_ingest_requests",
            "Webhook requests by platform and HTTP status",
            labels=["platform", "status"],
        )
        for (platform, status), (count, created) in m._requests.items():
            requests.add_metric([platform, str(status)], count, created=created)
        yield requests
        cumulative, buckets = 0, []
        for bound, count in zip((*PRODUCE_BUCKETS, INF), m._produce_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == INF else repr(bound), float(cumulative)))
        produce = HistogramMetricFamily(
            "rapport_ingest_produce_seconds", "Time from request to broker ack"
        )
        produce.add_metric([], buckets, sum_value=m._produce_sum)
        produce.samples.append(Sample("rapport_ingest_produce_seconds_created", {}, m.created))
        yield produce
        yield GaugeMetricFamily(
            "rapport_ingest_in_flight", "Requests being handled", value=m.in_flight
        )
