"""Appending canonical events to `rapport.events` from outside the worker (CLI, import)."""

from __future__ import annotations

from collections.abc import Iterable

from events.models import Event, dump_event
from rapport.settings import Settings
from streams.keys import event_key


def append_events(settings: Settings, events: Iterable[Event], timeout_s: float = 60.0) -> int:
    """Produce events with acks=all, keyed like the normalizer does; returns how many."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        linger_ms=5,
        client_id="rapport-cli",
    )
    count = 0
    try:
        futures = []
        for event in events:
            futures.append(
                producer.send(settings.topic_events, key=event_key(event), value=dump_event(event))
            )
            count += 1
        producer.flush(timeout=timeout_s)
        for future in futures:
            future.get(timeout=timeout_s)  # raises if the broker refused any record
    finally:
        producer.close(timeout=timeout_s)
    return count
