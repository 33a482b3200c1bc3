"""`rapport import` (backfill events into the log) and `rapport export` (the log to an archive).

    rapport import FILE --workspace W --format ndjson|csv|x-archive
    rapport export FILE [--workspace W] [--format ndjson|parquet]

Imported events get the ids the adapters give the same objects (events/imports.py), so importing
a file twice, or a file that overlaps what webhooks delivered, counts every event once.
"""

from __future__ import annotations

from pathlib import Path

import typer

from rapport.cli.common import console, err, fail, settings, workspaces
from rapport.cli.progress import PhasedProgress

MAX_PROBLEMS_SHOWN = 20


def register(app: typer.Typer) -> None:
    @app.command("import", no_args_is_help=True)
    def import_cmd(
        file: Path = typer.Argument(..., help="the file (or X archive directory / .zip)"),
        workspace: str = typer.Option(..., "--workspace", "-w", help="workspace name"),
        fmt: str = typer.Option(..., "--format", "-f", help="ndjson, csv or x-archive"),
        dry_run: bool = typer.Option(False, "--dry-run", help="read and check, append nothing"),
    ) -> None:
        """Backfill events from FILE into the event log (rapport.events)."""
        from events.imports import (
            FORMATS,
            Problem,
            UnreadableFile,
            events_from_file,
            x_archive_size,
        )
        from streams.eventlog import append_events

        if fmt not in FORMATS:
            fail(f"--format must be one of {', '.join(FORMATS)}", 2)
        if not file.exists():
            fail(f"{file} not found", 2)
        s = settings()
        config = workspaces(s).get(workspace)
        if config is None:
            fail(f"unknown workspace {workspace!r}", 2)
        problems: list[Problem] = []
        try:
            if fmt == "x-archive":
                total, unit = x_archive_size(file), " items/s"
            else:
                total, unit = file.stat().st_size, " B/s"
            with PhasedProgress(unit) as progress:
                progress.phase(f"importing {file.name}", total)
                events = events_from_file(config, file, fmt, problems, progress.advance)
                if dry_run:
                    count = sum(1 for _ in events)
                else:
                    count = append_events(s, events, timeout_s=120.0)
        except UnreadableFile as exc:
            fail(str(exc), 2)
        except (OSError, RuntimeError) as exc:
            fail(f"import failed: {exc}")
        for problem in problems[:MAX_PROBLEMS_SHOWN]:
            err.print(f"{file}: {problem.where}: {problem.reason}")
        if len(problems) > MAX_PROBLEMS_SHOWN:
            err.print(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
        verb = "read" if dry_run else "appended"
        console.print(
            f"{verb} {count:,} events for workspace {workspace} from {file}"
            + (f"; {len(problems):,} skipped (see above)" if problems else "")
        )
        if problems and not count:
            raise typer.Exit(1)

    @app.command("export", no_args_is_help=True)
    def export_cmd(
        file: Path = typer.Argument(..., help="the archive to write"),
        workspace: list[str] = typer.Option([], "--workspace", "-w", help="only these (all)"),
        fmt: str = typer.Option(
            "", "--format", "-f", help="ndjson or parquet (default: from the file name)"
        ),
    ) -> None:
        """Write the event log (up to now) to an archive for cold storage (replay --from)."""
        from streams.archive import export_log, take_snapshot

        fmt = fmt or ("parquet" if file.suffix == ".parquet" else "ndjson")
        if fmt not in ("ndjson", "parquet"):
            fail("--format must be ndjson or parquet", 2)
        s = settings()
        try:
            total = take_snapshot(s).total
            with PhasedProgress() as progress:
                progress.phase(f"exporting to {file.name}", total)
                count, snapshot = export_log(s, file, fmt, set(workspace) or None, progress.advance)
        except (OSError, RuntimeError) as exc:
            fail(f"export failed: {exc}")
        console.print(
            f"exported {count:,} events to {file} ({fmt}), the log up to offsets "
            f"{snapshot.to_json()['ends']}"
        )
