"""Writing a version's tables: directly into ClickHouse, or through the worker that owns the
embedded engine (the replay topic, `streams.replay.sink`)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from projections.store import ClickHouseStore, SqlReader, is_embedded
from rapport.settings import Settings
from streams import versions
from streams.eventlog import append_records
from streams.replay import lease
from streams.replay.interfaces import Progress, ReplayError, TableWriter
from streams.replay.lease import STALE_S, Lease
from streams.replay.rows import columns_of, encode_chunks, replay_topic

INSERT_ROWS = 100_000
# Arrow inserts: each insert writes a part per month it spans, which ClickHouse then merges and
# `FINAL` reads across, so fewer, larger inserts cost less CPU (`bench/bench_replay_insert.py`).
# Below ClickHouse's max_insert_block_size, so one insert stays one block.
ARROW_INSERT_ROWS = 500_000


class DirectWriter:
    """Writes with a ClickHouseStore of its own: no worker owns the engine, or a server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = settings.clickhouse_database
        self.store = ClickHouseStore(settings.clickhouse_url, self.database)
        self.store.migrate()
        self.build = ""
        self._numbers: dict[str, int] = {}

    def beat(
        self, version: int, build: str, holder: str, done: bool = False, lapse_s: float = STALE_S
    ) -> Lease | None:
        return lease.beat(self.store, self.database, version, build, holder, done, lapse_s)

    def prepare(self, version: int, build: str) -> None:
        self.build = build
        versions.prepare(self.store, self.database, version, build)

    def _token(self, table: str) -> str:
        number = self._numbers.get(table, 0)
        self._numbers[table] = number + 1
        return f"replay:{self.build}:{table}:{number}"

    def write(self, table: str, rows: Iterable[list[Any]], progress: Progress) -> None:
        columns = columns_of(table)
        batch: list[list[Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= INSERT_ROWS:
                self.store.insert(table, columns, batch, self._token(table), unique=True)
                progress.advance(len(batch))
                batch = []
        if batch:
            self.store.insert(table, columns, batch, self._token(table), unique=True)
            progress.advance(len(batch))

    def write_arrow(self, table: str, data: Any, progress: Progress) -> None:
        """Rows as an Arrow table (columns of `columns_of(table)`, times as epoch-ms ints), cast
        to the table's own types and inserted in batches of ARROW_INSERT_ROWS. A replay's rows
        are unique (`projections.store.UNIQUE_ROWS`), as in `write`."""
        schema = self._arrow_schema(table)
        if schema is None:
            self.write(table, arrow_rows(data), progress)
            return
        for piece in arrow_inserts(data.select(schema.names)):
            self.store.insert_arrow(table, piece.cast(schema), self._token(table), unique=True)
            progress.advance(piece.num_rows)

    def _arrow_schema(self, table: str) -> Any:
        return self.store.arrow_schema(table, columns_of(table))

    def arrow_file_schema(self, table: str) -> Any | None:
        """The table's Arrow schema where the engine is embedded (it reads the file itself)."""
        return self._arrow_schema(table) if is_embedded(self.store.url) else None

    def insert_arrow_file(self, table: str, path: str, rows: int, progress: Progress) -> None:
        columns = columns_of(table)
        self.store.insert_arrow_file(table, path, columns, self._token(table), unique=True)
        progress.advance(rows)

    def record(self, version: int, event: str, worker_id: str, detail: dict[str, Any]) -> None:
        versions.record(self.store, self.database, version, event, worker_id, detail)

    def reader(self) -> SqlReader:
        return self.store

    def close(self) -> None:
        self.store.close()


def post_to_worker(url: str, payload: dict[str, Any], timeout_s: float = 120.0) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise ReplayError(f"the worker refused {url} ({exc.code}): {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ReplayError(f"the worker at {url} did not answer: {exc}") from exc


class WorkerWriter:
    """Sends the rows through the replay topic to the worker that owns the embedded engine."""

    def __init__(self, settings: Settings) -> None:
        from projections.store import WorkerQueryClient

        self.settings = settings
        self.url = settings.worker_url
        self.topic = replay_topic(settings)
        self.build = ""
        self._reader = WorkerQueryClient(settings.worker_url, timeout_s=120)

    def beat(
        self, version: int, build: str, holder: str, done: bool = False, lapse_s: float = STALE_S
    ) -> Lease | None:
        answer = post_to_worker(
            f"{self.url}/projections/lease",
            {"version": version, "build": build, "holder": holder, "done": done,
             "lapse_s": lapse_s},
        )  # fmt: skip
        return lease.from_json(answer.get("lease"))

    def prepare(self, version: int, build: str) -> None:
        self.build = build
        post_to_worker(f"{self.url}/projections/prepare", {"version": version, "build": build})

    def write(self, table: str, rows: Iterable[list[Any]], progress: Progress) -> None:
        counted = _Counted(rows, progress)
        chunks = encode_chunks(self.build, table, counted)
        append_records(
            self.settings,
            self.topic,
            ((f"{table}:{n}".encode(), chunk) for n, chunk in enumerate(chunks)),
            timeout_s=120.0,
        )

    def write_arrow(self, table: str, data: Any, progress: Progress) -> None:
        self.write(table, arrow_rows(data), progress)

    def arrow_file_schema(self, table: str) -> Any | None:
        return None  # the worker's engine reads no file of this process

    def insert_arrow_file(self, table: str, path: str, rows: int, progress: Progress) -> None:
        raise ReplayError("the worker's engine reads no file of the replay's")

    def record(self, version: int, event: str, worker_id: str, detail: dict[str, Any]) -> None:
        post_to_worker(
            f"{self.url}/projections/record",
            {"version": version, "event": event, "worker_id": worker_id, "detail": detail},
        )

    def reader(self) -> SqlReader:
        return self._reader

    def close(self) -> None:
        pass


def arrow_inserts(data: Any) -> Iterator[Any]:
    """An Arrow table as the pieces to insert: ARROW_INSERT_ROWS rows each, each one chunk (a
    shard's table has one per fetch, which cost ClickHouse more CPU to insert;
    `bench/bench_replay_insert.py`)."""
    for start in range(0, data.num_rows, ARROW_INSERT_ROWS):
        yield data.slice(start, ARROW_INSERT_ROWS).combine_chunks()


def arrow_rows(data: Any) -> Iterator[list[Any]]:
    """The rows of an Arrow table `interaction_arrow` made (times stay epoch-ms ints)."""
    for row in zip(*(column.to_pylist() for column in data.columns), strict=True):
        yield list(row)


class _Counted:
    """An iterable of rows that reports progress as it is consumed."""

    def __init__(self, rows: Iterable[list[Any]], progress: Progress) -> None:
        self.rows = rows
        self.progress = progress

    def __iter__(self) -> Iterator[list[Any]]:
        pending = 0
        for row in self.rows:
            yield row
            pending += 1
            if pending >= 10_000:
                self.progress.advance(pending)
                pending = 0
        if pending:
            self.progress.advance(pending)


def worker_owns_engine(settings: Settings) -> bool:
    from rapport.stack import Stack

    return is_embedded(settings.clickhouse_url) and (
        Stack(settings).worker_running() or worker_answers(settings.worker_url)
    )


def worker_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def writer_for(settings: Settings) -> TableWriter:
    if worker_owns_engine(settings):
        return WorkerWriter(settings)
    return DirectWriter(settings)


def wait_for_rows(
    reader: SqlReader,
    database: str,
    expected: dict[str, int],
    timeout_s: float,
    tick: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Poll the tables until each has its expected row count (FINAL); returns the counts.
    `tick` is called between polls."""
    deadline = time.monotonic() + timeout_s
    have: dict[str, int] = {}
    while True:
        for table, want in expected.items():
            if have.get(table) == want:
                continue
            rows = reader.query(f"SELECT count() FROM {database}.{table} FINAL").rows
            have[table] = int(rows[0][0])
        if all(have.get(t) == n for t, n in expected.items()):
            return have
        if time.monotonic() > deadline:
            raise ReplayError(f"ClickHouse has {have} rows, expected {expected}")
        if tick is not None:
            tick()
        time.sleep(0.5)
