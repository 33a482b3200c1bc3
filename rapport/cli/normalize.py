"""`rapport normalize`: print the canonical events webhook bodies yield (issue 3 fills this in)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the verb to the main app."""
