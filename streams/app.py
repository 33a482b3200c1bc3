"""The Faust worker: normalize, project relationships (with identity links), sink to ClickHouse.

    rapport.raw --normalize--> rapport.events --project (identity + relationship tables)
                                                    |        ^
                                                    |        +-- rapport.relationship-events
                                                    |            (events of linked identities,
                                                    v             re-keyed by contact)
                                      ClickHouse interactions, relationships, relationships_daily
    rapport.deadletters --sink--> dead_letters

`project` inserts each batch's rows itself before the batch is acknowledged: a second consumer
of the event log and a topic of relationship views cost more CPU per event than the fold.

Agents only load, apply the pure functions (events.delivery, projections.relationship) and save.
Tables are keyed by the raw bytes of their topic's key, so Faust's table routing finds the
worker that owns a relationship.
"""

from __future__ import annotations

import contextlib
import json
import logging
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import faust
from faust import streams as faust_streams
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
from projections.policy import Policy, policy_for
from projections.relationship import (
    LIVE_SNAPSHOT_STRIDE,
    RelationshipState,
    apply_all,
    relationship_key,
    touch_from_doc,
    touch_of,
    view_row,
)
from projections.rows import (
    interaction_row_from_doc,
    relationship_date,
    relationship_row,
)
from projections.schema import (
    DEAD_LETTER_COLUMNS,
    INTERACTION_COLUMNS,
    RELATIONSHIP_COLUMNS,
    RELATIONSHIP_DAILY_COLUMNS,
)
from projections.store import READ_ONLY_SQL, encode_result
from projections.tally import Touch
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry
from streams.keys import NO_CONTACT, event_key, split_key
from streams.live_states import LiveStates
from streams.offsets import (
    bound_consumer_drain,
    guard_head_gap,
    read_uncommitted_from_the_start,
)
from streams.replay.sink import register_replay
from streams.sink import ClickHouseSink, batch_token
from streams.tables import (
    STATE_CODEC,
    raw_keyed_table,
    rocksdb_memory,
    rocksdb_options,
    stored_state,
)

log = logging.getLogger("rapport.worker")


PRODUCER_BATCH_BYTES = 512 * 1024  # a partition's batch no longer fills within one round trip
NORMALIZE_BATCH_ROWS = 1000
NORMALIZE_BATCH_S = 0.05
INTERACTION_MARK = b'"type":"interaction"'  # as events.models.dump_event writes it


def _link_of(value: bytes) -> tuple[str | None] | None:
    """(contact or None when unlinked,) if `value` is an identity link event, else None."""
    if INTERACTION_MARK in value:  # link events are rare: parse only the others
        return None
    parsed = parse_event(value)
    if isinstance(parsed, IdentityLinked):
        return (parsed.contact_id,)
    if isinstance(parsed, IdentityUnlinked):
        return (None,)
    return None


@contextlib.contextmanager
def as_current(event: faust.EventT[bytes]) -> Iterator[None]:
    """Make `event` Faust's current event, so a table write goes to that event's partition.

    Batched agents write after the batch; Faust takes a table write's changelog partition from
    the current event, which would otherwise be whichever event the stream read last.
    """
    token = faust_streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)


def _batches(stream: faust.StreamT[bytes]) -> faust.Stream[bytes]:
    """Faust's concrete Stream has take_events (acks after the consumer resumes); StreamT not."""
    return cast("faust.Stream[bytes]", stream)


def create_app(settings: Settings, registry: WorkspaceRegistry) -> faust.App:
    """A Faust app wired to the settings' broker, topics and ClickHouse."""
    bound_consumer_drain(settings.worker_drain_timeout_s)
    guard_head_gap()
    read_uncommitted_from_the_start(
        {
            settings.topic_raw,
            settings.topic_events,
            settings.topic_relationship_events,
            settings.topic_deadletters,
        }
    )
    datadir = settings.home / "worker" / settings.worker_id  # per app id: its own table files
    datadir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=settings.worker_store,
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.worker_standby_replicas,
        producer_acks=-1,
        producer_linger_ms=10,  # batch produce requests: most sends are small and many
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
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

    async def produce(topic_name: str, key: bytes, value: bytes) -> None:
        """Hand a record to the producer (flushed before Faust commits the source offsets).

        The plain producer path skips Faust's per-message Topic machinery, which dominates the
        cost of the high-volume re-keying and emitting sends.
        """
        await app.producer.send(topic_name, key, value, None, None, None)

    raw_topic = topic(settings.topic_raw)
    deadletters_topic = topic(settings.topic_deadletters)

    store_options = (
        rocksdb_options(
            settings.worker_rocksdb_write_buffer_mb, settings.worker_rocksdb_block_cache_mb
        )
        if settings.worker_store.startswith("rocksdb")
        else None
    )
    identities = raw_keyed_table(app, "identities", settings.partitions, str, store_options)
    relationships = raw_keyed_table(
        app, "relationships", settings.partitions, dict, store_options, STATE_CODEC
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
        await produce(settings.topic_deadletters, workspace.encode(), letter.dumps())

    @app.agent(raw_topic)
    async def normalize(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Raw envelopes to canonical events, acknowledged in small batches.

        A batch (at most NORMALIZE_BATCH_ROWS, or what came within NORMALIZE_BATCH_S) costs
        Faust's per-yield work once instead of once per delivery.
        """
        async for batch in _batches(stream).take_events(NORMALIZE_BATCH_ROWS, NORMALIZE_BATCH_S):
            for event in batch:
                msg = event.message
                pointer = RawPointer(topic=msg.topic, partition=msg.partition, offset=msg.offset)
                outcome = process_delivery(registry, event.value, pointer, datetime.now(UTC))
                for interaction in outcome.events:
                    key, value = event_key(interaction), dump_event(interaction)
                    await produce(settings.topic_events, key, value)
                if outcome.dead_letter is not None:
                    letter = outcome.dead_letter
                    log.warning("dead letter %s:%s: %s", msg.partition, msg.offset, letter.reason)
                    await produce(
                        settings.topic_deadletters, letter.workspace.encode(), letter.dumps()
                    )
            yield None

    live = LiveStates(  # recently folded states, decoded
        settings.worker_live_states, settings.worker_live_states_mb * 1024 * 1024
    )

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_live_states(sender: faust.App, revoked: Any, **kwargs: Any) -> None:
        live.clear()  # another worker may own them now; the table is the truth

    def _state(key: bytes) -> RelationshipState | None:
        state = live.get(key)
        if state is None:
            try:  # one store read: `Table.get` asks the store whether it holds the key first
                stored = relationships[key]
            except KeyError:
                return None
            state = stored_state(stored) if stored else None
        return state

    def _contact_of(
        key: bytes, identity: str, seen_links: dict[bytes, str | None] | None = None
    ) -> str | None:
        """The contact an identity counts for: its link target, itself, or None (no contact).

        `seen_links` are links an agent met in its own stream before the table caught up with
        them (the table is written by `project`, which may lag behind another agent).
        """
        if identity.startswith(NO_CONTACT):
            return None
        if seen_links is not None and key in seen_links:
            return seen_links[key] or identity
        linked: str | None = identities.get(key)
        return linked or identity

    projected = app.topic(
        settings.topic_events,
        settings.topic_relationship_events,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
    )

    @app.agent(projected)
    async def project(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Fold a batch in memory, write each touched relationship once, then its rows.

        `rapport.events` is keyed by identity; an unlinked identity's key is its relationship
        key, so its events are folded right here. Events of a linked identity are re-keyed to
        their contact through `rapport.relationship-events`, which this agent also reads.
        The batch's ClickHouse rows (its interactions, the relationships it changed and their
        day) are inserted before the batch is acknowledged: offsets are committed only after
        ClickHouse has them.
        """
        async for batch in _batches(stream).take_events(
            settings.project_batch_rows, settings.sink_flush_s
        ):
            pending: dict[bytes, list[tuple[Touch, faust.EventT[bytes]]]] = {}
            interactions: list[tuple[Any, ...]] = []
            for event in batch:
                try:
                    found = await _touch_of(event, interactions)
                except Exception as exc:
                    await quarantine("project", event, exc)
                    continue
                if found is not None:
                    pending.setdefault(found[0], []).append((found[1], event))
            views: list[dict[str, Any]] = []
            for key, items in pending.items():
                workspace, contact = split_key(key)
                rules = policy(workspace)
                try:
                    state = _state(key) or RelationshipState(
                        workspace=workspace, contact_id=contact
                    )
                    state = apply_all(state, (t for t, _ in items), rules, LIVE_SNAPSHOT_STRIDE)
                except Exception as exc:
                    for _, event in items:
                        await quarantine("project", event, exc)
                    continue
                live.put(key, state)
                with as_current(items[-1][1]):
                    relationships[key] = state.to_json()
                # Always written, changed or not: an earlier write may not have landed.
                views.append(view_row(state, rules))
            await _write_rows(batch, interactions, views)
            yield None

    async def _touch_of(
        event: faust.EventT[bytes], interactions: list[tuple[Any, ...]]
    ) -> tuple[bytes, Touch] | None:
        """(relationship key, touch) of one event, or None if it folds into nothing here.

        An event read from the log adds its `interactions` row, with the contact its identity
        counts for, to `interactions`; a re-keyed copy adds none (its original did).
        """
        key = cast(bytes, event.key)
        workspace, name = split_key(key)
        from_log = event.message.topic == settings.topic_events
        contact: str | None = name
        if from_log:
            link = _link_of(event.value)
            if link is not None:
                with as_current(event):
                    identities[key] = link[0]
                return None
            contact = _contact_of(key, name)
        doc = json.loads(event.value)
        if from_log:
            row = interaction_row_from_doc(doc, event.value, contact or "")
            if row is not None:
                interactions.append(row)
            if contact is None:
                return None
            if contact != name:  # linked: re-key to the contact's partition
                target = relationship_key(workspace, contact).encode()
                await produce(settings.topic_relationship_events, target, event.value)
                return None
        if doc.get("type") == "interaction" and doc.get("schema_version") == 1:
            touch = touch_from_doc(doc)
        else:  # an older stored version: upcast and validate
            parsed = parse_event(event.value)
            counts = isinstance(parsed, Interaction) and parsed.contact and parsed.direction.counts
            touch = touch_of(parsed) if counts and isinstance(parsed, Interaction) else None
        return None if touch is None else (key, touch)

    async def _write_rows(
        batch: Sequence[faust.EventT[Any]],
        interactions: list[tuple[Any, ...]],
        views: list[dict[str, Any]],
    ) -> None:
        """Insert a project batch's rows; each insert's token comes from the batch's offsets.

        One view per relationship and batch, so `relationships_daily` keeps the relationship's
        newest revision on the day of its last event, as of each batch.
        """
        offsets = [(e.message.topic, e.message.partition, e.message.offset) for e in batch]
        now = datetime.now(UTC)
        rows = [relationship_row(v, now) for v in views]
        day_rows = [
            (day, *row)
            for v, row in zip(views, rows, strict=True)
            if (day := relationship_date(v)) is not None
        ]
        for table, columns, table_rows in (
            ("interactions", INTERACTION_COLUMNS, interactions),
            ("relationships", RELATIONSHIP_COLUMNS, rows),
            ("relationships_daily", RELATIONSHIP_DAILY_COLUMNS, day_rows),
        ):
            await sink.flush(table, columns, table_rows, batch_token(table, offsets))

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
        held = {"states": len(live), "bytes": live.bytes, "dropped": live.dropped}
        rocksdb = rocksdb_memory((identities, relationships))
        return web_view.json({"status": "ok", "live_states": held, "rocksdb": rocksdb})

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
            state = stored_state(stored)
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
    # versioned tables from `rapport replay` (issue 7); `rapport worker` activates before start
    app.rapport_activation = register_replay(app, settings, sink)  # type: ignore[attr-defined]

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_clickhouse(sender: faust.App, **kwargs: Any) -> None:
        sink.close()

    return app
