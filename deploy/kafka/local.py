"""The local Apache Kafka broker: jars from Maven Central, KRaft storage, one process by pid.

`up` fetches the jars once (mvn, cached outside the repository), formats the KRaft storage on
first use, starts `kafka.Kafka` on loopback, waits until the broker answers metadata requests
and records the pid; `down` stops that pid. Used by `rapport kafka ...`, `rapport up` and tests.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import shutil
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from rapport.process import port_open, read_pid, spawn, stop_pid_file
from rapport.settings import Settings

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOGGING_CONFIG_DIR = HERE  # holds simplelogger.properties, put on the classpath


class KafkaRuntimeError(RuntimeError):
    """The local broker could not be fetched, formatted or started; the message says why."""


@dataclass(frozen=True)
class KafkaStatus:
    running: bool
    pid: int | None
    address: str
    answering: bool
    version: str
    log: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def kafka_version(pom: Path = POM) -> str:
    """The Kafka version pinned in deploy/kafka/pom.xml (the single source of truth)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not node.text:
        raise KafkaRuntimeError(f"{pom} does not pin <kafka.version>")
    return node.text.strip()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class LocalKafka:
    """One single-node KRaft broker whose state lives under `settings.home`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.version = kafka_version()
        self.lib_dir = settings.kafka_cache / f"kafka-{self.version}" / "lib"
        self.state_dir = settings.home / "kafka"
        self.data_dir = self.state_dir / "data"
        self.config_file = self.state_dir / "server.properties"
        self.pid_file = settings.run_dir / "kafka.pid"
        self.log_file = settings.log_dir / "kafka.log"
        self.host, self.port = settings.kafka_host_port

    # --- jars ---------------------------------------------------------------------------------

    def ensure_jars(self) -> Path:
        """Copy the broker's runtime jars from Maven Central into the cache, once."""
        marker = self.lib_dir / ".complete"
        if marker.exists():
            return self.lib_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaRuntimeError("Maven (mvn) is needed once to fetch the Kafka jars")
        with _file_lock(self.lib_dir.parent / ".lock"):
            if marker.exists():
                return self.lib_dir
            staging = self.lib_dir.with_name("lib.partial")
            shutil.rmtree(staging, ignore_errors=True)
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise KafkaRuntimeError(
                    "mvn could not fetch the Kafka jars:\n" + (done.stdout + done.stderr)[-4000:]
                )
            shutil.rmtree(self.lib_dir, ignore_errors=True)
            staging.rename(self.lib_dir)
            marker.write_text(self.version)
        return self.lib_dir

    def _classpath(self) -> str:
        """The jars (fetched first if this machine has none yet) and our logging config."""
        return f"{self.ensure_jars()}/*:{LOGGING_CONFIG_DIR}"

    # --- storage ------------------------------------------------------------------------------

    def _write_config(self) -> None:
        cport = self.settings.kafka_controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{cport}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{cport}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir.resolve()),
            "num.partitions": str(self.settings.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "message.max.bytes": str(8 * 1024 * 1024),
            "log.retention.hours": "-1",
            "log.segment.bytes": str(256 * 1024 * 1024),
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _format_storage(self) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cmd = [
            "java",
            "-cp",
            self._classpath(),
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",  # an id may start with "-" (1 in 64): keep it attached
            "-c",
            str(self.config_file),
            "--ignore-formatted",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise KafkaRuntimeError("formatting KRaft storage failed:\n" + done.stderr[-4000:])

    # --- lifecycle ----------------------------------------------------------------------------

    def answering(self, timeout_s: float = 3.0) -> bool:
        """Whether the broker answers a metadata request."""
        if not port_open(self.host, self.port):
            return False
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.settings.kafka_bootstrap,
                request_timeout_ms=int(timeout_s * 1000),
                client_id="rapport-probe",
            )
        except (KafkaError, OSError, ValueError):  # not up yet: the caller polls again
            return False
        try:
            admin.list_topics()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()

    def up(self) -> KafkaStatus:
        """Start the broker unless ours already runs; return once it answers metadata requests."""
        pid = read_pid(self.pid_file)
        if pid is not None:
            if self._wait_answering(pid, timeout_s=self.settings.kafka_start_timeout_s):
                return self.status()
            raise KafkaRuntimeError(
                f"broker pid {pid} runs but does not answer; see {self.log_file}"
            )
        if port_open(self.host, self.port):
            raise KafkaRuntimeError(
                f"{self.host}:{self.port} is taken by a process Rapport did not start; "
                "stop it or set RAPPORT_KAFKA_BOOTSTRAP to another port"
            )
        self.ensure_jars()
        self._write_config()
        self._format_storage()
        argv = [
            "java",
            "-Xms256m",
            f"-Xmx{self.settings.kafka_heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.config_file),
        ]
        proc = spawn(argv, log_file=self.log_file, pid_file=self.pid_file)
        if not self._wait_answering(proc.pid, timeout_s=self.settings.kafka_start_timeout_s):
            tail = self._log_tail()
            stop_pid_file(self.pid_file)
            raise KafkaRuntimeError(f"the broker did not come up; last log lines:\n{tail}")
        return self.status()

    def _wait_answering(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if read_pid(self.pid_file) != pid:
                return False
            if self.answering():
                return True
            time.sleep(0.3)
        return False

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def down(self) -> int | None:
        """Stop the broker by its recorded pid; returns the pid, or None if none ran."""
        return stop_pid_file(self.pid_file, timeout_s=30.0)

    def status(self) -> KafkaStatus:
        pid = read_pid(self.pid_file)
        return KafkaStatus(
            running=pid is not None,
            pid=pid,
            address=self.settings.kafka_bootstrap,
            answering=pid is not None and self.answering(),
            version=self.version,
            log=str(self.log_file),
        )
