"""`rapport deadletters list|redrive`: authentic deliveries no adapter could read."""

from __future__ import annotations

import json

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from rapport.cli.common import console, err, fail, settings
from streams.deadletters import (
    StoredLetter,
    ledger_topic,
    read_letters,
    redrive,
    redriven_keys,
    select,
)

app = typer.Typer(
    help="Dead letters: authentic deliveries that could not become events, with the reason.",
    no_args_is_help=True,
)


def _table(letters: list[StoredLetter], done: set[str]) -> Table:
    table = Table("at", "workspace", "source", "failed_at", "reason", "redriven")
    for s in letters:
        table.add_row(
            f"{s.partition}:{s.offset}",
            s.letter.workspace or "-",
            s.letter.source or "-",
            s.letter.failed_at.isoformat(timespec="seconds"),
            s.letter.reason,
            "yes" if s.raw_key in done else "no",
        )
    return table


@app.command("list")
def list_(
    workspace: str | None = typer.Option(None, "--workspace", help="only this workspace"),
    reason_contains: str | None = typer.Option(
        None, "--reason-contains", help="only letters whose reason contains this (any case)"
    ),
    fmt: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """Read the dead-letter topic from the beginning and show each letter with its reason."""
    if fmt not in ("table", "json"):
        fail("--format must be table or json", 2)
    s = settings()
    try:
        done = redriven_keys(s)  # an absent ledger reads as empty
        letters, unreadable = read_letters(s)
    except Exception as exc:  # kafka-python raises many types; report and exit non-zero
        fail(f"could not read {s.topic_deadletters} at {s.kafka_bootstrap}: {exc}")
    chosen = select(letters, workspace, reason_contains)
    if fmt == "json":
        typer.echo(json.dumps([x.as_dict(x.raw_key in done) for x in chosen], indent=2))
        return
    console.print(_table(chosen, done))
    console.print(
        f"{len(chosen)} dead letters" + (f", {unreadable} unreadable" if unreadable else "")
    )


REDRIVE_HELP = (
    "Re-produce dead letters' original envelopes to the raw topic so the worker normalizes them "
    "again; run it after fixing the adapter that rejected them.\n\n"
    "Bookkeeping: each redriven letter is recorded in a compacted topic, "
    "<dead-letter topic>.redriven, keyed by the raw record it came from, once the broker "
    "acknowledged the redrive (acks=all). A second redrive sends nothing new; letters the "
    "filters left out stay redrivable; a letter that fails again comes back as a new dead letter "
    "that a later redrive picks up."
)


@app.command("redrive", help=REDRIVE_HELP)
def redrive_(
    workspace: str | None = typer.Option(None, "--workspace", help="only this workspace"),
    reason_contains: str | None = typer.Option(
        None, "--reason-contains", help="only letters whose reason contains this (any case)"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would be redriven"),
) -> None:
    s = settings()
    progress = Progress(
        TextColumn("redriving"), BarColumn(), MofNCompleteColumn(), console=err, transient=True
    )
    try:
        with progress:
            task = progress.add_task("redrive", total=None)
            result = redrive(
                s,
                workspace=workspace,
                reason_contains=reason_contains,
                dry_run=dry_run,
                progress=lambda n: progress.advance(task, n),
            )
    except Exception as exc:  # kafka-python raises many types; report and exit non-zero
        fail(f"redrive failed against {s.kafka_bootstrap}: {exc}")
    if result.sent:
        console.print(_table(result.sent, set()))
    verb = "would redrive" if dry_run else "redrove"
    console.print(
        f"{verb} {len(result.sent)} dead letters to {s.topic_raw}; "
        f"{result.already} already redriven (ledger {ledger_topic(s)})"
        + (f"; {result.unreadable} unreadable records skipped" if result.unreadable else "")
    )
