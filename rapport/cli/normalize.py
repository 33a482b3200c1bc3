"""`rapport normalize`: print the canonical events webhook bodies yield, as NDJSON.

Each FILE is one webhook body, read byte for byte and normalized by the adapter of `--platform`
for the workspace `--workspace` (its owned accounts decide directions), exactly as the worker
would (received_at = now). Events go to stdout, one JSON object a line; everything else goes to
stderr: `FILE: no interaction (what, ...)` for a body that holds none, `FILE: <reason>` for one
that cannot be read or normalized. Exit status: 0, or 1 when any FILE was rejected (the others
are still processed), or 2 for a usage problem (unknown workspace or platform, no workspace file).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from events.adapters import ADAPTERS, normalize
from events.adapters.base import RejectedPayload
from events.envelope import RawEnvelope
from events.models import dump_event
from rapport.settings import get_settings
from rapport.workspaces import WorkspaceConfig, WorkspaceRegistry


def _workspace(name: str, path: Path | None) -> WorkspaceConfig:
    path = path or get_settings().workspaces
    try:
        registry = WorkspaceRegistry.load(path)
    except (FileNotFoundError, ValueError, LookupError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    config = registry.get(name)
    if config is None:
        known = ", ".join(sorted(registry.workspaces)) or "none"
        typer.echo(f"error: unknown workspace {name!r} in {path} (known: {known})", err=True)
        raise typer.Exit(2)
    return config


def normalize_files(
    files: Annotated[
        list[Path],
        typer.Argument(help="webhook bodies, one per file", metavar="FILE", show_default=False),
    ],
    platform: Annotated[
        str, typer.Option("--platform", "-p", help="webhook source: " + ", ".join(ADAPTERS))
    ],
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="workspace name")],
    workspaces: Annotated[
        Path | None,
        typer.Option("--workspaces", help="workspace file (default: RAPPORT_WORKSPACES)"),
    ] = None,
) -> None:
    """Print the canonical events that webhook bodies yield, as NDJSON."""
    if platform not in ADAPTERS:
        typer.echo(f"error: unknown platform {platform!r} (known: {', '.join(ADAPTERS)})", err=True)
        raise typer.Exit(2)
    config = _workspace(workspace, workspaces)
    failed = False
    for file in files:
        try:
            body = file.read_bytes()
        except OSError as exc:
            typer.echo(f"{file}: cannot read ({exc.strerror or exc})", err=True)
            failed = True
            continue
        envelope = RawEnvelope(
            workspace=config.name, source=platform, received_at=datetime.now(UTC), body=body
        )
        try:
            result = normalize(config, envelope)
        except RejectedPayload as exc:
            typer.echo(f"{file}: {exc.reason}", err=True)
            failed = True
            continue
        for event in result.events:
            typer.echo(dump_event(event).decode())
        if not result.events:
            whats = list(dict.fromkeys(item.what for item in result.skipped)) or ["empty body"]
            typer.echo(f"{file}: no interaction ({', '.join(whats)})", err=True)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the verb to the main app."""
    app.command("normalize", no_args_is_help=True)(normalize_files)
