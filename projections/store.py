"""ClickHouse access: the embedded engine (chdb) or a server, through clickhouse-connect.

An embedded data directory can be opened by one process at a time. The worker owns it while the
stack runs and answers read-only SQL for the CLI over HTTP (`WorkerQueryClient`); otherwise the
CLI opens it itself. Both implement `SqlReader`.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from projections.schema import ddl

READ_ONLY_SQL = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS|EXPLAIN)\b", re.IGNORECASE)


@dataclass(frozen=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class SqlReader(Protocol):
    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult: ...


class StoreUnavailable(RuntimeError):
    """ClickHouse could not be reached or opened; the message says which and why."""


def resolve_dsn(url: str, base: Path | None = None) -> str:
    """Make a relative `chdb://./path` absolute (chdb resolves paths against the process cwd)."""
    parsed = urlparse(url)
    if parsed.scheme != "chdb":
        return url
    raw = url[len("chdb://") :]
    if raw in ("", "memory", ":memory:"):
        return "chdb://memory"
    path = Path(raw)
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return f"chdb://{path.resolve()}"


def is_embedded(url: str) -> bool:
    return urlparse(url).scheme == "chdb"


class ClickHouseStore:
    """One clickhouse-connect client; not thread safe, so callers use one thread at a time."""

    def __init__(self, url: str, database: str) -> None:
        import clickhouse_connect

        self.url = resolve_dsn(url)
        self.database = database
        if is_embedded(self.url) and self.url != "chdb://memory":
            Path(self.url[len("chdb://") :]).mkdir(parents=True, exist_ok=True)
        try:
            self.client = clickhouse_connect.get_client(dsn=self.url)
        except Exception as exc:
            raise StoreUnavailable(f"cannot open ClickHouse at {self.url}: {exc}") from exc

    def migrate(self) -> None:
        for statement in ddl(self.database):
            self.client.command(statement)

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], token: str | None
    ) -> None:
        """Insert synchronously; a retried batch with the same token lands once."""
        if not rows:
            return
        settings: dict[str, Any] = {"async_insert": 0}
        if token:
            settings["insert_deduplication_token"] = token
        self.client.insert(
            f"{self.database}.{table}", list(rows), column_names=list(columns), settings=settings
        )

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult:
        result = self.client.query(sql, parameters=dict(parameters or {}))
        return QueryResult(tuple(result.column_names), [tuple(r) for r in result.result_rows])

    def close(self) -> None:
        self.client.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode(errors="replace")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def encode_result(result: QueryResult) -> bytes:
    """The wire form of a query answer from the worker to the CLI."""
    return json.dumps(
        {"columns": list(result.columns), "rows": [_jsonable(list(r)) for r in result.rows]}
    ).encode()


class WorkerQueryClient:
    """Reads through the running worker, which owns the embedded engine."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult:
        body = json.dumps({"sql": sql, "parameters": dict(parameters or {})}).encode()
        request = urllib.request.Request(
            f"{self.base_url}/query", data=body, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                data = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise StoreUnavailable(f"worker refused the query ({exc.code}): {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise StoreUnavailable(f"worker at {self.base_url} did not answer: {exc}") from exc
        return QueryResult(tuple(data["columns"]), [tuple(r) for r in data["rows"]])
