"""A rich progress bar with a rate (items/s) and an ETA, one task per phase of long work."""

from __future__ import annotations

from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from rapport.cli.common import console


class RateColumn(ProgressColumn):
    """Items per second of the current task (rich's speed estimate)."""

    def __init__(self, unit: str = "/s") -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        shown = f"{speed:,.0f}{self.unit}" if speed else ""  # none yet, or done in no time
        return Text(shown, style="progress.data.speed")


class PhasedProgress:
    """`phase(name, total)` starts a task (finishing the one before), `advance(n)` moves it."""

    def __init__(self, unit: str = "/s") -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(unit),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> PhasedProgress:
        self.bar.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()
        self.bar.__exit__(kind, exc, tb)

    def _close(self) -> None:
        if self._task is not None:
            task = self.bar.tasks[-1]
            if task.total is None:
                done = task.completed or 1
                self.bar.update(self._task, total=done, completed=done)
            self.bar.stop_task(self._task)
            self._task = None

    def phase(self, name: str, total: int | None) -> None:
        self._close()
        self._task = self.bar.add_task(name, total=total)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self.bar.advance(self._task, n)
