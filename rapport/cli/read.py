"""Read verbs: `rapport relationships` and `rapport report`.

Both work while the stack runs on the embedded engine (they read through the worker, which owns
it) and when it is stopped (they open the engine themselves), or against a ClickHouse server.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.cells import cell_len
from rich.table import Table

from projections.readmodel import RELATIONSHIP_FIELDS, TIME_FIELDS, relationships
from projections.store import StoreUnavailable, WorkerQueryClient, is_embedded, redact
from rapport.cli.common import console, fail, settings
from rapport.stack import open_reader

# What fits a terminal, with its header (two short lines keep the columns narrow); json and csv
# carry every field under its SPEC name, times in ms precision and durations in seconds.
TABLE_COLUMNS = {
    "contact_id": "contact",
    "stage": "stage",
    "last_contact_at": "last contact\n(UTC)",
    "interactions": "inter-\nactions",
    "our_latency_p50_s": "our reply\np50",
    "their_latency_p50_s": "their reply\np50",
    "awaiting_reply_since": "awaiting reply\nsince (UTC)",
    "balance": "balance",
    "reciprocity": "recipro-\ncity",
    "strength": "strength",
    "qualified_conversations": "qualified\nconv.",
    "touch_due_at": "touch due\n(UTC day)",
}
TABLE_FIELDS = tuple(TABLE_COLUMNS)
_DIGITS = {"balance": 1, "reciprocity": 2, "strength": 1}


def render(rows: list[dict[str, Any]], fmt: str, width: int = 160) -> str | Table:
    """The rows as json, csv or a table for a console `width` columns wide."""
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
    return table_of(rows, width)


# Dropped first, one at a time, when the table is wider than the console: a cell is never cut.
_HIDDEN_FIRST = (
    "reciprocity", "balance", "their_latency_p50_s", "strength", "touch_due_at",
    "qualified_conversations", "awaiting_reply_since", "our_latency_p50_s", "interactions",
    "last_contact_at",
)  # fmt: skip
_CONTACT_WIDTH = 32  # longer contact ids (LinkedIn URNs) fold onto a second line


def table_of(rows: list[dict[str, Any]], width: int) -> Table:
    """The table's columns that fit `width` whole (contact and stage always), a caption naming
    any left out and counting the rows' late events (a replay places them)."""
    cells = [{n: _cell(n, row[n]) for n in TABLE_FIELDS} for row in rows]
    widths = {n: _column_width(n, (row[n] for row in cells)) for n in TABLE_FIELDS}
    shown = list(TABLE_FIELDS)
    hidden: list[str] = []
    for name in _HIDDEN_FIRST:  # a column takes its width and two spaces of this table's padding
        if sum(widths[n] + 2 for n in shown) <= width:
            break
        shown.remove(name)
        hidden.append(name)
    notes = []
    if hidden:
        elsewhere = "(--format json or csv has them)"
        notes.append(f"not shown at this width: {', '.join(hidden)} {elsewhere}")
    late = sum(row.get("late_events") or 0 for row in rows)
    if late:
        notes.append(
            f"{late:,} interactions of these relationships arrived after their lateness "
            "window: replies and waits leave them out until `rapport replay --swap`"
        )
    table = Table(
        box=box.SIMPLE_HEAVY,
        collapse_padding=True,
        pad_edge=False,
        title=rows[0]["workspace"] if rows else None,
        caption="\n".join(notes) or None,
    )
    for column in shown:
        numeric = column not in TIME_FIELDS and column not in ("contact_id", "stage")
        table.add_column(
            TABLE_COLUMNS[column],
            no_wrap=column != "contact_id",
            overflow="fold" if column == "contact_id" else "ellipsis",
            width=widths[column],
            justify="right" if numeric else "left",
        )
    for row in cells:
        table.add_row(*(row[column] for column in shown))
    return table


def _column_width(name: str, cells: Iterable[str]) -> int:
    """The widest of the header's lines and the cells (a contact id at most `_CONTACT_WIDTH`:
    longer ones fold)."""
    header = max(cell_len(line) for line in TABLE_COLUMNS[name].split("\n"))
    widest = max((cell_len(c) for c in cells), default=0)
    if name == "contact_id":
        widest = min(widest, _CONTACT_WIDTH)
    return max(header, widest)


def _cell(name: str, value: Any) -> str:
    """A table cell: times in UTC, durations in their two largest units."""
    if value is None:
        return ""
    if name in TIME_FIELDS:  # a keep-in-touch date is a day; the others to the minute
        return str(value)[: 10 if name == "touch_due_at" else 16].replace("T", " ")
    if name.endswith("_s"):
        return duration(float(value))
    if isinstance(value, float):
        return f"{value:,.{_DIGITS.get(name, 2)}f}"
    return str(value)


_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))


def duration(seconds: float) -> str:
    """Seconds as people read a wait: `45s`, `3m 20s`, `2h 44m`, `8d 4h` (rounded to the
    smaller unit shown)."""
    if seconds < 0:
        return "-" + duration(-seconds)
    for i, (unit, size) in enumerate(_UNITS[:-1]):
        small, small_size = _UNITS[i + 1]
        count = round(seconds / small_size)  # in the smaller unit, rounded once
        if count >= size // small_size:
            big, rest = divmod(count, size // small_size)
            return f"{big}{unit} {rest}{small}" if rest else f"{big}{unit}"
    return f"{round(seconds)}s"


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
        out = render(rows, fmt, console.width)
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
