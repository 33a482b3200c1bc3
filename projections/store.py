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
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse, urlunparse
from uuid import UUID

from projections import migrations

READ_ONLY_SQL = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS|EXPLAIN)\b", re.IGNORECASE)
# For rows unique by the table's sorting key already (a replay's: it drops duplicate events while
# reading): the insert skips ReplacingMergeTree's merge of the block with itself, which finds
# nothing to replace in them (0.3-0.5 s of CPU per 500,000 interaction rows,
# `bench/bench_replay_insert.py`). Later merges and FINAL still replace as before.
UNIQUE_ROWS: dict[str, Any] = {"optimize_on_insert": 0}


def _insert_settings(token: str | None, unique: bool) -> dict[str, Any]:
    settings: dict[str, Any] = {"async_insert": 0, **(UNIQUE_ROWS if unique else {})}
    if token:
        settings["insert_deduplication_token"] = token
    return settings


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


def server_dsn(url: str) -> str:
    """An http(s) DSN without its database path: clickhouse-connect requires a database named in
    the DSN to exist, and the migrations create it. Every statement names its database."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        return url
    return urlunparse(parsed._replace(path=""))


def redact(url: str) -> str:
    """A DSN fit for logs and error messages: the password replaced."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
    return urlunparse(parsed._replace(netloc=netloc))


# ClickHouse column types -> Arrow types, for the sink's Arrow inserts (see ClickHouseStore.insert).
_ARROW_SCALARS = {
    "String": "string",
    "Bool": "bool_",
    "UInt8": "uint8",
    "UInt16": "uint16",
    "UInt32": "uint32",
    "UInt64": "uint64",
    "Int8": "int8",
    "Int16": "int16",
    "Int32": "int32",
    "Int64": "int64",
    "Float32": "float32",
    "Float64": "float64",
    "Date": "date32",
}
_WRAPPER = re.compile(r"^(Nullable|LowCardinality|Array)\((.*)\)$")
_DATETIME64 = re.compile(r"^DateTime64\(3(?:,\s*'UTC')?\)$")


def arrow_type(ch_type: str) -> Any:
    """The Arrow type that ClickHouse reads into `ch_type`, or None when there is none here."""
    import pyarrow as pa

    wrapped = _WRAPPER.match(ch_type)
    if wrapped:
        inner = arrow_type(wrapped.group(2))
        if inner is None or wrapped.group(1) != "Array":
            return inner
        return pa.list_(inner)
    if _DATETIME64.match(ch_type):
        return pa.timestamp("ms", tz="UTC")
    name = _ARROW_SCALARS.get(ch_type)
    return None if name is None else getattr(pa, name)()


class ClickHouseStore:
    """One clickhouse-connect client; not thread safe, so callers use one thread at a time."""

    def __init__(self, url: str, database: str) -> None:
        import clickhouse_connect

        self.url = resolve_dsn(url)
        self.database = database
        self._arrow_schemas: dict[tuple[str, tuple[str, ...]], Any] = {}
        if is_embedded(self.url) and self.url != "chdb://memory":
            Path(self.url[len("chdb://") :]).mkdir(parents=True, exist_ok=True)
        try:
            self.client = clickhouse_connect.get_client(dsn=server_dsn(self.url))
        except Exception as exc:
            raise StoreUnavailable(f"cannot open ClickHouse at {redact(self.url)}: {exc}") from exc

    def migrate(self) -> list[int]:
        """Apply the schema migrations that have not run; returns their versions."""
        return [m.version for m in migrations.apply(self.client, self.database)]

    def insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        token: str | None,
        unique: bool = False,
    ) -> None:
        """Insert synchronously (async_insert=0, whatever the server's default); a retried batch
        with the same token lands once (`non_replicated_deduplication_window` on every table).
        `unique`: the rows are unique by the sorting key (`UNIQUE_ROWS`).

        Rows go as one Arrow table, built column-wise from the tuples: several times faster than
        the row-wise Native encoding of `client.insert`, and the same request for the embedded
        engine and a server. Column types come from the table itself (DESCRIBE, once).
        """
        if not rows:
            return
        schema = self._arrow_schema(table, tuple(columns))
        if schema is None:
            self.client.insert(
                f"{self.database}.{table}",
                list(rows),
                column_names=list(columns),
                settings=_insert_settings(token, unique),
            )
            return
        import pyarrow as pa

        arrays = [
            pa.array(values, type=field.type)
            for values, field in zip(zip(*rows, strict=True), schema, strict=True)
        ]
        self.insert_arrow(table, pa.Table.from_arrays(arrays, schema=schema), token, unique)

    def insert_arrow(self, table: str, data: Any, token: str | None, unique: bool = False) -> None:
        """An Arrow table already of the table's column types, inserted as `insert` does."""
        self.client.insert_arrow(
            f"{self.database}.{table}", data, settings=_insert_settings(token, unique)
        )

    def insert_arrow_file(
        self, table: str, path: str, columns: Sequence[str], token: str | None, unique: bool = False
    ) -> None:
        """An Arrow IPC stream file of the table's column types (`arrow_schema`), inserted as
        `insert` does, read by the embedded engine itself (`FROM INFILE`): no copy of the rows
        in this process, where `insert_arrow` writes them into an Arrow file in memory, copies
        that to bytes and then to a temporary file for the engine (`bench/bench_replay_insert.py`).
        The embedded engine only: a server reads no local file."""
        if not is_embedded(self.url):
            raise StoreUnavailable("only the embedded engine inserts from a local file")
        settings = ", ".join(
            f"{k}={_sql_value(v)}" for k, v in _insert_settings(token, unique).items()
        )
        names = ", ".join(f"`{c}`" for c in columns)
        self.client.command(
            f"INSERT INTO {self.database}.{table} ({names}) FROM INFILE {_sql_value(path)} "
            f"SETTINGS {settings} FORMAT ArrowStream"
        )

    def arrow_schema(self, table: str, columns: Sequence[str]) -> Any:
        """The Arrow schema ClickHouse reads into `table`'s `columns` (None: a type has none)."""
        return self._arrow_schema(table, tuple(columns))

    def _arrow_schema(self, table: str, columns: tuple[str, ...]) -> Any:
        key = (table, columns)
        if key not in self._arrow_schemas:
            import pyarrow as pa

            described = self.client.query(f"DESCRIBE TABLE {self.database}.{table}")
            types = {str(row[0]): str(row[1]) for row in described.result_rows}
            fields = [(name, arrow_type(types.get(name, ""))) for name in columns]
            self._arrow_schemas[key] = (
                None if any(t is None for _, t in fields) else pa.schema(fields)
            )
        return self._arrow_schemas[key]

    def command(self, sql: str) -> str:
        """Run one statement (DDL, ALTER); its text answer, if any."""
        result = self.client.command(sql, settings={"async_insert": 0, "mutations_sync": 2})
        return "" if result is None else str(result)

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult:
        result = self.client.query(sql, parameters=dict(parameters or {}))
        return QueryResult(tuple(result.column_names), [tuple(r) for r in result.result_rows])

    def close(self) -> None:
        self.client.close()


def _sql_value(value: Any) -> str:
    """A number, or a string quoted as a ClickHouse string literal."""
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (Decimal, UUID)):
        return str(value)
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
