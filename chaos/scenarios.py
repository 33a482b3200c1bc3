"""The six chaos scenarios. Each starts its own deployment, breaks something, and verifies.

Every scenario sends a seeded plan (chaos.generator) through the real ingest, injects its failure
while the stream is flowing, waits for the sender (which retries like a platform), then lets the
verifier compare ClickHouse with a clean replay of the event log (chaos.verify). Its processes
are stopped by pid when it ends, whatever happened.
"""

from __future__ import annotations

import json
import random
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chaos.cluster import Cluster, Deployment
from chaos.generator import Plan, generate, redeliver_and_shuffle
from chaos.sender import Sender, SendStats
from chaos.verify import ChdbDirReader, Verdict, check_routing, replay_log, verify
from projections.store import SqlReader


@dataclass
class Context:
    cluster: Cluster
    events: int | None  # --events: overrides every scenario's default size
    seed: int
    say: Callable[[str], None]

    def size(self, default: int) -> int:
        return self.events if self.events is not None else default


def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _readers(dep: Deployment) -> Callable[[], Mapping[str, SqlReader]]:
    """Every database of the deployment: running workers through /query, stopped ones on disk."""
    stopped: dict[int, ChdbDirReader] = {}

    def readers() -> Mapping[str, SqlReader]:
        running = set(dep.running_workers())
        out: dict[str, SqlReader] = {}
        for index in sorted(dep.workers):
            if index in running:
                stopped.pop(index, None)
                out[f"worker{index}"] = dep.reader(index)
            else:
                found = stopped.setdefault(index, ChdbDirReader(dep.clickhouse_dsn(index)))
                out[f"worker{index}"] = found
        return out

    return readers


def _check_sender(verdict: Verdict, stats: SendStats) -> None:
    verdict.notes.append(
        f"sender: {stats.deliveries} deliveries in {stats.seconds:.1f} s, {stats.attempts} "
        f"attempts, answers {dict(stats.statuses)}, connection errors {dict(stats.errors)}"
    )
    if stats.refused:
        verdict.problems.append(f"{len(stats.refused)} deliveries refused, e.g. {stats.refused[0]}")
    if stats.gave_up:
        verdict.problems.append(f"{len(stats.gave_up)} deliveries never accepted")


def _finish(ctx: Context, verdict: Verdict, dep: Deployment, plan: Plan, sender: Sender) -> None:
    """Wait for the sender, then verify against a replay of the log."""
    _check_sender(verdict, sender.join())
    verify(verdict, dep.settings, plan, _readers(dep), timeout_s=240.0, say=ctx.say)
    verdict.problems += dep.log_findings()
    verdict.problems += dep.worker_exited()


def _run(
    ctx: Context, name: str, body: Callable[[Deployment, Verdict], None], **settings: object
) -> Verdict:
    ctx.cluster.broker_up()  # idempotent; a scenario before may have left it down
    dep = ctx.cluster.deployment(name, **settings)
    verdict = Verdict(name, sent=0)
    try:
        body(dep, verdict)
    finally:
        for line in dep.close():
            ctx.say(f"stopped {line}")
    return verdict


# --- 1. worker kill -9 ------------------------------------------------------------------------


def worker_kill(ctx: Context) -> Verdict:
    """kill -9 the worker several times while a stream of >= 100,000 events flows; restart it."""
    n = ctx.size(100_000)
    kills = 3
    rng = random.Random(ctx.seed)

    def body(dep: Deployment, verdict: Verdict) -> None:
        plan = generate(n, ctx.seed, tag="k")
        verdict.sent, verdict.deliveries = n, len(plan.deliveries)
        ctx.say(
            f"worker0 up in {dep.start_worker(0):.1f} s; ingest up in {dep.start_ingest():.1f} s"
        )
        rate = min(2500.0, n / 150)  # a stream of about 150 s: the kills land inside it
        sender = Sender(dep.settings.ingest_url, plan.deliveries, rate=rate).start()
        try:
            for k in range(kills):
                sender.wait_fraction((k + 1) / (kills + 1))
                dep.wait_processing(0, rows=max(200, n // 20))
                time.sleep(rng.uniform(0.0, 1.5))
                pid = dep.kill_worker(0)
                ctx.say(f"kill -9 worker0 (pid {pid}) #{k + 1} at {sender.fraction():.0%} sent")
                up = dep.start_worker(0)
                ctx.say(f"worker0 restarted in {up:.1f} s")
            _finish(ctx, verdict, dep, plan, sender)
        finally:
            sender.stop()
        verdict.notes.append(f"{dep.kills} kills")

    return _run(ctx, "worker-kill", body)


# --- 2. broker restart ------------------------------------------------------------------------


def broker_restart(ctx: Context) -> Verdict:
    """kill -9 the broker mid-stream for ~10 s: the ingest answers 503, the sender retries."""
    n = ctx.size(30_000)
    down_s = 10.0

    def body(dep: Deployment, verdict: Verdict) -> None:
        plan = generate(n, ctx.seed, tag="b")
        verdict.sent, verdict.deliveries = n, len(plan.deliveries)
        ctx.say(
            f"worker0 up in {dep.start_worker(0):.1f} s; ingest up in {dep.start_ingest():.1f} s"
        )
        sender = Sender(dep.settings.ingest_url, plan.deliveries, rate=1500).start()
        try:
            sender.wait_fraction(0.3)
            before = sender.stats.statuses[503]
            pid = ctx.cluster.broker_kill()
            killed = time.monotonic()
            ctx.say(f"kill -9 broker (pid {pid}) at {sender.fraction():.0%} sent")
            ready = []
            while time.monotonic() - killed < down_s:
                ready.append(dep.ingest_ready())
                time.sleep(0.5)
            answered_503 = sender.stats.statuses[503] - before
            ctx.say(
                f"broker down {time.monotonic() - killed:.1f} s: ingest answered 503 "
                f"{answered_503} times, /readyz {sorted(set(ready))}"
            )
            up = ctx.cluster.broker_up()
            ctx.say(f"broker back in {up:.1f} s")
            if answered_503 == 0:
                verdict.problems.append("the ingest never answered 503 while the broker was down")
            if 503 not in ready:
                verdict.problems.append("/readyz never said 503 while the broker was down")
            if not dep.running_workers():
                verdict.problems.append("the worker exited when the broker went away")
                ctx.say(f"worker0 restarted in {dep.start_worker(0):.1f} s")
            _finish(ctx, verdict, dep, plan, sender)
        finally:
            sender.stop()

    return _run(ctx, "broker-restart", body)


# --- 3. ClickHouse refuses writes ------------------------------------------------------------

BLOCKED = ("interactions", "relationships")


def clickhouse_fail(ctx: Context) -> Verdict:
    """Inserts into interactions and relationships fail for real (a CHECK 0 constraint) for a
    while mid-stream; the sink retries, Kafka offsets wait, nothing is lost or doubled.

    A batch inserts `interactions` first: it fails there while both are blocked, and once
    `interactions` is let go the same batch lands there and fails on `relationships`."""
    n = ctx.size(30_000)
    hold_s = 10.0

    def body(dep: Deployment, verdict: Verdict) -> None:
        plan = generate(n, ctx.seed, tag="c")
        verdict.sent, verdict.deliveries = n, len(plan.deliveries)
        ctx.say(
            f"worker0 up in {dep.start_worker(0):.1f} s; ingest up in {dep.start_ingest():.1f} s"
        )
        url = dep.worker_settings(0).worker_url

        def failing_after(expected: list[str]) -> None:
            deadline = time.monotonic() + hold_s
            time.sleep(hold_s / 2)
            status = _get_json(f"{url}/admin/sink")
            while sorted(status["failing"]) != expected and time.monotonic() < deadline:
                time.sleep(0.2)
                status = _get_json(f"{url}/admin/sink")
            failing = sorted(status["failing"])
            ctx.say(f"{status['failures']} failed inserts so far, failing {failing}")
            if failing != expected:
                verdict.problems.append(f"the sink failed on {failing}, expected {expected}")

        def constraint(table: str, action: str) -> None:
            sql = f"ALTER TABLE rapport.{table} {action}"
            _post_json(f"{url}/admin/sql", {"sql": sql})

        sender = Sender(dep.settings.ingest_url, plan.deliveries, rate=1500).start()
        try:
            sender.wait_fraction(0.2)
            dep.wait_processing(0, rows=max(100, n // 20))
            for table in BLOCKED:
                constraint(table, "ADD CONSTRAINT block CHECK 0")
            ctx.say(f"ClickHouse refuses {', '.join(BLOCKED)} at {sender.fraction():.0%} sent")
            failing_after(["interactions"])
            constraint("interactions", "DROP CONSTRAINT block")
            ctx.say("interactions let go")
            failing_after(["relationships"])
            constraint("relationships", "DROP CONSTRAINT block")
            ctx.say("relationships let go")
            _finish(ctx, verdict, dep, plan, sender)
            left = _get_json(f"{url}/admin/sink")["failing"]
            if left:
                verdict.problems.append(f"the sink still fails after the constraints went: {left}")
        finally:
            sender.stop()

    return _run(ctx, "clickhouse-fail", body, worker_admin_sql=True)


# --- 4. redelivered and reordered webhooks -------------------------------------------------------


def redelivery(ctx: Context) -> Verdict:
    """Every delivery 1-3 times, shuffled within the lateness window: each event counts once."""
    n = ctx.size(30_000)

    def body(dep: Deployment, verdict: Verdict) -> None:
        plan = generate(n, ctx.seed, tag="r")
        deliveries = redeliver_and_shuffle(plan.deliveries, ctx.seed)
        verdict.sent, verdict.deliveries = n, len(deliveries)
        ctx.say(
            f"{len(plan.deliveries)} deliveries sent as {len(deliveries)} "
            f"({sum(d.events for d in deliveries)} events with copies)"
        )
        ctx.say(
            f"worker0 up in {dep.start_worker(0):.1f} s; ingest up in {dep.start_ingest():.1f} s"
        )
        sender = Sender(dep.settings.ingest_url, deliveries, concurrency=32).start()
        try:
            _finish(ctx, verdict, dep, plan, sender)
        finally:
            sender.stop()

    return _run(ctx, "redelivery", body)


# --- 5. poison bodies ------------------------------------------------------------------------


def poison(ctx: Context) -> Verdict:
    """Authentic but unreadable bodies among good ones: each one in the dead-letter topic."""
    n = ctx.size(20_000)
    bad = max(3, n // 100)

    def body(dep: Deployment, verdict: Verdict) -> None:
        plan = generate(n, ctx.seed, tag="p", poison=bad)
        verdict.sent, verdict.deliveries = n, len(plan.deliveries)
        ctx.say(f"{bad} poison bodies among {len(plan.deliveries)} deliveries")
        ctx.say(
            f"worker0 up in {dep.start_worker(0):.1f} s; ingest up in {dep.start_ingest():.1f} s"
        )
        sender = Sender(dep.settings.ingest_url, plan.deliveries, concurrency=16).start()
        try:
            _finish(ctx, verdict, dep, plan, sender)
        finally:
            sender.stop()

    return _run(ctx, "poison", body)


# --- 6. scale-out ----------------------------------------------------------------------------


def scale_out(ctx: Context) -> Verdict:
    """1 -> 2 -> 3 workers join mid-stream, then one leaves: rebalances on 6 partitions with a
    standby replica per table partition; the union of their databases equals the replay, and
    every worker answers for every relationship (routing to the owner)."""
    n = ctx.size(60_000)

    def body(dep: Deployment, verdict: Verdict) -> None:
        plan = generate(n, ctx.seed, tag="s")
        verdict.sent, verdict.deliveries = n, len(plan.deliveries)
        ctx.say(
            f"worker0 up in {dep.start_worker(0):.1f} s; ingest up in {dep.start_ingest():.1f} s"
        )
        sender = Sender(dep.settings.ingest_url, plan.deliveries, rate=1200).start()
        try:
            sender.wait_fraction(0.2)
            ctx.say(f"worker1 joins at {sender.fraction():.0%}: up in {dep.start_worker(1):.1f} s")
            sender.wait_fraction(0.45)
            ctx.say(f"worker2 joins at {sender.fraction():.0%}: up in {dep.start_worker(2):.1f} s")
            sender.wait_fraction(0.7)
            dep.wait_processing(1, rows=1)
            pid = dep.stop_worker(1)
            ctx.say(f"worker1 (pid {pid}) left at {sender.fraction():.0%}")
            _finish(ctx, verdict, dep, plan, sender)
            empty = []
            for name, reader in _readers(dep)().items():
                rows = int(reader.query("SELECT count() FROM rapport.interactions").rows[0][0])
                ctx.say(f"{name}: {rows} interaction rows")
                if rows == 0:
                    empty.append(name)
            if empty:
                verdict.problems.append(f"{', '.join(empty)} did no work")
            urls = [dep.worker_settings(i).worker_url for i in dep.running_workers()]
            verdict.problems += check_routing(urls, replay_log(dep.settings).outcome)[:10]
        finally:
            sender.stop()

    return _run(ctx, "scale-out", body, partitions=6, worker_standby_replicas=1)


SCENARIOS: dict[str, Callable[[Context], Verdict]] = {
    "worker-kill": worker_kill,
    "broker-restart": broker_restart,
    "clickhouse-fail": clickhouse_fail,
    "redelivery": redelivery,
    "poison": poison,
    "scale-out": scale_out,
}
