"""What the replay's parts agree on: its error, how it reports progress, where it writes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from projections.store import SqlReader

if TYPE_CHECKING:
    from streams.replay.lease import Lease


class ReplayError(RuntimeError):
    """The replay or the activation cannot go on; the message says why and what to do."""


class Progress(Protocol):
    """Where a replay reports its phases and how far each got (the CLI draws bars)."""

    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, n: int) -> None: ...


class NoProgress:
    """Progress nobody watches (tests, benchmarks, a shard's own work)."""

    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


class Beats(Protocol):
    """Where a build's lease on its version is kept (`streams.replay.lease`)."""

    def beat(
        self, version: int, build: str, holder: str, done: bool = False, lapse_s: float = ...
    ) -> Lease | None:
        """Claim, renew or (done) end `build`'s lease on `version`, held `lapse_s` without
        another beat; the build that holds it (`streams.replay.lease.beat`)."""
        ...


class TableWriter(Beats, Protocol):
    """Where a version's rows go: ClickHouse directly, or the worker that owns the engine."""

    def prepare(self, version: int, build: str) -> None: ...

    def write(self, table: str, rows: Iterable[list[Any]], progress: Progress) -> None: ...

    def write_arrow(self, table: str, data: Any, progress: Progress) -> None: ...

    def arrow_file_schema(self, table: str) -> Any | None:
        """The Arrow schema of an IPC stream file `insert_arrow_file` takes for `table`, or None
        when this writer reads no file (the rows then go to `write_arrow`)."""
        ...

    def insert_arrow_file(self, table: str, path: str, rows: int, progress: Progress) -> None:
        """The `rows` rows of an Arrow IPC stream file of `arrow_file_schema(table)`."""
        ...

    def record(self, version: int, event: str, worker_id: str, detail: dict[str, Any]) -> None: ...

    def reader(self) -> SqlReader: ...

    def close(self) -> None: ...
