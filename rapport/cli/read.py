"""Read verbs: `rapport relationships` (works while the stack runs on the embedded engine)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import typer
from rich.table import Table

from projections.readmodel import RELATIONSHIP_FIELDS, TIME_FIELDS, relationships
from projections.store import StoreUnavailable
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
