"""The Faust worker: normalize raw deliveries, project relationships, sink to ClickHouse.

    rapport.raw --normalize--> rapport.events --project (table)--> rapport.relationships
                                     |                                   |
                                     +--sink--> interactions             +--sink--> relationships
    rapport.deadletters --sink--> dead_letters

Agents only load, apply the pure functions (events.delivery, projections.relationship) and save.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import faust
from faust.web import Request, Response, View

from events.delivery import DeadLetter, process_delivery
from events.models import Interaction, dump_event, parse_event
from projections import relationship
from projections.relationship import RelationshipState, relationship_key
from projections.rows import interaction_row, relationship_row
from projections.schema import DEAD_LETTER_COLUMNS, INTERACTION_COLUMNS, RELATIONSHIP_COLUMNS
from projections.store import READ_ONLY_SQL, encode_result
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry
from streams.sink import ClickHouseSink, batch_token

log = logging.getLogger("rapport.worker")


def _batches(stream: faust.StreamT[bytes]) -> faust.Stream[bytes]:
    """Faust's concrete Stream has take_events (acks after the consumer resumes); StreamT not."""
    return cast("faust.Stream[bytes]", stream)


def event_key(event: Interaction) -> str:
    """Events of one relationship share a partition; others go by their actor."""
    if event.contact is not None and event.direction.counts:
        return relationship_key(event.workspace, event.contact.key)
    return relationship_key(event.workspace, f"~{event.actor.key}")


def create_app(settings: Settings, registry: WorkspaceRegistry) -> faust.App:
    """A Faust app wired to the settings' broker, topics and ClickHouse."""
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=settings.worker_store,
        datadir=str(settings.home / "worker"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=0,
        producer_acks=-1,
        producer_max_request_size=8 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=True,
        web_bind=settings.worker_host,
        web_host=settings.worker_host,
        web_port=settings.worker_port,
        autodiscover=False,
    )
    sink = ClickHouseSink(
        settings.clickhouse_url, settings.clickhouse_database, settings.sink_retry_max_s
    )
    app.rapport_sink = sink  # type: ignore[attr-defined]

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, partitions=settings.partitions, key_type=bytes, value_type=bytes)

    raw_topic = topic(settings.topic_raw)
    events_topic = topic(settings.topic_events)
    relationships_topic = topic(settings.topic_relationships)
    deadletters_topic = topic(settings.topic_deadletters)

    table = app.Table(
        "relationships",
        default=None,
        partitions=settings.partitions,
        key_type=str,
        value_type=dict,
    )  # keys and values of non-Record types use the json codec in the changelog

    @app.task
    async def open_clickhouse() -> None:
        await sink.start()

    @app.agent(raw_topic)
    async def normalize(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        from events.models import RawPointer

        async for event in stream.events():
            msg = event.message
            pointer = RawPointer(topic=msg.topic, partition=msg.partition, offset=msg.offset)
            outcome = process_delivery(registry, event.value, pointer, datetime.now(UTC))
            for interaction in outcome.events:
                await events_topic.send(
                    key=event_key(interaction).encode(), value=dump_event(interaction)
                )
            if outcome.dead_letter is not None:
                log.warning(
                    "dead letter %s:%s: %s", msg.partition, msg.offset, outcome.dead_letter.reason
                )
                await deadletters_topic.send(
                    key=outcome.dead_letter.workspace.encode(), value=outcome.dead_letter.dumps()
                )
            yield None

    @app.agent(events_topic)
    async def project(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            parsed = parse_event(event.value)
            if not isinstance(parsed, Interaction) or parsed.contact is None:
                yield None
                continue
            if not parsed.direction.counts:
                yield None
                continue
            key = relationship_key(parsed.workspace, parsed.contact.key)
            stored = table.get(key)
            before = RelationshipState.from_dict(stored) if stored else None
            after = relationship.apply(before, parsed)
            if after is not before:
                table[key] = after.to_dict()
            # Always re-emit: the previous emission may not have reached ClickHouse.
            await relationships_topic.send(
                key=key.encode(), value=json.dumps(after.to_dict()).encode()
            )
            yield None

    @app.agent(events_topic)
    async def sink_interactions(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for batch in _batches(stream).take_events(
            settings.sink_batch_rows, settings.sink_flush_s
        ):
            rows = []
            for ev in batch:
                parsed = parse_event(ev.value)
                if isinstance(parsed, Interaction):
                    rows.append(interaction_row(parsed))
            offsets = [(e.message.topic, e.message.partition, e.message.offset) for e in batch]
            await sink.flush(
                "interactions", INTERACTION_COLUMNS, rows, batch_token("interactions", offsets)
            )
            yield None

    @app.agent(relationships_topic)
    async def sink_relationships(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for batch in _batches(stream).take_events(
            settings.sink_batch_rows, settings.sink_flush_s
        ):
            latest: dict[str, RelationshipState] = {}
            for ev in batch:
                state = RelationshipState.from_dict(json.loads(ev.value))
                key = relationship_key(state.workspace, state.contact_id)
                seen = latest.get(key)
                if seen is None or state.revision >= seen.revision:
                    latest[key] = state
            now = datetime.now(UTC)
            rows = [relationship_row(s, now) for s in latest.values()]
            offsets = [(e.message.topic, e.message.partition, e.message.offset) for e in batch]
            await sink.flush(
                "relationships", RELATIONSHIP_COLUMNS, rows, batch_token("relationships", offsets)
            )
            yield None

    @app.agent(deadletters_topic)
    async def sink_dead_letters(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for batch in _batches(stream).take_events(
            settings.sink_batch_rows, settings.sink_flush_s
        ):
            rows = []
            for ev in batch:
                letter = DeadLetter.loads(ev.value)
                rows.append(
                    (
                        letter.workspace,
                        letter.source,
                        letter.reason,
                        letter.received_at,
                        letter.failed_at,
                        letter.raw.partition,
                        letter.raw.offset,
                        letter.body.decode("utf-8", errors="replace"),
                    )
                )
            offsets = [(e.message.topic, e.message.partition, e.message.offset) for e in batch]
            await sink.flush(
                "dead_letters", DEAD_LETTER_COLUMNS, rows, batch_token("dead_letters", offsets)
            )
            yield None

    @app.page("/healthz")
    async def healthz(web_view: View, request: Request) -> Response:
        return web_view.json({"status": "ok"})

    class QueryView(View):
        """Read-only SQL for the CLI while this worker owns the embedded engine."""

        async def post(self, request: Request) -> Response:
            try:
                payload: dict[str, Any] = await request.json()
                sql = str(payload["sql"])
                parameters = dict(payload.get("parameters") or {})
            except (ValueError, KeyError, TypeError) as exc:
                return self.json({"error": f"expected {{sql, parameters}}: {exc}"}, status=400)
            if not READ_ONLY_SQL.match(sql):
                return self.json({"error": "only read-only statements are served"}, status=403)
            try:
                result = await sink.query(sql, parameters)
            except Exception as exc:
                log.warning("query failed: %s", exc)
                return self.json({"error": str(exc)}, status=400)
            return self.bytes(encode_result(result), content_type="application/json")

    app.page("/query")(QueryView)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_clickhouse(sender: faust.App, **kwargs: Any) -> None:
        sink.close()

    return app
