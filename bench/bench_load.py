"""Load and freshness: signed webhooks at a fixed rate through the whole running pipeline.

One run starts, all on loopback and stopped by pid at the end: a real Apache Kafka broker
(`bench.common.private_broker`, free ports, a temporary directory), then `rapport worker` and
`rapport ingest` through `rapport.stack.Stack`, exactly as `rapport up` runs them. Then:

* an open-loop sender (its own process, so the samplers below cannot delay it) POSTs signed X
  Account Activity DM deliveries to the ingest on a fixed schedule (delivery k is due at
  t0 + (k - 1) / rate), each with a unique DM id, over many contacts, alternating inbound and
  outbound per contact. It never waits for an answer before sending the next delivery; it records
  how late each request started against the schedule, and when its 2xx arrived. Its requests are
  built and signed before t0 and written on `--connections` keep-alive HTTP/1.1 connections,
  so that the sender takes as little as it can of the two cores the pipeline runs on;
* freshness is the time from that 2xx to the row being in ClickHouse `interactions`. Two ways:
  - observed: every `--sample-every`th delivery is looked for by polling the worker's
    `POST /query` (the read path the CLI uses); freshness = when the poll that first returned
    the row answered - the 2xx. An upper bound (it includes up to one poll interval and the poll's
    round trip through the worker, which shares the sink's ClickHouse thread);
  - `sunk_at`, for every delivery: the column's default `now64(3)`, which the engine evaluates
    once per INSERT while it writes the block, before the insert commits, on the same clock as
    the sender. A slight lower bound (the row becomes readable when that insert returns);
* RSS (VmRSS from /proc) and CPU of worker, ingest, broker and sender every `--sample-s`;
* the Faust consumer group's lag (committed offsets vs end offsets of rapport.raw and
  rapport.events, kafka-python's admin client) every `--sample-s`.

After the schedule, the run waits (up to `--drain-s`) until every 2xx delivery is in ClickHouse,
then reads `sunk_at` of every row; a delivery still missing then is censored in the percentiles
(a percentile that falls on one is reported as not in time) and fails the run. The baseline is the
target itself: achieved rate / target rate, and the freshness percentiles against 5 s.

    .venv/bin/python bench/bench_load.py [--rate 1000] [--seconds 600] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    from rapport.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKSPACE = "load"
WARM_WORKSPACE = "warm"  # warm-up deliveries, kept out of the measured rows
OWNED = "1000"  # the workspace's X account
CONTACT_BASE = 2_000_000  # contact k is X user CONTACT_BASE + k
SECRET = "load-consumer-secret"
FRESHNESS_TARGET_S = 5.0


# --- the deliveries ----------------------------------------------------------------------------


def delivery(dm_id: int, contacts: int, at_s: int) -> bytes:
    """DM `dm_id` (1-based) with contact dm_id % contacts; each contact alternates who writes."""
    from rapport.demo import Message, x_dm_delivery

    contact = str(CONTACT_BASE + dm_id % contacts)
    inbound = (dm_id // contacts) % 2 == 0
    sender, recipient = (contact, OWNED) if inbound else (OWNED, contact)
    return x_dm_delivery(Message(dm_id, sender, recipient, at_s), OWNED)


def headers_for(body: bytes) -> dict[str, str]:
    from streams.webhooks.x import signature

    return {
        "Content-Type": "application/json",
        "x-twitter-webhooks-signature": signature(SECRET, body),
    }


# --- the sender (its own process) --------------------------------------------------------------


def signed_requests(url: str, count: int, contacts: int, rate: float, t_base: float) -> list[bytes]:
    """Every delivery as the complete HTTP/1.1 request bytes, built and signed before t0.

    Building and signing while sending cost the sender about a third of a core, taken from the
    pipeline it measures; real senders are other machines. Delivery k's message time is
    t_base + (k - 1) / rate, t_base being when the building started (seconds before t0).
    """
    parts = urllib.parse.urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Type: application/json\r\nx-twitter-webhooks-signature: "
    ).encode()
    requests = []
    for index in range(count):
        body = delivery(index + 1, contacts, int(t_base + index / rate))
        sign = headers_for(body)["x-twitter-webhooks-signature"].encode()
        requests.append(b"%s%s\r\nContent-Length: %d\r\n\r\n%s" % (head, sign, len(body), body))
    return requests


class Answer(Exception):
    """The server answered something this sender does not read (chunked, or not HTTP)."""


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, its answer read by length."""

    def __init__(
        self, done: Callable[[Connection, int], None], lost: Callable[[Connection], None]
    ) -> None:
        self.done, self.lost = done, lost
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.index = -1  # the delivery in flight on this connection, -1 when idle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def send(self, index: int, request: bytes) -> None:
        assert self.transport is not None
        self.index = index
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1").split("\r\n")
        fields = dict(line.lower().split(": ", 1) for line in head[1:] if ": " in line)
        if "content-length" not in fields:
            raise Answer(f"no content-length in {head[0]!r}")
        size = end + 4 + int(fields["content-length"])
        if len(self.buffer) < size:
            return
        self.buffer = self.buffer[size:]
        self.done(self, int(head[0].split(" ", 2)[1]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost(self)


async def send_schedule(
    url: str, requests: list[bytes], rate: float, connections: int, t0_wall: float
) -> dict[str, Any]:
    """Open loop: start delivery k at t0 + (k-1)/rate whatever the server does; record times.

    A delivery due while every connection is busy waits for the first one free (as a client's
    connection pool does); its start is recorded when it is written.
    """
    count = len(requests)
    t0 = time.perf_counter() + (t0_wall - time.time())
    wall = t0_wall - t0  # perf_counter + wall = epoch seconds
    started = np.full(count, np.nan)
    answered = np.full(count, np.nan)
    status = np.zeros(count, dtype=np.int16)
    loop = asyncio.get_running_loop()
    idle: list[Connection] = []
    waiting: collections.deque[int] = collections.deque()
    finished = loop.create_future()
    remaining = [count]
    max_in_flight = 0

    def write(connection: Connection, index: int) -> None:
        started[index] = time.perf_counter()
        connection.send(index, requests[index])

    def answer(index: int, code: int) -> None:
        answered[index] = time.perf_counter()
        status[index] = code
        remaining[0] -= 1
        if remaining[0] == 0 and not finished.done():
            finished.set_result(None)

    def done(connection: Connection, code: int) -> None:
        answer(connection.index, code)
        connection.index = -1
        if waiting:
            write(connection, waiting.popleft())
        else:
            idle.append(connection)

    def lost(connection: Connection) -> None:
        """The server closed it (its keep-alive timeout on an idle one): replace it."""
        if connection.index >= 0:  # a request in flight on it failed
            answer(connection.index, -1)
        elif connection in idle:
            idle.remove(connection)
        if not finished.done():
            task = loop.create_task(replace())
            replacements.add(task)
            task.add_done_callback(replaced)

    def replaced(task: asyncio.Task[None]) -> None:
        replacements.discard(task)
        if not task.cancelled() and task.exception() is not None and not finished.done():
            finished.set_exception(cast(BaseException, task.exception()))

    parts = urllib.parse.urlsplit(url)

    async def connect() -> Connection:
        _, connection = await loop.create_connection(
            lambda: Connection(done, lost), parts.hostname or "127.0.0.1", parts.port or 80
        )
        return connection

    async def replace() -> None:
        connection = await connect()
        if waiting:
            write(connection, waiting.popleft())
        else:
            idle.append(connection)

    replacements: set[asyncio.Task[None]] = set()
    for _ in range(connections):
        idle.append(await connect())
    index = 0
    while index < count:
        due = min(count, int((time.perf_counter() - t0) * rate) + 1)
        while index < due:
            if idle:
                write(idle.pop(), index)
            else:
                waiting.append(index)
            index += 1
        max_in_flight = max(max_in_flight, connections - len(idle) + len(waiting))
        if index < count:
            await asyncio.sleep(max(0.0, t0 + index / rate - time.perf_counter()))
    await asyncio.wait_for(finished, timeout=120)
    return {
        "started": started + wall,
        "answered": answered + wall,
        "status": status,
        "max_in_flight": np.array([max_in_flight]),
    }


def run_sender(params: dict[str, Any], out: Path) -> None:
    """Child entry: build the requests, announce t0 on stdout, run the schedule, save arrays."""
    from streams.runtime import new_event_loop

    requests = signed_requests(
        params["url"], params["count"], params["contacts"], params["rate"], time.time()
    )
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    t0 = time.time() + 0.5
    print(f"t0 {t0!r}", flush=True)
    result = loop.run_until_complete(
        send_schedule(params["url"], requests, params["rate"], params["connections"], t0)
    )
    np.savez(out, t0=np.array([t0]), **result)


# --- samplers (threads in the parent) ----------------------------------------------------------


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of the process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads so far, summed by thread name without its number.

    Names tell the parts apart: the Python thread of the worker, RocksDB's background threads,
    the embedded ClickHouse's pools, the broker's request handlers and log cleaner.
    """
    out: dict[str, float] = collections.defaultdict(float)
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return {}
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        group = name.rstrip("0123456789-_:# ").lower() or "?"
        out[group] += (int(fields[11]) + int(fields[12])) / tick
    return dict(out)


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (/proc/stat)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


class Sampler(threading.Thread):
    """Calls `sample` every `every_s` seconds until stopped (and once more at stop)."""

    def __init__(self, every_s: float) -> None:
        super().__init__(daemon=True)
        self.every_s = every_s
        self.halt = threading.Event()
        self.errors: list[str] = []

    def sample(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception as exc:  # a failed sample is reported, not fatal
                self.errors.append(f"{time.time():.1f}: {type(exc).__name__}: {exc}")
            if self.halt.wait(self.every_s):
                with contextlib.suppress(Exception):
                    self.sample()
                return

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=60)


class ResourceSampler(Sampler):
    def __init__(self, every_s: float, pids: dict[str, int]) -> None:
        super().__init__(every_s)
        self.pids = pids
        self.samples: list[dict[str, Any]] = []

    def sample(self) -> None:
        row: dict[str, Any] = {"t": time.time(), "load": loadavg(), "machine": machine_cpu_s()}
        for name, pid in self.pids.items():
            row[name] = {"rss_mb": rss_mb(pid), "cpu_s": cpu_s(pid), "threads": thread_cpu_s(pid)}
        self.samples.append(row)


class LagSampler(Sampler):
    def __init__(self, every_s: float, bootstrap: str, group: str, topics: list[str]) -> None:
        super().__init__(every_s)
        from kafka import KafkaAdminClient, KafkaConsumer

        self.group = group
        self.topics = topics
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap)
        self.samples: list[dict[str, Any]] = []

    def sample(self) -> None:
        from kafka import TopicPartition

        if hasattr(self.admin, "list_consumer_group_offsets"):  # kafka-python 2.x
            committed = self.admin.list_consumer_group_offsets(self.group)
        else:  # 3.x
            committed = self.admin.list_group_offsets({self.group: None}).get(self.group, {})
        parts = [
            TopicPartition(topic, p)
            for topic in self.topics
            for p in sorted(self.consumer.partitions_for_topic(topic) or ())
        ]
        ends = self.consumer.end_offsets(parts)
        row: dict[str, Any] = {"t": time.time()}
        for topic in self.topics:
            lag = 0
            for tp in parts:
                if tp.topic == topic:
                    done = committed.get(tp)
                    lag += ends[tp] - (done.offset if done is not None and done.offset >= 0 else 0)
            row[topic] = lag
        self.samples.append(row)

    def close(self) -> None:
        self.admin.close()
        self.consumer.close()


class WorkerMemorySampler(Sampler):
    """Where each worker's memory goes: its decoded-state cache and RocksDB (`/healthz`: states
    held, estimated bytes, dropped; RocksDB's own counts) and the embedded ClickHouse's tracked
    memory (`system.metrics`, through the worker's `/query`)."""

    TRACKED = "SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'"

    def __init__(self, every_s: float, worker_urls: list[str]) -> None:
        super().__init__(every_s)
        from projections.store import WorkerQueryClient

        self.worker_urls = worker_urls
        self.readers = [WorkerQueryClient(url, timeout_s=5) for url in worker_urls]
        self.samples: list[dict[str, Any]] = []

    def sample(self) -> None:
        row: dict[str, Any] = {"t": time.time()}
        for n, (url, reader) in enumerate(zip(self.worker_urls, self.readers, strict=True), 1):
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
                health = json.loads(response.read())
            tracked = reader.query(self.TRACKED).rows
            row[worker_name(n)] = {
                "live_states": health["live_states"],
                "rocksdb": health.get("rocksdb"),
                "clickhouse": int(tracked[0][0]) if tracked else None,
            }
        self.samples.append(row)


def worker_name(n: int) -> str:
    """Worker n (1-based) as the resource sampler names it."""
    return "worker" if n == 1 else f"worker{n}"


class VisibilityPoller(Sampler):
    """First time each sampled delivery is returned by the worker's read path.

    Each poll asks only for sampled rows sunk since the previous poll was sent (minus a margin)
    and not before the oldest unseen sampled delivery was due, so a poll stays small however far
    behind the pipeline is. That window misses no row: `sunk_at` is evaluated when an insert
    starts, and the worker runs inserts and these queries on its one ClickHouse thread, so an
    insert that started before a poll was asked has committed before that poll reads.
    """

    MARGIN_S = 2.0

    def __init__(
        self,
        every_s: float,
        worker_urls: list[str],
        t0: float,
        rate: float,
        count: int,
        sample_every: int,
    ) -> None:
        super().__init__(every_s)
        from projections.store import WorkerQueryClient

        self.readers = [WorkerQueryClient(url, timeout_s=30) for url in worker_urls]
        self.t0, self.rate, self.count, self.sample_every = t0, rate, count, sample_every
        self.first_seen: dict[int, float] = {}
        self.round_trips: list[float] = []
        self.next_id = sample_every  # the oldest sampled DM id not seen yet
        self.last_asked = 0.0

    def due(self, dm_id: int) -> float:
        return self.t0 + (dm_id - 1) / self.rate

    def sample(self) -> None:
        while self.next_id <= self.count and self.next_id in self.first_seen:
            self.next_id += self.sample_every
        if self.next_id > self.count or self.due(self.next_id) > time.time():
            return
        since = max(self.due(self.next_id), self.last_asked) - self.MARGIN_S
        sql = (
            f"SELECT toUInt64(object_id) AS id FROM rapport.interactions "
            f"WHERE workspace = '{WORKSPACE}' "
            f"AND sunk_at >= fromUnixTimestamp64Milli(toInt64({int(since * 1000)}), 'UTC') "
            f"AND id % {self.sample_every} = 0"
        )
        asked = time.time()
        rows = [row for reader in self.readers for row in reader.query(sql).rows]
        seen = time.time()
        self.last_asked = asked
        self.round_trips.append(seen - asked)
        for (dm_id,) in rows:
            self.first_seen.setdefault(int(dm_id), seen)


# --- orchestration -----------------------------------------------------------------------------


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers=headers_for(body), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def count_rows(worker_urls: list[str], workspace: str) -> int:
    """Distinct deliveries of `workspace` over every worker's engine (each has its own)."""
    return len(delivery_ids(worker_urls, workspace))


def delivery_ids(worker_urls: list[str], workspace: str) -> set[int]:
    from projections.store import WorkerQueryClient

    sql = (
        "SELECT DISTINCT toUInt64(object_id) FROM rapport.interactions "
        f"WHERE workspace = '{workspace}'"
    )
    ids: set[int] = set()
    for url in worker_urls:
        ids.update(int(r[0]) for r in WorkerQueryClient(url, timeout_s=60).query(sql).rows)
    return ids


def wait_rows(
    worker_urls: list[str], workspace: str, expected: int, timeout_s: float
) -> float | None:
    """Seconds until `expected` rows of `workspace` are readable; None on timeout."""
    from projections.store import StoreUnavailable

    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(StoreUnavailable):
            if count_rows(worker_urls, workspace) >= expected:
                return time.monotonic() - started
        time.sleep(0.5)
    return None


def warm_up(ingest_url: str, worker_urls: list[str], contacts: int) -> float:
    """A few deliveries through the whole path, so partitions are assigned and tables exist."""
    url = f"{ingest_url}/webhooks/{WARM_WORKSPACE}/x"
    for dm_id in range(1, 21):
        status = post(url, delivery(10**12 + dm_id, contacts, int(time.time())))
        if status != 200:
            raise SystemExit(f"warm-up delivery answered {status}")
    waited = wait_rows(worker_urls, WARM_WORKSPACE, 20, timeout_s=180)
    if waited is None:
        raise SystemExit("warm-up deliveries did not reach ClickHouse in 180 s")
    return waited


def sunk_times(worker_urls: list[str]) -> dict[str, np.ndarray]:
    """Every measured row: DM id, first sunk_at, received_at (ms), copies (all engines)."""
    from projections.store import WorkerQueryClient

    sql = (
        "SELECT toUInt64(object_id) AS id, toUnixTimestamp64Milli(min(sunk_at)), "
        "toUnixTimestamp64Milli(min(received_at)), count() "
        f"FROM rapport.interactions WHERE workspace = '{WORKSPACE}' GROUP BY id"
    )
    merged: dict[int, list[int]] = {}
    for url in worker_urls:
        for dm_id, sunk, received, copies in WorkerQueryClient(url, timeout_s=300).query(sql).rows:
            have = merged.get(int(dm_id))
            if have is None:
                merged[int(dm_id)] = [int(dm_id), int(sunk), int(received), int(copies)]
            else:  # in two engines: a partition moved between workers
                have[1], have[2] = min(have[1], int(sunk)), min(have[2], int(received))
                have[3] += int(copies)
    table = np.array(list(merged.values()), dtype=np.int64).reshape(-1, 4)
    return {
        "id": table[:, 0],
        "sunk": table[:, 1] / 1000,
        "received": table[:, 2] / 1000,
        "copies": table[:, 3],
    }


def pct(values: np.ndarray) -> dict[str, float | int | None]:
    """Nearest-rank percentiles; +inf marks a delivery never seen (censored): a percentile that
    falls on one is None, so a backlog the run did not wait out cannot flatter the figures."""
    if values.size == 0:
        return {"n": 0, "censored": 0, "p50": None, "p95": None, "p99": None, "max": None}
    ordered = np.sort(values)

    def rank(p: float) -> float | None:
        value = float(ordered[max(1, int(np.ceil(p * ordered.size))) - 1])
        return round(value, 3) if np.isfinite(value) else None

    return {
        "n": int(values.size),
        "censored": int(np.isinf(values).sum()),
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": rank(1.0),
    }


def slope_per_min(ts: list[float], ys: list[float]) -> float | None:
    if len(ts) < 3:
        return None
    return float(np.polyfit(np.array(ts) / 60, np.array(ys), 1)[0])


@dataclass
class Run:
    """What the parent gathered; `summary` turns it into the report."""

    args: argparse.Namespace
    t0: float = 0.0
    warm_up_s: float = 0.0
    drain_s: float | None = None
    sent: dict[str, np.ndarray] = field(default_factory=dict)
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    resources: list[dict[str, Any]] = field(default_factory=list)
    lags: list[dict[str, Any]] = field(default_factory=list)
    worker_memory: list[dict[str, Any]] = field(default_factory=list)
    first_seen: dict[int, float] = field(default_factory=dict)
    poll_round_trips: list[float] = field(default_factory=list)
    sampler_errors: list[str] = field(default_factory=list)
    load_before: list[float] = field(default_factory=list)
    load_after: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    sent_done_at: float = 0.0


def summary(run: Run) -> dict[str, Any]:
    a = run.args
    count = len(run.sent["status"])
    due = run.t0 + np.arange(count) / a.rate
    status = run.sent["status"]
    ok = (status >= 200) & (status < 300)
    answered = run.sent["answered"]
    ok_ids = np.flatnonzero(ok) + 1
    last_2xx = float(np.nanmax(answered[ok])) if ok.any() else run.t0
    span = max(last_2xx - run.t0, 1e-9)
    per_10s = np.bincount(((answered[ok] - run.t0) // 10).astype(int))
    full_windows = per_10s[: int(a.seconds // 10)] / 10 if a.seconds >= 10 else per_10s
    # Freshness from sunk_at, every delivery answered 2xx.
    sunk = np.full(count + 1, np.nan)
    received = np.full(count + 1, np.nan)
    ids = run.rows.get("id", np.array([], dtype=np.int64))
    inside = (ids >= 1) & (ids <= count)
    sunk[ids[inside]] = run.rows["sunk"][inside]
    received[ids[inside]] = run.rows["received"][inside]
    sunk_ok = sunk[ok_ids]
    present = ~np.isnan(sunk_ok)
    fresh_sunk = np.where(present, sunk_ok, np.inf) - answered[ok_ids - 1]
    minute = ((due[ok_ids - 1] - run.t0) // 60).astype(int)
    per_minute = [
        {"minute": int(m), **pct(fresh_sunk[minute == m])} for m in sorted(set(minute.tolist()))
    ]
    # What the worker got into ClickHouse per second (its capacity while it is behind).
    sunk_all = run.rows["sunk"][inside] - run.t0 if ids.size else np.array([])
    sunk_10s = np.bincount(np.maximum(sunk_all // 10, 0).astype(int)) / 10
    busy_s = float(sunk_all.max() - max(float(sunk_all.min()), 0.0)) if sunk_all.size else 0.0
    # Observed freshness of the sampled deliveries.
    sampled = [i for i in ok_ids.tolist() if i % a.sample_every == 0]
    seen = [i for i in sampled if i in run.first_seen]
    fresh_seen = np.array(
        [run.first_seen[i] - answered[i - 1] if i in run.first_seen else np.inf for i in sampled]
    )
    seen_after_sunk = np.array([run.first_seen[i] - sunk[i] for i in seen if not np.isnan(sunk[i])])
    # Where the time goes (medians over every delivery): ingest answer, then the pipeline.
    ingest_s = answered[ok_ids - 1][present] - received[ok_ids][present]

    def resource(name: str) -> dict[str, Any]:
        points = [(s["t"], s[name]) for s in run.resources if s[name]["rss_mb"] is not None]
        if not points:
            return {}
        ts = [t - run.t0 for t, _ in points]
        rss = [p["rss_mb"] for _, p in points]
        half = len(points) // 2
        cpus = [(t, p["cpu_s"]) for t, p in points if p["cpu_s"] is not None]
        busy = (
            (cpus[-1][1] - cpus[0][1]) / (cpus[-1][0] - cpus[0][0]) * 100
            if len(cpus) >= 2 and cpus[-1][0] > cpus[0][0]
            else None
        )
        return {
            "rss_first_mb": round(rss[0], 1),
            "rss_last_mb": round(rss[-1], 1),
            "rss_max_mb": round(max(rss), 1),
            "rss_slope_mb_per_min": _round(slope_per_min(ts, rss)),
            "rss_slope_second_half_mb_per_min": _round(slope_per_min(ts[half:], rss[half:])),
            "cpu_percent_of_one_core": _round(busy, 1),
            "samples": len(points),
        }

    def cpu_per_minute() -> list[dict[str, Any]]:
        """CPU % of one core per minute since t0: the machine, each process and its busiest
        thread groups, and what the rest of the machine (not this pipeline) took."""
        samples = [s for s in run.resources if s["t"] >= run.t0]
        out: list[dict[str, Any]] = []
        minute = 0
        while True:
            start = next((s for s in samples if s["t"] >= run.t0 + 60 * minute), None)
            end = next((s for s in samples if s["t"] >= run.t0 + 60 * (minute + 1)), None)
            if start is None or end is None or end["t"] <= start["t"]:
                return out
            span = end["t"] - start["t"]
            row: dict[str, Any] = {
                "minute": minute,
                "machine": round((end["machine"][0] - start["machine"][0]) / span * 100, 1),
            }
            ours = 0.0
            for name in names:
                was, now = start[name], end[name]
                if was["cpu_s"] is None or now["cpu_s"] is None:
                    continue
                ours += now["cpu_s"] - was["cpu_s"]
                groups = {
                    g: round((cpu - was["threads"].get(g, 0.0)) / span * 100, 1)
                    for g, cpu in now["threads"].items()
                }
                top = sorted(groups.items(), key=lambda kv: -kv[1])[:5]
                row[name] = {
                    "cpu": round((now["cpu_s"] - was["cpu_s"]) / span * 100, 1),
                    "threads": {g: v for g, v in top if v >= 1.0},
                }
            row["others"] = round(row["machine"] - ours / span * 100, 1)
            out.append(row)
            minute += 1

    names = [
        "worker",
        *(f"worker{n}" for n in range(2, a.workers + 1)),
        "ingest",
        "kafka",
        "sender",
    ]
    lag_topics = [run.settings["topic_raw"], run.settings["topic_events"]]
    during = [s for s in run.lags if s["t"] <= run.sent_done_at]
    lag = {
        topic: {
            "max_during_send": max((s[topic] for s in during), default=None),
            "last_during_send": during[-1][topic] if during else None,
            "after_drain": run.lags[-1][topic] if run.lags else None,
        }
        for topic in lag_topics
    }
    load_samples = [s["load"][0] for s in run.resources]
    launch_lag = run.sent["started"] - due
    missing = int((~present).sum())
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "arch": platform.machine(),
            "python": platform.python_version(),
            "load_before": run.load_before,
            "load_after": run.load_after,
            "load1_during_mean": _round(float(np.mean(load_samples)) if load_samples else None),
            "load1_during_max": max(load_samples, default=None),
        },
        "config": {
            "rate": a.rate,
            "seconds": a.seconds,
            "contacts": a.contacts,
            "partitions": a.partitions,
            "workers": a.workers,
            "connections": a.connections,
            "sample_every": a.sample_every,
            "poll_s": a.poll_s,
            "sample_s": a.sample_s,
            "sink_flush_s": run.settings["sink_flush_s"],
            "sink_batch_rows": run.settings["sink_batch_rows"],
        },
        "sender": {
            "scheduled": count,
            "answered_2xx": int(ok.sum()),
            "non_2xx": int(((status > 0) & ~ok).sum()),
            "errors": int((status < 0).sum()),
            "achieved_rate": round(int(ok.sum()) / span, 1),
            "ratio_achieved_to_target": round(int(ok.sum()) / span / a.rate, 4),
            "min_10s_rate": round(float(full_windows.min()), 1) if full_windows.size else None,
            "behind_schedule_s": pct(launch_lag),
            "latency_from_schedule_s": pct((answered - due)[ok]),
            "latency_from_start_s": pct((answered - run.sent["started"])[ok]),
            "max_in_flight": int(run.sent["max_in_flight"][0]),
            "last_2xx_after_t0_s": round(span, 3),
        },
        "freshness_observed_s": {
            **pct(fresh_seen),
            "sampled": len(sampled),
            "never_seen_by_poll": len(sampled) - len(seen),
            "poll_round_trip_s": pct(np.array(run.poll_round_trips)),
            "seen_after_sunk_at_s": pct(seen_after_sunk),
        },
        "freshness_sunk_at_s": {**pct(fresh_sunk), "per_minute": per_minute},
        "ingest_received_to_2xx_s": pct(ingest_s),
        "sink_rows_per_s": {
            "mean_first_to_last_row": round(sunk_all.size / busy_s, 1) if busy_s else None,
            "max_10s": round(float(sunk_10s.max()), 1) if sunk_10s.size else None,
            "last_row_after_t0_s": round(float(sunk_all.max()), 1) if sunk_all.size else None,
            "per_minute": [
                round(float(n) / 60, 1)
                for n in np.bincount(np.maximum(sunk_all // 60, 0).astype(int))
            ],
        },
        "target_p95_s": FRESHNESS_TARGET_S,
        "rows": {
            "distinct_in_clickhouse": int(inside.sum()),
            "duplicate_copies": int((run.rows["copies"][inside] - 1).sum()) if ids.size else 0,
            "answered_2xx_missing": missing,
            "drain_s": _round(run.drain_s),
            "warm_up_s": round(run.warm_up_s, 1),
        },
        "rss": {name: resource(name) for name in names},
        "cpu_per_minute": cpu_per_minute(),
        "consumer_lag": lag,
        "decoded_states": decoded_states(run),
        "memory_by_part": memory_by_part(run),
        "consumer_lag_samples": [
            {"t": round(s["t"] - run.t0, 1), **{t: s[t] for t in lag_topics}} for s in run.lags
        ],
        "sampler_errors": run.sampler_errors[:20],
    }


def decoded_states(run: Run) -> dict[str, Any]:
    """Per worker: the most states and estimated MB its cache held, and how many it dropped."""
    out: dict[str, Any] = {"budget_mb": run.settings.get("worker_live_states_mb")}
    for name in sorted({k for s in run.worker_memory for k in s if k != "t"}):
        points = [(s["t"], s[name]["live_states"]) for s in run.worker_memory if name in s]
        full = next((t - run.t0 for t, held in points if held["dropped"]), None)
        out[name] = {
            "states_max": max(held["states"] for _, held in points),
            "mb_max": round(max(held["bytes"] for _, held in points) / 2**20, 1),
            "dropped": points[-1][1]["dropped"],
            "first_drop_after_t0_s": _round(full, 1),
        }
    return out


def memory_by_part(run: Run) -> dict[str, list[dict[str, Any]]]:
    """Per worker and minute since t0 (the last sample in it; -1 before t0): its RSS and what
    of it the decoded states (by the worker's estimate), RocksDB and the embedded ClickHouse
    account for; "rest" is the RSS less those (the Python heap besides the states, Faust's and
    aiokafka's buffers, the allocators' free lists)."""
    mb = 2**20
    out: dict[str, list[dict[str, Any]]] = {}
    for name in sorted({k for s in run.worker_memory for k in s if k != "t"}):
        rows: list[dict[str, Any]] = []
        by_minute: dict[int, dict[str, Any]] = {}
        for sample in run.worker_memory:
            if name in sample:  # minute -1: the last sample before the deliveries started
                by_minute[max(int((sample["t"] - run.t0) // 60), -1)] = sample
        for minute, sample in sorted(by_minute.items()):
            rss = [r[name]["rss_mb"] for r in run.resources if r["t"] <= sample["t"]]
            if not rss or rss[-1] is None:
                continue
            part = sample[name]
            rocks = part["rocksdb"] or {}
            states = part["live_states"]["bytes"] / mb
            rocksdb = sum(rocks.values()) / mb
            clickhouse = (part["clickhouse"] or 0) / mb
            rows.append(
                {
                    "minute": minute,
                    "rss_mb": round(rss[-1], 1),
                    "states_mb": round(states, 1),
                    "rocksdb_mb": round(rocksdb, 1),
                    **{f"rocksdb_{k}_mb": round(v / mb, 1) for k, v in rocks.items()},
                    "clickhouse_mb": round(clickhouse, 1),
                    "rest_mb": round(rss[-1] - states - rocksdb - clickhouse, 1),
                }
            )
        out[name] = rows
    return out


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def print_summary(s: dict[str, Any]) -> None:
    def p(d: dict[str, Any], unit: str = "s") -> str:
        if not d.get("n"):
            return "no data"

        def v(key: str) -> str:
            return "not in time" if d[key] is None else f"{d[key]:.3f}"

        censored = f", {d['censored']:,} not in ClickHouse in time" if d.get("censored") else ""
        return (
            f"p50 {v('p50')} {unit}, p95 {v('p95')}, p99 {v('p99')}, max {v('max')} "
            f"(n={d['n']:,}{censored})"
        )

    m, c, snd, rows = s["machine"], s["config"], s["sender"], s["rows"]
    print()
    print(
        f"machine: {m['cpus']} cpus {m['arch']}, Python {m['python']}; load average before "
        f"{m['load_before']}, during (1 min) mean {m['load1_during_mean']} max "
        f"{m['load1_during_max']}, after {m['load_after']}"
    )
    print(
        f"schedule: {c['rate']:,.0f}/s for {c['seconds']:,.0f} s, {c['contacts']:,} contacts, "
        f"{c['partitions']} partitions, {c.get('workers', 1)} worker(s); "
        f"sink flush {c['sink_flush_s']} s / {c['sink_batch_rows']:,} rows"
    )
    print(
        f"sender: {snd['answered_2xx']:,} of {snd['scheduled']:,} answered 2xx "
        f"({snd['non_2xx']} other answers, {snd['errors']} errors); achieved "
        f"{snd['achieved_rate']:,.1f}/s = {snd['ratio_achieved_to_target']:.4f}x target; "
        f"slowest 10 s window {snd['min_10s_rate']}/s; max in flight {snd['max_in_flight']}"
    )
    print(f"  behind schedule at request start: {p(snd['behind_schedule_s'])}")
    print(f"  2xx latency from the schedule:    {p(snd['latency_from_schedule_s'])}")
    fo, fs = s["freshness_observed_s"], s["freshness_sunk_at_s"]
    print(
        f"freshness observed (2xx -> first poll of the worker's /query returning the row; "
        f"1 in {c['sample_every']}, polls every {c['poll_s']} s): {p(fo)}"
    )
    print(
        f"  never seen by the poll: {fo['never_seen_by_poll']}; "
        f"poll round trip {p(fo['poll_round_trip_s'])}"
    )
    print(f"  first seen - sunk_at: {p(fo['seen_after_sunk_at_s'])}")
    print(f"freshness by sunk_at (2xx -> insert time, every row): {p(fs)}")
    worst = max(
        fs["per_minute"],
        key=lambda r: float("inf") if r["p95"] is None else r["p95"],
        default=None,
    )
    if worst:
        print(f"  worst minute by p95: minute {worst['minute']}: {p(worst)}")
    print(f"ingest received -> 2xx: {p(s['ingest_received_to_2xx_s'])}")
    sink = s["sink_rows_per_s"]
    print(
        f"rows into ClickHouse: {sink['mean_first_to_last_row']}/s from first to last row "
        f"(best 10 s: {sink['max_10s']}/s; last row {sink['last_row_after_t0_s']} s after t0)"
    )
    print("  per minute since t0: " + ", ".join(f"{r:,.0f}" for r in sink["per_minute"]))
    target_ok = fo.get("p95") is not None and fo["p95"] <= s["target_p95_s"]
    print(f"target p95 <= {s['target_p95_s']} s (observed): {'met' if target_ok else 'NOT met'}")
    print(
        f"rows: {rows['distinct_in_clickhouse']:,} distinct in ClickHouse, "
        f"{rows['duplicate_copies']} duplicate copies, {rows['answered_2xx_missing']} answered "
        f"2xx but not in ClickHouse when the drain wait ended; all in "
        f"{rows['drain_s']} s after the last send"
    )
    print("RSS MB (first / last / max, slope MB/min all / second half; CPU % of one core):")
    for name, r in s["rss"].items():
        if r:
            print(
                f"  {name:7} {r['rss_first_mb']:8.1f} {r['rss_last_mb']:8.1f} "
                f"{r['rss_max_mb']:8.1f}   {r['rss_slope_mb_per_min']} / "
                f"{r['rss_slope_second_half_mb_per_min']}   cpu {r['cpu_percent_of_one_core']}%"
            )
    print("CPU % of one core per minute (machine, others = not this pipeline; busiest threads):")
    for row in s["cpu_per_minute"]:
        parts = [f"  minute {row['minute']}: machine {row['machine']}, others {row['others']}"]
        for name in ("worker", "kafka"):
            if name in row:
                threads = ", ".join(f"{g} {v}" for g, v in row[name]["threads"].items())
                parts.append(f"{name} {row[name]['cpu']} ({threads})")
        print("; ".join(parts))
    print("consumer lag (records; max / last while sending, after drain):")
    for topic, lag in s["consumer_lag"].items():
        print(
            f"  {topic}: {lag['max_during_send']} / {lag['last_during_send']}, {lag['after_drain']}"
        )
    states = s["decoded_states"]
    print(f"decoded-state cache (budget {states['budget_mb']} MB; held max, dropped):")
    for name, d in states.items():
        if name != "budget_mb":
            first = d["first_drop_after_t0_s"]
            when = f" (the first {first} s after t0)" if first is not None else ""
            print(
                f"  {name}: {d['states_max']:,} states, {d['mb_max']} MB estimated; "
                f"{d['dropped']:,} dropped{when}"
            )
    print(
        "worker memory by part, MB at the end of each minute (decoded states by the worker's "
        "estimate; RocksDB memtables + block cache + table readers; ClickHouse tracked; rest):"
    )
    for name, rows in s["memory_by_part"].items():
        for r in rows:
            when = "before" if r["minute"] < 0 else f"minute {r['minute']}"
            print(
                f"  {name} {when}: RSS {r['rss_mb']:.0f} = states "
                f"{r['states_mb']:.0f} + RocksDB {r['rocksdb_mb']:.0f} "
                f"({r.get('rocksdb_memtables_mb', 0):.0f} + "
                f"{r.get('rocksdb_block_cache_mb', 0):.0f} + "
                f"{r.get('rocksdb_table_readers_mb', 0):.0f}) + ClickHouse "
                f"{r['clickhouse_mb']:.0f} + rest {r['rest_mb']:.0f}"
            )
    if s["sampler_errors"]:
        print(f"sampler errors ({len(s['sampler_errors'])}): {s['sampler_errors'][:3]}")


def extra_worker(settings: Settings, root: Path, n: int) -> Settings:
    """Worker n (1-based beyond the first): its own home, port and embedded ClickHouse, the
    same consumer group (the embedded engine is one process's; a cluster shares a server)."""
    from rapport.process import free_port

    return settings.model_copy(
        update={
            "home": root / f"worker{n + 1}",
            "worker_port": free_port(),
            "clickhouse_url": f"chdb://{root / f'clickhouse{n + 1}'}",
        }
    )


def start_worker(settings: Settings) -> None:
    from rapport.process import spawn
    from rapport.stack import settings_env

    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    spawn(
        [sys.executable, "-m", "rapport", "worker"],
        log_file=settings.log_dir / "worker.log",
        pid_file=settings.run_dir / "worker.pid",
        env=settings_env(settings),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        url = f"{settings.worker_url}/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.5)
    raise SystemExit(f"a worker did not start; see {settings.log_dir / 'worker.log'}")


def measure(args: argparse.Namespace) -> Run:
    from bench.common import private_broker
    from rapport.process import read_pid, stop_pid, stop_pid_file
    from rapport.stack import Stack
    from streams import versions

    run = Run(args=args, load_before=loadavg())
    count = int(args.rate * args.seconds)
    with private_broker(partitions=args.partitions) as (settings, root):
        if args.live_states_mb is not None:
            settings = settings.model_copy(update={"worker_live_states_mb": args.live_states_mb})
        settings.workspaces.write_text(
            "".join(
                f'[workspaces.{ws}]\naccounts = [{{ platform = "x", user_id = "{OWNED}" }}]\n'
                f'[workspaces.{ws}.secrets]\nx_consumer_secret = "{SECRET}"\n'
                for ws in (WORKSPACE, WARM_WORKSPACE)
            )
        )
        run.settings = settings.model_dump(mode="json")
        stack = Stack(settings)
        sender: subprocess.Popen[bytes] | None = None
        samplers: list[Sampler] = []
        extra = [extra_worker(settings, root, n) for n in range(1, args.workers)]
        worker_urls = [settings.worker_url] + [w.worker_url for w in extra]
        try:
            print(
                f"starting {args.workers} worker(s) and the ingest on "
                f"{settings.kafka_bootstrap} ...",
                file=sys.stderr,
            )
            stack.start_services()
            for other in extra:
                start_worker(other)
            run.warm_up_s = warm_up(settings.ingest_url, worker_urls, args.contacts)
            print(f"warm-up through the pipeline: {run.warm_up_s:.1f} s", file=sys.stderr)
            out = root / "sender.npz"
            params = {
                "url": f"{settings.ingest_url}/webhooks/{WORKSPACE}/x",
                "rate": args.rate,
                "count": count,
                "contacts": args.contacts,
                "connections": args.connections,
            }
            with (root / "sender.log").open("wb") as log:
                here = str(Path(__file__).resolve())
                sender = subprocess.Popen(
                    [sys.executable, here, "--sender", str(out), json.dumps(params)],
                    stdout=subprocess.PIPE,
                    stderr=log,
                )
            assert sender.stdout is not None
            line = sender.stdout.readline().decode()
            if not line.startswith("t0 "):
                raise SystemExit(f"the sender did not start; see {root / 'sender.log'}")
            run.t0 = float(line.split()[1])
            pids = {
                name: read_pid(settings.run_dir / f"{name}.pid")
                for name in ("worker", "ingest", "kafka")
            }
            for n, other in enumerate(extra, start=1):
                pids[f"worker{n + 1}"] = read_pid(other.run_dir / "worker.pid")
            resources = ResourceSampler(
                args.sample_s, {n: p for n, p in {**pids, "sender": sender.pid}.items() if p}
            )
            group = versions.worker_id_for(settings.worker_id, versions.active_version(settings))
            lags = LagSampler(
                args.sample_s, settings.kafka_bootstrap, group,
                [settings.topic_raw, settings.topic_events],
            )  # fmt: skip
            poller = VisibilityPoller(
                args.poll_s, worker_urls, run.t0, args.rate, count, args.sample_every
            )
            memory = WorkerMemorySampler(args.sample_s, worker_urls)
            samplers = [resources, lags, poller, memory]
            for sampler in samplers:
                sampler.start()
            print(
                f"sending {count:,} deliveries at {args.rate:,.0f}/s for {args.seconds:,.0f} s ...",
                file=sys.stderr,
            )
            while sender.poll() is None:
                for name in ("worker", "ingest"):
                    if read_pid(settings.run_dir / f"{name}.pid") is None:
                        raise SystemExit(f"{name} died; see {settings.log_dir / name}.log")
                for other in extra:
                    if read_pid(other.run_dir / "worker.pid") is None:
                        raise SystemExit(f"a worker died; see {other.log_dir / 'worker.log'}")
                time.sleep(1)
            run.sent_done_at = time.time()
            if sender.returncode != 0:
                tail = (root / "sender.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"the sender failed (exit {sender.returncode}):\n{tail}")
            with np.load(out) as saved:
                run.sent = {k: saved[k] for k in saved.files}
            status = run.sent["status"]
            ok = int(((status >= 200) & (status < 300)).sum())
            print(f"sent; waiting for {ok:,} rows in ClickHouse ...", file=sys.stderr)
            run.drain_s = wait_rows(worker_urls, WORKSPACE, ok, timeout_s=args.drain_s)
            for sampler in samplers:
                sampler.stop()
                run.sampler_errors += sampler.errors
            lags.close()
            run.resources, run.lags = resources.samples, lags.samples
            run.worker_memory = memory.samples
            run.first_seen, run.poll_round_trips = poller.first_seen, poller.round_trips
            run.rows = sunk_times(worker_urls)
        finally:
            for sampler in samplers:
                sampler.halt.set()
            if sender is not None and sender.poll() is None:
                stop_pid(sender.pid)
            for other in extra:
                stop_pid_file(other.run_dir / "worker.pid")
            stack.stop_services()
    run.load_after = loadavg()
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="deliveries per second")
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the schedule")
    parser.add_argument("--contacts", type=int, default=5000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (one group)")
    parser.add_argument("--connections", type=int, default=256, help="sender's connection limit")
    parser.add_argument("--sample-every", type=int, default=20, help="poll for 1 in N deliveries")
    parser.add_argument("--poll-s", type=float, default=0.25, help="visibility poll interval")
    parser.add_argument("--sample-s", type=float, default=10.0, help="RSS and lag interval")
    parser.add_argument("--drain-s", type=float, default=300.0, help="wait for the last rows")
    parser.add_argument(
        "--live-states-mb",
        type=int,
        help="the worker's decoded-state budget (RAPPORT_WORKER_LIVE_STATES_MB; default: its own)",
    )
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--sender", nargs=2, metavar=("OUT", "PARAMS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sender:
        run_sender(json.loads(args.sender[1]), Path(args.sender[0]))
        return 0

    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")  # runs the finally: stops what we started

    signal.signal(signal.SIGTERM, terminated)
    report = summary(measure(args))
    print_summary(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"summary written to {args.json}")
    missing = report["rows"]["answered_2xx_missing"]
    if missing:
        print(
            f"ERROR: {missing} deliveries answered 2xx are not in ClickHouse after the drain wait "
            f"(--drain-s {args.drain_s:.0f})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
