"""Real processes for the chaos suite: one Kafka broker, and per scenario an ingest and workers.

The broker is the project's own `LocalKafka` (what `rapport kafka up` runs) on free loopback
ports with its state in a temporary directory. Each scenario gets a `Deployment`: its own
topics, consumer group, workspace file, one `rapport ingest` and up to a few `rapport worker`
processes. Every worker has its own RAPPORT_HOME, web port and embedded ClickHouse directory
(chdb can be opened by one process only), so a scenario with several workers ends with several
databases; the verifier takes their union. Every process is started here, recorded by pid, and
stopped by that pid in `close()`, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from deploy.kafka.local import LocalKafka
from projections.store import StoreUnavailable, WorkerQueryClient
from rapport.process import free_port, pid_alive, spawn, stop_pid
from rapport.settings import Settings
from rapport.stack import settings_env
from streams.topics import ensure_topics


class ClusterError(RuntimeError):
    """A process did not start or stop as it should; the message names it and its log."""


def http_status(url: str, timeout_s: float = 2.0) -> int:
    """The HTTP status of a GET, 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def _reap(pid: int) -> None:
    """Collect a child we killed, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def kill9(pid: int, timeout_s: float = 10.0) -> None:
    """SIGKILL the process group `pid` leads (spawn starts each service in its own session)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        _reap(pid)
        if time.monotonic() > deadline:
            raise ClusterError(f"pid {pid} survived SIGKILL for {timeout_s:.0f} s")
        time.sleep(0.05)
    _reap(pid)


class Cluster:
    """The suite's broker (state under `root`) and the bookkeeping of every pid started."""

    def __init__(self, root: Path, heap: str = "768m") -> None:
        self.root = root
        self.settings = Settings(
            home=root / "broker",
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            kafka_controller_port=free_port(),
            kafka_heap=heap,
        )
        self.kafka = LocalKafka(self.settings)
        self.deployments: list[Deployment] = []

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap

    def broker_pid(self) -> int | None:
        from rapport.process import read_pid

        return read_pid(self.kafka.pid_file)

    def broker_up(self) -> float:
        """Start (or restart on its existing data) the broker; seconds until it answered."""
        started = time.monotonic()
        self.kafka.up()
        return time.monotonic() - started

    def broker_kill(self) -> int:
        """kill -9 the broker; returns its pid."""
        pid = self.broker_pid()
        if pid is None:
            raise ClusterError("the broker is not running")
        kill9(pid)
        return pid

    def deployment(self, name: str, **settings: object) -> Deployment:
        found = Deployment(self, name, settings)
        self.deployments.append(found)
        return found

    def close(self) -> list[str]:
        """Stop every deployment's processes, then the broker, by pid; what was stopped."""
        stopped: list[str] = []
        for deployment in self.deployments:
            stopped += deployment.close()
        pid = self.kafka.down()
        if pid is not None:
            stopped.append(f"kafka {pid}")
        return stopped


@dataclass
class Proc:
    """One service process started by a deployment."""

    name: str
    settings: Settings
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.settings.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.settings.log_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        if self.popen is None or self.popen.poll() is not None:
            return None
        return self.popen.pid

    def running(self) -> bool:
        return self.pid is not None

    def settle(self) -> None:
        """Record the exit of a process we stopped or killed (it may already be reaped)."""
        if self.popen is not None:
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired as exc:
                raise ClusterError(f"{self.name} pid {self.popen.pid} did not exit") from exc


class Deployment:
    """One scenario's ingest and workers on the suite's broker, with topics of their own."""

    def __init__(self, cluster: Cluster, name: str, overrides: dict[str, object]) -> None:
        from chaos.generator import workspace_toml

        self.cluster = cluster
        self.name = name
        self.home = cluster.root / name
        self.home.mkdir(parents=True, exist_ok=True)
        workspaces = self.home / "workspaces.toml"
        workspaces.write_text(workspace_toml())
        tag = f"chaos-{name}-{uuid.uuid4().hex[:6]}"
        base: dict[str, object] = {
            "home": self.home / "ingest",
            "workspaces": workspaces,
            "kafka_bootstrap": cluster.bootstrap,
            "topic_raw": f"{tag}.raw",
            "topic_events": f"{tag}.events",
            "topic_relationship_events": f"{tag}.relationship-events",
            "topic_deadletters": f"{tag}.deadletters",
            "worker_id": tag,
            "ingest_port": free_port(),
            "sink_flush_s": 0.5,
            "sink_retry_max_s": 2.0,
            "produce_timeout_s": 3.0,
        }
        base.update(overrides)
        self.settings = Settings(**base)  # type: ignore[arg-type]
        self.ingest = Proc("ingest", self.settings)
        self.workers: dict[int, Proc] = {}
        self.worker_ports: dict[int, int] = {}
        self.kills = 0
        ensure_topics(self.settings)

    # --- settings ---------------------------------------------------------------------------

    def worker_settings(self, index: int) -> Settings:
        """Worker `index`: same group and topics, its own home, port and ClickHouse directory."""
        port = self.worker_ports.setdefault(index, free_port())
        return self.settings.model_copy(
            update={
                "home": self.home / f"worker{index}",
                "worker_port": port,
                "clickhouse_url": f"chdb://{self.home / f'clickhouse{index}'}",
            }
        )

    def clickhouse_dsn(self, index: int) -> str:
        return f"chdb://{self.home / f'clickhouse{index}'}"

    def reader(self, index: int) -> WorkerQueryClient:
        return WorkerQueryClient(self.worker_settings(index).worker_url, timeout_s=120.0)

    # --- processes --------------------------------------------------------------------------

    def _spawn(self, proc: Proc) -> None:
        if proc.running():
            raise ClusterError(f"{self.name}/{proc.name} already runs (pid {proc.pid})")
        proc.popen = spawn(
            [sys.executable, "-m", "rapport", "worker" if proc.name.startswith("worker") else
             "ingest"],
            log_file=proc.log_file,
            pid_file=proc.pid_file,
            env=settings_env(proc.settings),
        )  # fmt: skip

    def _wait_healthy(self, proc: Proc, url: str, timeout_s: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if not proc.running():
                raise ClusterError(f"{self.name}/{proc.name} exited; see {proc.log_file}")
            if http_status(url) == 200:
                return time.monotonic() - started
            time.sleep(0.2)
        raise ClusterError(
            f"{self.name}/{proc.name} not healthy in {timeout_s:.0f} s; see {proc.log_file}"
        )

    def start_ingest(self, timeout_s: float = 60.0) -> float:
        self._spawn(self.ingest)
        return self._wait_healthy(self.ingest, f"{self.settings.ingest_url}/readyz", timeout_s)

    def ingest_ready(self) -> int:
        return http_status(f"{self.settings.ingest_url}/readyz", timeout_s=5.0)

    def start_worker(self, index: int = 0, timeout_s: float = 120.0) -> float:
        """Start worker `index` and wait for its web server; seconds it took."""
        proc = self.workers.get(index)
        if proc is None:
            proc = self.workers[index] = Proc(f"worker{index}", self.worker_settings(index))
        self._spawn(proc)
        return self._wait_healthy(proc, f"{proc.settings.worker_url}/healthz", timeout_s)

    def kill_worker(self, index: int = 0) -> int:
        """kill -9 worker `index`; returns the pid killed."""
        pid = self.workers[index].pid
        if pid is None:
            raise ClusterError(f"{self.name}/worker{index} is not running")
        kill9(pid)
        self.workers[index].settle()
        self.kills += 1
        return pid

    def stop_worker(self, index: int = 0, timeout_s: float = 60.0) -> int | None:
        """SIGTERM worker `index` (it leaves the group, flushes, closes ClickHouse)."""
        pid = self.workers[index].pid
        if pid is not None and not stop_pid(pid, timeout_s=timeout_s):
            raise ClusterError(f"{self.name}/worker{index} pid {pid} did not stop")
        self.workers[index].settle()
        return pid

    def running_workers(self) -> list[int]:
        return sorted(i for i, proc in self.workers.items() if proc.running())

    def worker_exited(self) -> list[str]:
        """Workers that died without being killed or stopped here (a finding)."""
        return [
            f"worker{i} exited with {proc.popen.returncode}"
            for i, proc in self.workers.items()
            if proc.popen is not None and proc.popen.returncode not in (None, -9, 0, -15)
        ]

    def wait_processing(self, index: int, rows: int, timeout_s: float = 300.0) -> int:
        """Block until worker `index` has sunk `rows` more interaction rows than now."""
        reader = self.reader(index)
        sql = "SELECT count() FROM rapport.interactions"
        start: int | None = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                have = int(reader.query(sql).rows[0][0])
            except StoreUnavailable:
                have = -1  # still starting or rebalancing
            if have >= 0:
                if start is None:
                    start = have
                elif have - start >= rows:
                    return have
            time.sleep(0.25)
        raise ClusterError(f"{self.name}/worker{index} sank fewer than {rows} rows in time")

    def log_findings(self, patterns: tuple[str, ...] = ("Error in recovery",)) -> list[str]:
        """Lines of the workers' logs that name a known failure."""
        found: list[str] = []
        rx = re.compile("|".join(re.escape(p) for p in patterns))
        for proc in self.workers.values():
            with contextlib.suppress(FileNotFoundError):
                for line in proc.log_file.read_text(errors="replace").splitlines():
                    if rx.search(line):
                        found.append(f"{proc.name}: {line.strip()[:200]}")
        return found

    def close(self) -> list[str]:
        """Stop the ingest and every worker by pid (SIGTERM, then SIGKILL)."""
        stopped: list[str] = []
        for proc in [self.ingest, *self.workers.values()]:
            pid = proc.pid
            if pid is not None:
                stop_pid(pid, timeout_s=30.0)
                proc.settle()
                stopped.append(f"{self.name}/{proc.name} {pid}")
        return stopped
