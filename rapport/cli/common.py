"""What every verb needs: settings, the workspace file, errors that exit cleanly."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console

from rapport.settings import Settings, get_settings
from rapport.workspaces import WorkspaceRegistry

# Piped output (CI logs, `| less`) gets a wide console instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


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
