"""The Faust worker: normalize, resolve identities, project relationships, sink to ClickHouse.

    rapport.raw --normalize--> rapport.events --resolve (identity table)--+
                                                                          v
          interactions <--sink-- rapport.relationship-events --project (relationship table)
                                                                          v
                        relationships <--sink-- rapport.relationships <---+
    rapport.deadletters --sink--> dead_letters

Agents only load, apply the pure functions (events.delivery, projections.relationship) and save.
Tables are keyed by the raw bytes of their topic's key, so Faust's table routing finds the
worker that owns a relationship.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import faust
from faust.exceptions import SameNode
from faust.web import Request, Response, View

from events.delivery import DeadLetter, process_delivery
from events.models import (
    IdentityLinked,
    IdentityUnlinked,
    Interaction,
    RawPointer,
    dump_event,
    parse_event,
)
from projections import relationship
from projections.policy import Policy, policy_for
from projections.relationship import RelationshipState, relationship_key, view_row
from projections.rows import interaction_row, relationship_row
from projections.schema import DEAD_LETTER_COLUMNS, INTERACTION_COLUMNS, RELATIONSHIP_COLUMNS
from projections.store import READ_ONLY_SQL, encode_result
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry
from streams.keys import NO_CONTACT, event_key, split_key
from streams.sink import ClickHouseSink, batch_token

log = logging.getLogger("rapport.worker")


def _batches(stream: faust.StreamT[bytes]) -> faust.Stream[bytes]:
    """Faust's concrete Stream has take_events (acks after the consumer resumes); StreamT not."""
    return cast("faust.Stream[bytes]", stream)


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
        canonical_url=settings.worker_url,
        autodiscover=False,
    )
    sink = ClickHouseSink(
        settings.clickhouse_url, settings.clickhouse_database, settings.sink_retry_max_s
    )
    app.rapport_sink = sink  # type: ignore[attr-defined]
    policies: dict[str, Policy] = {}

    def policy(workspace: str) -> Policy:
        found = policies.get(workspace)
        if found is None:
            config = registry.get(workspace)
            found = policies[workspace] = policy_for(config.policy if config else None)
        return found

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, partitions=settings.partitions, key_type=bytes, value_type=bytes)

    raw_topic = topic(settings.topic_raw)
    events_topic = topic(settings.topic_events)
    relationship_events_topic = topic(settings.topic_relationship_events)
    relationships_topic = topic(settings.topic_relationships)
    deadletters_topic = topic(settings.topic_deadletters)

    def raw_keyed(table: Any) -> Any:
        """Keys as raw bytes: the changelog and the router then partition like the topic."""
        table.key_serializer = "raw"
        return table

    identities = raw_keyed(
        app.Table("identities", default=None, partitions=settings.partitions, value_type=str)
    )
    relationships = raw_keyed(
        app.Table("relationships", default=None, partitions=settings.partitions, value_type=dict)
    )

    @app.task
    async def open_clickhouse() -> None:
        await sink.start()

    async def quarantine(agent: str, event: faust.EventT[bytes], exc: Exception) -> None:
        """An event an agent cannot process goes to the dead-letter topic, never nowhere."""
        msg = event.message
        workspace, _ = split_key(cast(bytes, event.key or b"|"))
        log.exception("%s could not process %s:%s:%s", agent, msg.topic, msg.partition, msg.offset)
        now = datetime.now(UTC)
        letter = DeadLetter(
            workspace=workspace,
            source=f"worker.{agent}",
            reason=f"{type(exc).__name__}: {exc}",
            received_at=now,
            failed_at=now,
            raw=RawPointer(topic=msg.topic, partition=msg.partition, offset=msg.offset),
            body=event.value,
        )
        await deadletters_topic.send(key=workspace.encode(), value=letter.dumps())

    @app.agent(raw_topic)
    async def normalize(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            msg = event.message
            pointer = RawPointer(topic=msg.topic, partition=msg.partition, offset=msg.offset)
            outcome = process_delivery(registry, event.value, pointer, datetime.now(UTC))
            for interaction in outcome.events:
                await events_topic.send(key=event_key(interaction), value=dump_event(interaction))
            if outcome.dead_letter is not None:
                log.warning(
                    "dead letter %s:%s: %s", msg.partition, msg.offset, outcome.dead_letter.reason
                )
                await deadletters_topic.send(
                    key=outcome.dead_letter.workspace.encode(), value=outcome.dead_letter.dumps()
                )
            yield None

    @app.agent(events_topic)
    async def resolve(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Re-key interactions by contact (after identity links); keep the link table."""
        async for event in stream.events():
            try:
                await _resolve_one(event)
            except Exception as exc:
                await quarantine("resolve", event, exc)
            yield None

    async def _resolve_one(event: faust.EventT[bytes]) -> None:
        key = cast(bytes, event.key)
        parsed = parse_event(event.value)
        if isinstance(parsed, IdentityLinked):
            identities[key] = parsed.contact_id
        elif isinstance(parsed, IdentityUnlinked):
            identities[key] = None
        elif isinstance(parsed, Interaction):
            workspace, identity = split_key(key)
            linked = None if identity.startswith(NO_CONTACT) else identities.get(key)
            contact = linked or identity
            await relationship_events_topic.send(
                key=relationship_key(workspace, contact).encode(), value=event.value
            )

    @app.agent(relationship_events_topic)
    async def project(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            try:
                await _project_one(event)
            except Exception as exc:
                await quarantine("project", event, exc)
            yield None

    async def _project_one(event: faust.EventT[bytes]) -> None:
        key = cast(bytes, event.key)
        workspace, contact = split_key(key)
        if contact.startswith(NO_CONTACT):
            return
        parsed = parse_event(event.value)
        if not isinstance(parsed, Interaction):
            return
        stored = relationships.get(key)
        before = RelationshipState.from_dict(stored) if stored else None
        rules = policy(workspace)
        after = relationship.apply(before, parsed, rules, contact)
        if after is not before:
            relationships[key] = after.to_dict()
        # Always re-emit: the previous emission may not have reached ClickHouse yet.
        await relationships_topic.send(key=key, value=json.dumps(view_row(after, rules)).encode())

    @app.agent(relationship_events_topic)
    async def sink_interactions(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for batch in _batches(stream).take_events(
            settings.sink_batch_rows, settings.sink_flush_s
        ):
            rows = []
            for ev in batch:
                parsed = parse_event(ev.value)
                if isinstance(parsed, Interaction):
                    _, contact = split_key(cast(bytes, ev.key))
                    rows.append(
                        interaction_row(parsed, "" if contact.startswith(NO_CONTACT) else contact)
                    )
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
            latest: dict[bytes, dict[str, Any]] = {}
            for ev in batch:
                view = json.loads(ev.value)
                key = cast(bytes, ev.key)
                seen = latest.get(key)
                if seen is None or view["revision"] >= seen["revision"]:
                    latest[key] = view
            now = datetime.now(UTC)
            rows = [relationship_row(v, now) for v in latest.values()]
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
                        letter.workspace, letter.source, letter.reason, letter.received_at,
                        letter.failed_at, letter.raw.partition, letter.raw.offset,
                        letter.body.decode("utf-8", errors="replace"),
                    )
                )  # fmt: skip
            offsets = [(e.message.topic, e.message.partition, e.message.offset) for e in batch]
            await sink.flush(
                "dead_letters", DEAD_LETTER_COLUMNS, rows, batch_token("dead_letters", offsets)
            )
            yield None

    @app.page("/healthz")
    async def healthz(web_view: View, request: Request) -> Response:
        return web_view.json({"status": "ok"})

    class RelationshipView(View):
        """One relationship from the table, answered by the worker that owns its partition."""

        async def get(self, request: Request, workspace: str, contact_id: str) -> Response:
            key = relationship_key(workspace, contact_id).encode()
            try:
                return await app.router.route_req(relationships.name, key, self.web, request)
            except SameNode:
                pass
            stored = relationships.get(key)
            if not stored:
                return self.json({"error": "no such relationship"}, status=404)
            state = RelationshipState.from_dict(stored)
            return self.json(view_row(state, policy(workspace)))

    app.page("/relationships/{workspace}/{contact_id}")(RelationshipView)

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
