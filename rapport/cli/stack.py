"""Service verbs: `up`, `down`, `status`, `ingest`, `worker`, `demo`."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from deploy.kafka.local import KafkaRuntimeError
from projections.readmodel import (
    interaction_count,
    relationship_interaction_total,
    relationships,
)
from projections.store import SqlReader, StoreUnavailable
from rapport.cli.common import console, fail, settings, workspaces
from rapport.cli.read import render
from rapport.settings import Settings
from rapport.stack import Stack, StackError, open_reader
from rapport.workspaces import WorkspaceRegistry

if TYPE_CHECKING:
    from rapport.demo import Message


def _status_table(stack: Stack) -> Table:
    table = Table("service", "running", "pid", "address", "healthy", "log")
    for s in stack.status():
        table.add_row(s.name, str(s.running), str(s.pid or ""), s.address, str(s.healthy), s.log)
    return table


def _up(s: Settings) -> Stack:
    stack = Stack(s)
    with console.status("starting Kafka, worker and ingest"):
        try:
            stack.up()
        except (KafkaRuntimeError, StackError, OSError) as exc:
            fail(f"{exc}\n(the services that did start keep running; `rapport down` stops them)")
    return stack


def _services(stack: Stack) -> None:
    try:
        stack.start_services()
    except (StackError, OSError) as exc:
        fail(str(exc))


def _replayed_exactly(
    s: Settings,
    registry: WorkspaceRegistry,
    late: int,
    batch: list[tuple[Message, bytes]],
    seconds: float,
) -> SqlReader:
    """The demo sends months of messages in seconds, so the live worker reads some of a
    relationship's events after its lateness window closed: it counts them, without their waits
    (docs/metrics.md, "Lateness"). A replay of the log places every event; readers swap to it."""
    from projections.policy import policy_for
    from rapport.cli.replay import activate_version, build_version

    config = registry.get("college")
    lateness = policy_for(config.policy if config else None).lateness_days
    days = (max(m.at_s for m, _ in batch) - min(m.at_s for m, _ in batch)) / 86_400
    console.print(
        f"{late:,} interactions reached the live worker after their relationship's "
        f"{lateness:g}-day lateness window had closed ({days:,.0f} days of messages were sent in "
        f"{seconds:.0f} s): counted, but without their replies and waits until a replay. "
        "Replaying the log, which places every event exactly:"
    )
    activate_version(s, build_version(s, registry).version)
    return open_reader(s)


def register(app: typer.Typer) -> None:
    @app.command()
    def up() -> None:
        """Start the local stack in the background: Kafka, worker (owns ClickHouse), ingest."""
        s = settings()
        workspaces(s)  # fail early on a missing or broken workspace file
        console.print(_status_table(_up(s)))

    @app.command()
    def down() -> None:
        """Stop ingest, worker and Kafka by their recorded pids."""
        for name, pid in Stack(settings()).down():
            console.print(f"{name}: " + (f"stopped pid {pid}" if pid else "was not running"))

    @app.command()
    def status(fmt: str = typer.Option("table", "--format", help="table or json")) -> None:
        """Each service with its pid, address and health."""
        stack = Stack(settings())
        if fmt == "json":
            typer.echo(json.dumps([asdict(x) for x in stack.status()], indent=2))
        else:
            console.print(_status_table(stack))

    @app.command()
    def ingest() -> None:
        """Run the webhook ingest service in the foreground."""
        from streams.ingest import run_ingest

        s = settings()
        run_ingest(s, workspaces(s))

    @app.command()
    def worker() -> None:
        """Run the Faust worker (normalize, project, sink) in the foreground."""
        import faust

        from streams.app import create_app
        from streams.runtime import collect_less_often, freeze_startup_heap, new_event_loop
        from streams.topics import ensure_topics
        from streams.versions import VersionError, with_active_version

        loop = new_event_loop()  # uvloop: Faust's and aiokafka's many futures cost less
        asyncio.set_event_loop(loop)
        s = with_active_version(settings())  # the projection version's app id (docs/replay.md)
        registry = workspaces(s)
        ensure_topics(s)
        faust_app = create_app(s, registry)
        if s.worker_admin_sql:
            from streams.admin import register_admin_sql

            register_admin_sql(faust_app, faust_app.rapport_sink)  # type: ignore[attr-defined]
        try:  # before the consumer starts: its first batch must go into its own tables
            before = faust_app.rapport_activation.run()  # type: ignore[attr-defined]
        except VersionError as exc:
            fail(str(exc))
        console.print(f"projection version {s.projection_version} is active (was {before})")
        freeze_startup_heap()
        collect_less_often()
        faust.Worker(faust_app, loop=loop, loglevel="INFO", quiet=True).execute_from_commandline()

    @app.command()
    def demo(
        workspaces_file: Path = typer.Option(
            None,
            "--workspaces",
            help="workspace file (default: the demo's own, demo/workspaces.toml)",
        ),
        limit: int = typer.Option(0, "--limit", help="send only the first N deliveries (0: all)"),
        keep: bool = typer.Option(False, "--keep", help="leave the stack running afterwards"),
        timeout_s: float = typer.Option(300.0, "--timeout", help="seconds to wait for ClickHouse"),
    ) -> None:
        """Start the stack, post real CollegeMsg DMs as signed X webhooks, print relationships
        (exact: after a replay of the log when some reached the worker late)."""
        from rapport.demo import DEMO_WORKSPACES, deliveries, post_signed, read_collegemsg

        s = settings().model_copy(update={"workspaces": workspaces_file or DEMO_WORKSPACES})
        registry = WorkspaceRegistry.load(s.workspaces)
        workspace = registry.get("college")
        if workspace is None:
            fail(f"{s.workspaces} has no [workspaces.college]")
        owned = {a.user_id for a in workspace.accounts if a.platform == "x"}
        batch = deliveries(read_collegemsg(), owned)
        if limit:
            batch = batch[:limit]
        expected = len({m.line for m, _ in batch})
        # Messages between a student and exactly one owned account feed a relationship.
        with_contact = len(
            {m.line for m, _ in batch if (m.sender in owned) != (m.recipient in owned)}
        )
        stack = Stack(s)
        was_running = stack.worker_running()
        try:
            if was_running:  # a running stack is used as it is, whoever runs its broker
                _services(stack)
            else:
                _up(s)
            url = f"{s.ingest_url}/webhooks/college/x"
            console.print(
                f"posting {len(batch)} signed X DM deliveries ({expected} messages) to {url}"
            )
            result = asyncio.run(
                post_signed(
                    url, [b for _, b in batch], workspace.secrets_for("x_consumer_secret")[0]
                )
            )
            rate = result.sent / result.seconds if result.seconds else 0.0
            console.print(f"answers: {result.statuses} in {result.seconds:.1f} s ({rate:,.0f}/s)")
            if set(result.statuses) != {200}:
                fail(f"some deliveries were not accepted: {result.statuses}")
            reader = open_reader(s)
            with Progress(
                TextColumn("waiting for ClickHouse"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("rows", total=expected)
                deadline = time.monotonic() + timeout_s
                have = 0
                while time.monotonic() < deadline:
                    have = interaction_count(reader, "college")
                    progress.update(task, completed=have)
                    if have >= expected and (
                        relationship_interaction_total(reader, "college") >= with_contact
                    ):
                        break
                    time.sleep(0.5)
            if have < expected:
                fail(
                    f"only {have} of {expected} interactions reached ClickHouse "
                    f"in {timeout_s:.0f} s"
                )
            every = relationships(reader, "college")
            late = sum(r["late_events"] for r in every)
            if late:
                reader = _replayed_exactly(s, registry, late, batch, result.seconds)
                every = relationships(reader, "college")
            rows = relationships(reader, "college", sort="interactions", limit=25)
            console.print(render(rows, "table", console.width))
            total = len(every)
            console.print(
                f"{expected} interactions from {len(batch)} deliveries; {total} relationships "
                "(top 25 by interactions shown)"
            )
        except StoreUnavailable as exc:
            fail(str(exc))
        finally:
            if not keep and not was_running:
                for name, pid in stack.down():
                    console.print(
                        f"{name}: " + (f"stopped pid {pid}" if pid else "was not running")
                    )
