"""The local stack: Kafka, ingest and worker as background processes recorded by pid."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from deploy.kafka.local import LocalKafka
from projections.store import ClickHouseStore, SqlReader, WorkerQueryClient, is_embedded
from rapport.process import read_pid, spawn, stop_pid_file
from rapport.settings import Settings
from streams.topics import ensure_topics


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    address: str
    healthy: bool
    log: str


class StackError(RuntimeError):
    """A service did not start or become healthy; the message names it and its log."""


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process exactly these settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        env[f"RAPPORT_{name.upper()}"] = str(
            Path(value).resolve() if isinstance(value, Path) else value
        )
    env["RAPPORT_CLICKHOUSE_URL"] = _absolute_dsn(settings.clickhouse_url)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _absolute_dsn(url: str) -> str:
    from projections.store import resolve_dsn

    return resolve_dsn(url)


def _healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


class Stack:
    """Start, stop and describe the local services; state under `settings.home`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka = LocalKafka(settings)

    def _pid_file(self, name: str) -> Path:
        return self.settings.run_dir / f"{name}.pid"

    def _log_file(self, name: str) -> Path:
        return self.settings.log_dir / f"{name}.log"

    def _start(self, name: str, health_url: str, timeout_s: float = 120.0) -> None:
        if read_pid(self._pid_file(name)) is None:
            spawn(
                [sys.executable, "-m", "rapport", name],
                log_file=self._log_file(name),
                pid_file=self._pid_file(name),
                env=settings_env(self.settings),
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if read_pid(self._pid_file(name)) is None:
                raise StackError(f"{name} exited during start; see {self._log_file(name)}")
            if _healthy(health_url):
                return
            time.sleep(0.3)
        raise StackError(
            f"{name} did not become healthy in {timeout_s:.0f} s; see {self._log_file(name)}"
        )

    def up(self) -> list[ServiceStatus]:
        """Kafka, topics, worker (owns ClickHouse), then ingest; idempotent."""
        self.kafka.up()
        self.start_services()
        return self.status()

    def start_services(self) -> None:
        """Topics, worker and ingest against an already running broker."""
        ensure_topics(self.settings)
        self._start("worker", f"{self.settings.worker_url}/healthz")
        self._start("ingest", f"{self.settings.ingest_url}/readyz")

    def stop_services(self) -> list[tuple[str, int | None]]:
        """Stop ingest, then the worker (it flushes and closes ClickHouse), by their pids."""
        return [
            ("ingest", stop_pid_file(self._pid_file("ingest"))),
            ("worker", stop_pid_file(self._pid_file("worker"), timeout_s=60.0)),
        ]

    def down(self) -> list[tuple[str, int | None]]:
        """Stop ingest, worker and Kafka by their pids, in that order."""
        return [*self.stop_services(), ("kafka", self.kafka.down())]

    def status(self) -> list[ServiceStatus]:
        kafka = self.kafka.status()
        out = [
            ServiceStatus(
                "kafka", kafka.running, kafka.pid, kafka.address, kafka.answering, kafka.log
            )
        ]
        for name, url in (
            ("ingest", self.settings.ingest_url),
            ("worker", self.settings.worker_url),
        ):
            pid = read_pid(self._pid_file(name))
            out.append(
                ServiceStatus(
                    name,
                    pid is not None,
                    pid,
                    url,
                    pid is not None and _healthy(f"{url}/healthz"),
                    str(self._log_file(name)),
                )
            )
        return out

    def worker_running(self) -> bool:
        return read_pid(self._pid_file("worker")) is not None


def status_json(statuses: list[ServiceStatus]) -> str:
    return json.dumps([asdict(s) for s in statuses], indent=2)


def open_reader(settings: Settings) -> SqlReader:
    """Read through the worker while it owns the embedded engine; else open ClickHouse here."""
    if is_embedded(settings.clickhouse_url) and Stack(settings).worker_running():
        return WorkerQueryClient(settings.worker_url)
    store = ClickHouseStore(settings.clickhouse_url, settings.clickhouse_database)
    if is_embedded(settings.clickhouse_url):
        store.migrate()  # a fresh embedded directory has no tables yet
    return store
