"""A worker and an ingest of a test's own settings on the test broker, stopped by pid after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rapport.settings import Settings
from rapport.stack import Stack


@contextmanager
def services_running(settings: Settings, workspaces: str) -> Iterator[Settings]:
    """Write the workspace file, start worker and ingest, yield, stop both by their pids."""
    settings.workspaces.write_text(workspaces)
    stack = Stack(settings)
    try:
        stack.start_services()
        yield settings
    finally:
        stack.stop_services()
