"""What every verb needs: settings, the workspace file, errors that exit cleanly."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

from rapport.settings import Settings, get_settings
from rapport.workspaces import WorkspaceRegistry

console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def settings() -> Settings:
    return get_settings()


def workspaces(s: Settings | None = None) -> WorkspaceRegistry:
    s = s or settings()
    try:
        return WorkspaceRegistry.load(s.workspaces)
    except (FileNotFoundError, ValueError, LookupError) as exc:
        fail(str(exc), 2)
