"""The one settings object. Every knob comes from `RAPPORT_*` environment variables."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration; read once per process, passed explicitly everywhere else."""

    model_config = SettingsConfigDict(env_prefix="RAPPORT_", extra="ignore")

    home: Path = Field(Path(".rapport"), description="state: pids, logs, broker data, embedded DB")
    workspaces: Path = Field(Path("workspaces.toml"), description="workspace file (TOML)")

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_controller_port: int = 9093
    kafka_cache: Path = Field(Path.home() / ".cache" / "rapport", description="Maven jars cache")
    kafka_heap: str = "768m"
    kafka_start_timeout_s: float = 90.0
    partitions: int = Field(8, ge=1, description="partitions of every co-partitioned topic")
    replication_factor: int = Field(1, ge=1)
    topic_raw: str = "rapport.raw"
    topic_events: str = "rapport.events"
    topic_relationship_events: str = "rapport.relationship-events"
    topic_deadletters: str = "rapport.deadletters"

    clickhouse_url: str = "chdb://./.rapport/clickhouse"
    clickhouse_database: str = "rapport"

    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8080
    max_body_bytes: int = Field(1024 * 1024, ge=1)
    produce_timeout_s: float = Field(5.0, gt=0)

    worker_id: str = "rapport-worker"
    worker_host: str = "127.0.0.1"
    worker_port: int = 6066
    worker_store: str = Field(
        "rocksdb://",
        description="Faust table store: rocksdb:// (rocksdict, persistent under home) or memory://",
    )
    worker_standby_replicas: int = Field(
        0, ge=0, description="standby copies of each table partition kept warm on other workers"
    )
    worker_drain_timeout_s: float = Field(
        10.0,
        gt=0,
        description="at a stop or rebalance, how long to wait for events agents are processing "
        "(unfinished ones are processed again, never lost)",
    )
    worker_live_states: int = Field(
        20_000,
        ge=1,
        description="decoded relationship states the worker keeps in memory (the table is the "
        "truth; the least recently used are dropped)",
    )
    worker_live_states_mb: int = Field(
        512,
        ge=1,
        description="memory the decoded states may take (estimated per state from its lateness "
        "window, streams/live_states.py); past it the least recently used are dropped and read "
        "back from the table when needed again",
    )
    worker_rocksdb_write_buffer_mb: int = Field(
        8,
        ge=1,
        description="RocksDB memtable size of each table partition (two per partition at most; "
        "Faust's default of 3 x 64 MB per partition grew the worker by the write rate)",
    )
    worker_rocksdb_block_cache_mb: int = Field(
        16, ge=1, description="RocksDB block cache of each table partition"
    )
    project_batch_rows: int = Field(
        2000,
        ge=1,
        description="most events in one project batch (one fold and state write per "
        "relationship, one insert per table); a batch also ends after sink_flush_s",
    )
    sink_batch_rows: int = Field(
        50_000,
        ge=1,
        description="dead-letter and replay sink batches: flushed at this many rows or after "
        "sink_flush_s",
    )
    sink_flush_s: float = Field(
        1.0, gt=0, description="longest wait before a batch's rows are inserted into ClickHouse"
    )
    sink_retry_max_s: float = Field(30.0, gt=0)
    worker_admin_sql: bool = Field(
        False, description="serve POST /admin/sql on the worker (tests of ClickHouse failures)"
    )
    projection_version: int = Field(
        0,
        ge=0,
        description="projection version the worker runs (docs/replay.md); 0: the one `rapport "
        "replay --swap` recorded under home, else 1",
    )
    replay_native: bool = Field(
        True,
        description="replays decode the log and fold with the native core (native/) where "
        "it is built; false: in Python alone (the reference, slower)",
    )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """repr/str with the ClickHouse DSN's password masked (`http://user:***@host`)."""
        for name, value in super().__repr_args__():
            yield name, _masked_password(value) if name == "clickhouse_url" else value

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        host, _, port = self.kafka_bootstrap.split(",")[0].rpartition(":")
        return host, int(port)

    @property
    def ingest_url(self) -> str:
        return f"http://{self.ingest_host}:{self.ingest_port}"

    @property
    def worker_url(self) -> str:
        return f"http://{self.worker_host}:{self.worker_port}"


def _masked_password(url: str) -> str:
    parsed = urlsplit(url)
    if parsed.password is None:
        return url
    return urlunsplit(
        parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@"))
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()


def resolve_secret(value: str) -> str:
    """A workspace secret is a literal or `env:NAME`; the environment is read here and only here."""
    import os

    if value.startswith("env:"):
        name = value[4:]
        try:
            return os.environ[name]
        except KeyError:
            raise LookupError(
                f"secret refers to environment variable {name}, which is not set"
            ) from None
    return value
