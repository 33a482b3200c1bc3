"""The worker's side of a replay: versioned tables through the ClickHouse the worker owns.

The embedded engine can be opened by one process, and the running worker owns it, so a replay
never opens it while a worker runs. It sends its rows through Kafka instead (the replay topic,
see `streams.replay.rows`), and this agent inserts them in batches through the worker's
`ClickHouseSink` (retried until they land, offsets committed after). Small HTTP views do the rest:

    POST /projections/prepare {version, build}  empty relationships_vN / interactions_vN
    POST /projections/lease {version, build, holder, done, lapse_s}  claim/renew/end a lease
    POST /projections/record {version, event, worker_id, detail}  log a build
    POST /projections/swap {version}  make this worker's own version the one readers see
    GET  /projections/versions  tables, their versions, and the build/activation log

A worker of version N (settings.projection_version) makes N the active version before its
consumer starts (`VersionActivation.run`, called by `rapport worker`): the tables are exchanged
(`streams.versions.ensure_active`) while no worker writes to them, and the worker then starts
like any restart, with no ClickHouse write held back behind a start-up task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

import faust
from faust.web import Request, Response, View

from projections.store import ClickHouseStore
from rapport.settings import Settings
from streams import versions
from streams.replay import lease
from streams.replay.rows import columns_of, decode_chunk, replay_topic
from streams.sink import ClickHouseSink, batch_token

log = logging.getLogger("rapport.replay")
T = TypeVar("T")
RECORDS_PER_INSERT = 32  # replay records (up to 256 KiB of rows each) per insert


def declare_changelogs(app: faust.App, settings: Settings) -> None:
    """Create the tables' changelog topics before the worker starts, if they are missing.

    Faust creates them itself when a table starts, moments before the consumer group's first
    assignment; when the broker's metadata has not caught up by then, the assignor ignores the
    topic and the agent that owns the table crashes (`PartitionsMismatch ... 0 partitions`).
    """
    from streams.kafka_admin import ensure_compacted_topics

    names = [table.changelog_topic.get_topic_name() for table in app.tables.values()]
    try:
        ensure_compacted_topics(settings, names, timeout_s=30.0)
    except Exception as exc:  # the broker is away: Faust declares them when it can
        log.warning("could not declare the changelog topics %s: %s", names, exc)


class VersionActivation:
    """The worker's own projection version, made the active one before its consumer starts."""

    def __init__(self, settings: Settings, sink: ClickHouseSink) -> None:
        self.settings = settings
        self.sink = sink
        self.version = settings.projection_version or 1
        self.previous: int | None = None  # the version active before, once `run` returned

    def run(self, sleep: Callable[[float], None] = time.sleep) -> int:
        """Exchange the tables (a no-op when the version is active already); returns the version
        that was active before. Retries while ClickHouse is away (nothing is consumed meanwhile,
        the ingest keeps accepting into Kafka); raises VersionError when the version is not built.
        """
        delay = 0.5
        while True:
            try:
                self.previous = self.sink.call(
                    lambda store: versions.ensure_active(
                        store, self.settings.clickhouse_database, self.version,
                        self.settings.worker_id,
                    )
                )  # fmt: skip
            except versions.VersionError:
                raise
            except Exception as exc:
                log.warning("cannot activate projection version %d yet: %s", self.version, exc)
                sleep(delay)
                delay = min(delay * 2, self.settings.sink_retry_max_s)
                continue
            log.info("projection version %d is active", self.version)
            return self.previous


def register_replay(app: faust.App, settings: Settings, sink: ClickHouseSink) -> VersionActivation:
    """Add the replay sink agent and the /projections views; returns the start-up activation,
    which `rapport worker` runs before the app starts."""
    declare_changelogs(app, settings)
    database = settings.clickhouse_database
    activation = VersionActivation(settings, sink)
    own_version = activation.version
    builds: dict[str, str | None] = {}  # table -> build it was prepared for (cache)

    async def on_store(fn: Callable[[ClickHouseStore], T]) -> T:
        return await sink._run(fn)  # the sink's thread: the engine is not thread safe

    async def accepts(table: str, build: str) -> bool:
        if builds.get(table) != build:
            builds[table] = await on_store(lambda store: versions.build_of(store, database, table))
        return builds[table] == build

    topic = app.topic(
        replay_topic(settings), partitions=settings.partitions, key_type=bytes, value_type=bytes
    )

    async def sink_replay(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        batches = cast("faust.Stream[bytes]", stream).take_events(
            RECORDS_PER_INSERT, settings.sink_flush_s
        )
        async for batch in batches:
            tables: dict[str, tuple[list[tuple[Any, ...]], list[tuple[str, int, int]]]] = {}
            for event in batch:
                msg = event.message
                try:
                    chunk = decode_chunk(event.value)
                except ValueError as exc:
                    log.warning("replay record %s:%s dropped: %s", msg.partition, msg.offset, exc)
                    continue
                if not await accepts(chunk.table, chunk.build):
                    log.warning(
                        "replay record for %s (build %s) dropped: the table is not prepared for "
                        "that build (a later build or a swap replaced it)",
                        chunk.table,
                        chunk.build,
                    )
                    continue
                rows, offsets = tables.setdefault(chunk.table, ([], []))
                rows.extend(tuple(r) for r in chunk.rows)
                offsets.append((msg.topic, msg.partition, msg.offset))
            for table, (rows, offsets) in tables.items():
                token = batch_token(table, offsets)  # a build's rows: each event once (unique)
                await sink.flush(table, columns_of(table), rows, token, unique=True)
                log.info("replay: %d rows into %s", len(rows), table)
            yield None

    app.agent(topic, name="rapport.replay_sink")(sink_replay)

    async def payload(request: Request) -> dict[str, Any]:
        data = await request.json()
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data

    class PrepareView(View):
        async def post(self, request: Request) -> Response:
            try:
                data = await payload(request)
                version, build = int(data["version"]), str(data["build"])
                made = await on_store(
                    lambda store: versions.prepare(store, database, version, build)
                )
            except (ValueError, KeyError, TypeError, versions.VersionError) as exc:
                return self.json({"error": str(exc)}, status=400)
            builds.clear()
            return self.json({"tables": made})

    class LeaseView(View):
        async def post(self, request: Request) -> Response:
            try:
                data = await payload(request)
                version, build = int(data["version"]), str(data["build"])
                holder, done = str(data["holder"]), bool(data.get("done", False))
                lapse_s = float(data.get("lapse_s", lease.STALE_S))
            except (ValueError, KeyError, TypeError) as exc:
                return self.json({"error": str(exc)}, status=400)
            try:
                held = await on_store(
                    lambda store: lease.beat(store, database, version, build, holder, done, lapse_s)
                )
            except Exception as exc:  # ClickHouse away: the replay retries or gives up
                return self.json({"error": f"{type(exc).__name__}: {exc}"}, status=503)
            return self.json({"lease": None if held is None else held.to_json()})

    class RecordView(View):
        async def post(self, request: Request) -> Response:
            try:
                data = await payload(request)
                version, event = int(data["version"]), str(data["event"])
                worker_id, detail = str(data["worker_id"]), dict(data.get("detail") or {})
                await on_store(
                    lambda store: versions.record(
                        store, database, version, event, worker_id, detail
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json({"recorded": event})

    class SwapView(View):
        async def post(self, request: Request) -> Response:
            try:
                version = int((await payload(request))["version"])
            except (ValueError, KeyError, TypeError) as exc:
                return self.json({"error": f"expected {{version}}: {exc}"}, status=400)
            if version != own_version:
                return self.json(
                    {
                        "error": f"this worker runs version {own_version}; the worker of "
                        f"version {version} makes it active when it starts",
                        "worker_version": own_version,
                    },
                    status=409,
                )
            if activation.previous is None:  # an app started without `rapport worker`
                return self.json({"error": "this worker did not activate its version"}, status=503)
            return self.json({"active": version, "previous": activation.previous})

    class VersionsView(View):
        async def get(self, request: Request) -> Response:
            def describe(store: ClickHouseStore) -> dict[str, Any]:
                tables = versions.table_versions(store, database)
                return {
                    "tables": {n: [t.version, t.build] for n, t in sorted(tables.items())},
                    "history": [
                        {k: str(v) if k == "at" else v for k, v in row.items()}
                        for row in versions.history(store, database)
                    ],
                }

            try:
                answer = await on_store(describe)
            except Exception as exc:
                return self.json({"error": str(exc)}, status=503)
            answer["worker_version"] = own_version
            return self.json(answer)

    app.page("/projections/prepare")(PrepareView)
    app.page("/projections/lease")(LeaseView)
    app.page("/projections/record")(RecordView)
    app.page("/projections/swap")(SwapView)
    app.page("/projections/versions")(VersionsView)
    return activation
