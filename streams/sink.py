"""The ClickHouse sink: batches in, one synchronous insert per table, retried until it lands.

Every call runs on one dedicated thread (the embedded engine is not thread safe). A failed
insert is logged and retried with backoff, blocking the agent that called it: Faust acks the
batch's events only after `flush` returns, so offsets are committed only after ClickHouse has
the rows, and a retried batch carries the same deduplication token so it lands once. While
ClickHouse is down the agents stop taking batches, Faust's buffers fill and the consumer pauses
its partitions: backpressure, nothing dropped, nothing committed. The worker opens the store and
applies the schema migrations at start (`start`); if ClickHouse is unreachable then, the first
flush opens it when it comes back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from projections.store import ClickHouseStore, QueryResult, redact

log = logging.getLogger("rapport.sink")
T = TypeVar("T")


def batch_token(table: str, offsets: Sequence[tuple[str, int, int]]) -> str:
    """A deduplication token from the (topic, partition, offset) records a batch came from."""
    spans: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset in offsets:
        span = spans.get((topic, partition))
        if span is None:
            spans[(topic, partition)] = [offset, offset]
        elif offset < span[0]:
            span[0] = offset
        elif offset > span[1]:
            span[1] = offset
    text = ";".join(f"{t}:{p}:{lo}-{hi}" for (t, p), (lo, hi) in sorted(spans.items()))
    return f"{table}:{hashlib.sha256(text.encode()).hexdigest()[:32]}"


class ClickHouseSink:
    """Owns the worker's ClickHouse connection and the thread that uses it."""

    def __init__(self, url: str, database: str, retry_max_s: float = 30.0) -> None:
        self.url = url
        self.database = database
        self.retry_max_s = retry_max_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._store: ClickHouseStore | None = None
        self.failures = 0
        self.last_error: str | None = None  # the most recent failure, kept after recovery
        self.failing: dict[str, str] = {}  # table -> error of the insert being retried now
        self.rows_written: dict[str, int] = {}

    def _open(self) -> ClickHouseStore:
        if self._store is None:
            store = ClickHouseStore(self.url, self.database)
            store.migrate()
            self._store = store
        return self._store

    async def _run(self, fn: Callable[[ClickHouseStore], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._open()))

    def call(self, fn: Callable[[ClickHouseStore], T]) -> T:
        """`fn(store)` on the sink's thread, from synchronous code (before the app starts)."""
        return self._executor.submit(lambda: fn(self._open())).result()

    async def start(self) -> None:
        """Open the store and apply the schema migrations before the first batch arrives."""
        try:
            await self._run(lambda store: None)
        except Exception as exc:  # the flushes retry opening it
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("ClickHouse at %s not ready at start: %s", redact(self.url), exc)

    async def flush(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        token: str,
        unique: bool = False,
    ) -> None:
        """Insert `rows` into `table`; on failure wait and try again, never drop them.
        `unique` as `ClickHouseStore.insert`."""
        if not rows:
            return
        delay = 0.2
        while True:
            try:
                await self._run(lambda store: store.insert(table, columns, rows, token, unique))
            except Exception as exc:
                self.failures += 1
                self.last_error = self.failing[table] = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "insert of %d rows into %s failed (%s: %s); retrying in %.1f s",
                    len(rows),
                    table,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            self.rows_written[table] = self.rows_written.get(table, 0) + len(rows)
            self.failing.pop(table, None)
            return

    async def query(self, sql: str, parameters: dict[str, Any]) -> QueryResult:
        return await self._run(lambda store: store.query(sql, parameters))

    async def command(self, sql: str) -> str:
        """Any statement, on the sink's thread (the admin path for tests; off by default)."""
        return await self._run(lambda store: store.command(sql))

    def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            self._executor.submit(store.close).result(timeout=30)
        self._executor.shutdown(wait=True)
