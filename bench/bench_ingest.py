"""Ingest throughput: the real ingest (signature check + acks=all produce) vs a bare aiohttp server.

One run starts, all on loopback and stopped by pid at the end:

* a real Apache Kafka broker (`LocalKafka` on free ports in a temporary directory);
* the real ingest, `python -m rapport ingest`, configured through the settings environment;
* a bare aiohttp server (this file with `--bare PORT`) that reads the body and answers 200 to
  the same route, with the same JSON answer;

then drives both with the same load generator: `wrk` with a Lua script that POSTs one signed X
Account Activity body (signature precomputed), or, when wrk is missing, a Python aiohttp load
generator in its own process. It reports sustained req/s, p50/p99 latency, errors and the ratio
ingest/bare. Every request the ingest answers 200 is in Kafka with acks=all; the run checks that
the topic holds at least as many records as 200s were counted.

Usage: .venv/bin/python bench/bench_ingest.py [--duration 15] [--connections 64] [--profile FILE]
(install wrk with `apt-get install -y wrk`; `--profile` runs the ingest under pyinstrument).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROUTE = "/webhooks/bench/x"
SECRET = "bench-consumer-secret"
ACCEPTED = b'{"status": "accepted"}'


@dataclass
class LoadResult:
    tool: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors

    def row(self, name: str) -> str:
        return (
            f"| {name} | {self.rps:,.0f} | {self.p50_ms:.2f} | {self.p99_ms:.2f} | "
            f"{self.requests:,} | {self.errors} |"
        )


# --- the bare server ---------------------------------------------------------------------------


def serve_bare(port: int) -> None:
    """A server that does what the ingest does minus the work: read the body, answer 200."""
    from aiohttp import web

    from streams.runtime import freeze_startup_heap, new_event_loop

    async def deliver(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ACCEPTED, content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/webhooks/{workspace}/{platform}", deliver)
    app.router.add_get("/healthz", healthz)
    loop = new_event_loop()  # the ingest's event loop (uvloop when installed): a fair comparison
    asyncio.set_event_loop(loop)
    freeze_startup_heap()  # and the ingest's garbage-collector setting
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


# --- load generators ---------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-twitter-webhooks-signature"] = {signature}
"""


def lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


def parse_wrk(output: str) -> LoadResult:
    def number(pattern: str) -> float:
        match = re.search(pattern, output)
        if match is None:
            raise RuntimeError(f"unexpected wrk output:\n{output}")
        return float(match.group(1))

    def latency_ms(pct: str) -> float:
        match = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no {pct}% latency in wrk output:\n{output}")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
        return float(match.group(1)) * scale

    requests = int(number(r"(\d+) requests in"))
    seconds_match = re.search(r"requests in ([\d.]+)(ms|s|m)", output)
    assert seconds_match is not None
    seconds = (
        float(seconds_match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[seconds_match.group(2)]
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return LoadResult(
        "wrk",
        requests,
        seconds,
        number(r"Requests/sec:\s+([\d.]+)"),
        latency_ms("50"),
        latency_ms("99"),
        errors,
    )


def run_wrk(url: str, body: bytes, signature: str, duration: int, connections: int) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT.format(body=lua_string(body.decode()), signature=lua_string(signature)))
        script = fh.name
    try:
        cmd = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            script,
            url,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return parse_wrk(done.stdout)
    finally:
        os.unlink(script)


async def _python_load(
    url: str, body: bytes, signature: str, duration: float, connections: int
) -> LoadResult:
    import aiohttp

    headers = {"Content-Type": "application/json", "x-twitter-webhooks-signature": signature}
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    seconds = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[max(0, int(p * len(latencies)) - 1)] * 1000 if latencies else 0.0

    return LoadResult(
        "python-aiohttp", len(latencies), seconds, len(latencies) / seconds, pct(0.5), pct(0.99),
        errors,
    )  # fmt: skip


def run_python_load(
    url: str, body: bytes, signature: str, duration: int, connections: int
) -> LoadResult:
    """The fallback generator, in its own process so it does not share the caller's core."""
    code = (
        "import asyncio, json, sys; sys.path.insert(0, sys.argv[1]);"
        "from bench.bench_ingest import _python_load;"
        "r = asyncio.run(_python_load(sys.argv[2], sys.argv[3].encode(), sys.argv[4],"
        " float(sys.argv[5]), int(sys.argv[6])));"
        "print(json.dumps(r.__dict__))"
    )
    numbers = [str(duration), str(connections)]
    done = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), url, body.decode(), signature, *numbers],
        capture_output=True,
        text=True,
        check=True,
    )
    return LoadResult(**json.loads(done.stdout.strip().splitlines()[-1]))


# --- orchestration -----------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(runs: list[LoadResult]) -> LoadResult:
    """The round with the median req/s (its latencies come with it)."""
    ordered = sorted(runs, key=lambda r: r.rps)
    return ordered[len(ordered) // 2]


def wait_http(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 in {timeout_s:.0f} s")


def raw_count(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        parts = [TopicPartition(topic, p) for p in partitions]
        return int(sum(consumer.end_offsets(parts).values()))
    finally:
        consumer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds of load per target")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of load before measuring")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians shown")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--profile", type=Path, help="run the ingest under pyinstrument, to FILE")
    parser.add_argument("--python-load", action="store_true", help="use the Python generator")
    parser.add_argument("--bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        serve_bare(args.bare)
        return 0

    from deploy.kafka.local import LocalKafka
    from rapport.demo import Message, x_dm_delivery
    from rapport.process import free_port, read_pid, spawn, stop_pid_file
    from rapport.settings import Settings
    from rapport.stack import settings_env
    from streams.topics import ensure_topics
    from streams.webhooks.x import signature

    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")  # runs the finally: stops what we started

    signal.signal(signal.SIGTERM, terminated)
    use_wrk = shutil.which("wrk") is not None and not args.python_load
    if not use_wrk and not args.python_load:
        print(
            "wrk not found: install it with `apt-get install -y wrk` (Debian/Ubuntu); "
            "using the Python aiohttp load generator instead",
            file=sys.stderr,
        )
    load = run_wrk if use_wrk else run_python_load
    body = x_dm_delivery(Message(1, "323", "777", 1082040961), "323")
    sig = signature(SECRET, body)

    with tempfile.TemporaryDirectory(prefix="rapport-bench-") as tmp:
        home = Path(tmp)
        (home / "workspaces.toml").write_text(
            f'[workspaces.bench]\naccounts = [{{ platform = "x", user_id = "323" }}]\n'
            f'[workspaces.bench.secrets]\nx_consumer_secret = "{SECRET}"\n'
        )
        settings = Settings(
            home=home,
            workspaces=home / "workspaces.toml",
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            kafka_controller_port=free_port(),
            partitions=args.partitions,
            ingest_port=free_port(),
            clickhouse_url=f"chdb://{home / 'clickhouse'}",
        )
        kafka = LocalKafka(settings)
        bare_port = free_port()
        run = settings.run_dir
        print(f"starting Kafka {kafka.version} on {settings.kafka_bootstrap} ...", file=sys.stderr)
        kafka.up()
        try:
            ensure_topics(settings)
            ingest_cmd = [sys.executable, "-m", "rapport", "ingest"]
            if args.profile:
                ingest_cmd = [
                    sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o",
                    str(args.profile.resolve()), "-m", "rapport", "ingest",
                ]  # fmt: skip
            ingest_proc = spawn(
                ingest_cmd,
                log_file=settings.log_dir / "ingest.log",
                pid_file=run / "ingest.pid",
                env=settings_env(settings),
            )
            bare_proc = spawn(
                [sys.executable, str(Path(__file__).resolve()), "--bare", str(bare_port)],
                log_file=settings.log_dir / "bare.log",
                pid_file=run / "bare.pid",
            )
            wait_http(f"{settings.ingest_url}/readyz")
            wait_http(f"http://127.0.0.1:{bare_port}/healthz")
            targets = {
                "bare aiohttp": f"http://127.0.0.1:{bare_port}{ROUTE}",
                "ingest": f"{settings.ingest_url}{ROUTE}",
            }
            for url in targets.values():  # JIT-warm the broker and both servers
                load(url, body, sig, args.warmup, args.connections)
            rounds: dict[str, list[LoadResult]] = {name: [] for name in targets}
            # CPU time per request of the server (and of the broker), per round: less noisy than
            # req/s when other work shares the machine, and it says where the cores went.
            pids = {"bare aiohttp": bare_proc.pid, "ingest": ingest_proc.pid}
            broker_pid = read_pid(kafka.pid_file)
            cpu_us: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
            loads = [os.getloadavg()[0]]
            for r in range(args.rounds):  # alternate, so drift on the machine hits both
                for name, url in targets.items():
                    print(f"round {r + 1}: {name} for {args.duration} s ...", file=sys.stderr)
                    before = cpu_seconds(pids[name]), cpu_seconds(broker_pid)
                    result = load(url, body, sig, args.duration, args.connections)
                    after = cpu_seconds(pids[name]), cpu_seconds(broker_pid)
                    rounds[name].append(result)
                    per_request = 1e6 / max(result.requests, 1)
                    cpu_us[name].append(
                        ((after[0] - before[0]) * per_request, (after[1] - before[1]) * per_request)
                    )
                    loads.append(os.getloadavg()[0])
            results = {name: median(runs) for name, runs in rounds.items()}
            in_kafka = raw_count(settings.kafka_bootstrap, settings.topic_raw)
        finally:
            stop_pid_file(run / "ingest.pid")
            stop_pid_file(run / "bare.pid")
            kafka.down()

    ingest, bare = results["ingest"], results["bare aiohttp"]
    ok_ingest = sum(r.requests - r.errors for r in rounds["ingest"])
    print()
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, Kafka {kafka.version}; load: {ingest.tool}, "
        f"{args.connections} connections; {args.rounds} alternating rounds of {args.duration} s "
        f"per target after {args.warmup} s warm-up; the median round of each is shown"
    )
    for name, runs in rounds.items():
        print(f"  {name}: req/s per round " + ", ".join(f"{r.rps:,.0f}" for r in runs))
    ratios = [i.rps / b.rps for i, b in zip(rounds["ingest"], rounds["bare aiohttp"], strict=True)]
    print(
        "  ratio ingest/bare per round: "
        + ", ".join(f"{x:.2f}x" for x in ratios)
        + f" (median {sorted(ratios)[len(ratios) // 2]:.2f}x)"
    )
    for name, figures in cpu_us.items():
        print(
            f"  {name}: CPU us per request (server / broker) per round "
            + ", ".join(f"{own:.0f} / {broker:.0f}" for own, broker in figures)
        )
    print(
        "  load average (1 min) at start and after each round: "
        + ", ".join(f"{x:.1f}" for x in loads)
    )
    print("| target | req/s | p50 ms | p99 ms | requests | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    print(bare.row("bare aiohttp (200, no work)"))
    print(ingest.row("ingest (verify + produce acks=all)"))
    print(f"ratio ingest/bare (median rounds): {ingest.rps / bare.rps:.2f}x")
    print(f"records in {settings.topic_raw}: {in_kafka:,} (>= {ok_ingest:,} answered 200)")
    if in_kafka < ok_ingest:
        print("ERROR: fewer records in Kafka than 200 answers", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
