"""Read verbs: `rapport relationships` and `rapport report`.

Both work while the stack runs on the embedded engine (they read through the worker, which owns
it) and when it is stopped (they open the engine themselves), or against a ClickHouse server.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from projections.readmodel import RELATIONSHIP_FIELDS, TIME_FIELDS, relationships
from projections.store import StoreUnavailable, WorkerQueryClient, is_embedded, redact
from rapport.cli.common import console, fail, settings
from rapport.stack import open_reader

# What fits a terminal; json and csv carry every field.
TABLE_FIELDS = (
    "contact_id", "stage", "last_contact_at", "interactions", "our_latency_p50_s",
    "their_latency_p50_s", "awaiting_reply_since", "balance", "reciprocity", "strength",
    "qualified_conversations", "touch_due_at",
)  # fmt: skip


def render(rows: list[dict[str, Any]], fmt: str) -> str | Table:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(RELATIONSHIP_FIELDS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: ";".join(map(str, v)) if isinstance(v, list) else v for k, v in row.items()}
            )
        return buffer.getvalue()
    shown = TABLE_FIELDS
    table = Table(show_lines=False, title=rows[0]["workspace"] if rows else None)
    for name in shown:
        table.add_column(name.replace("_at", "").replace("_", " "), no_wrap=True)
    for row in rows:
        table.add_row(*(_cell(n, row[n]) for n in shown))
    return table


def _cell(name: str, value: Any) -> str:
    """Table cells: times to the minute (UTC) so a row fits a terminal; json/csv keep ms."""
    if value is None:
        return ""
    if name in TIME_FIELDS:
        return str(value)[:16].replace("T", " ")
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def register(app: typer.Typer) -> None:
    register_report(app)

    @app.command("relationships")
    def relationships_cmd(
        workspace: str = typer.Option(..., "--workspace", "-w", help="workspace name"),
        fmt: str = typer.Option("table", "--format", "-f", help="table, json or csv"),
        sort: str = typer.Option(
            "last_contact_at", "--sort", help="field to sort by; prefix - or + for direction"
        ),
        limit: int = typer.Option(0, "--limit", help="at most this many rows (0: all)"),
    ) -> None:
        """The relationship read model, one object per relationship."""
        if fmt not in ("table", "json", "csv"):
            fail("--format must be table, json or csv", 2)
        try:
            reader = open_reader(settings())
            rows = relationships(reader, workspace, sort=sort, limit=limit or None)
        except (StoreUnavailable, ValueError) as exc:
            fail(str(exc))
        out = render(rows, fmt)
        if isinstance(out, str):
            typer.echo(out, nl=not out.endswith("\n"))
        else:
            console.print(out)


def _time(text: str | None, name: str) -> Any:
    from projections.dashboards import parse_time

    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        fail(f"{name} must be an ISO 8601 time (e.g. 2024-03-01 or 2024-03-01T12:00:00Z)", 2)


def register_report(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        workspace: str = typer.Option(..., "--workspace", "-w", help="workspace name"),
        html_file: Path = typer.Option(..., "--html", help="the HTML file to write"),
        start: str = typer.Option(None, "--from", help="ISO time (default: first interaction)"),
        end: str = typer.Option(None, "--to", help="ISO time (default: last interaction)"),
    ) -> None:
        """A self-contained HTML report: every Grafana dashboard panel's SQL, as charts."""
        from rich.progress import Progress

        from projections.dashboards import TimeRange, data_extent, load_dashboards
        from rapport.report import build_report, default_range, render_html

        s = settings()
        try:
            reader = open_reader(s)
            extent = data_extent(reader, workspace)
            if extent is None:
                console.print(f"[yellow]workspace {workspace!r} has no interactions yet[/]")
            span = default_range(extent)
            low, high = _time(start, "--from"), _time(end, "--to")
            span = TimeRange(low or span.start, high or span.end)
            dashboards = load_dashboards()
            if isinstance(reader, WorkerQueryClient):
                source = f"the running worker at {s.worker_url}"
            elif is_embedded(s.clickhouse_url):
                source = f"the embedded engine at {redact(s.clickhouse_url)}"
            else:
                source = f"ClickHouse at {redact(s.clickhouse_url)}"
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("running dashboard panels", total=len(dashboards))
                report = build_report(
                    reader,
                    workspace,
                    span,
                    source,
                    dashboards,
                    progress=lambda title: progress.advance(task),
                )
        except (StoreUnavailable, ValueError) as exc:
            fail(str(exc))
        html_file.parent.mkdir(parents=True, exist_ok=True)
        html_file.write_text(render_html(report))
        panels = sum(len(d.results) for d in report.dashboards)
        console.print(
            f"wrote {html_file} ({len(report.dashboards)} dashboards, {panels} panels, "
            f"{span.start:%Y-%m-%d} .. {span.end:%Y-%m-%d})"
        )
