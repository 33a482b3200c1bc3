"""One build of a version at a time: a lease in ClickHouse, renewed while the replay runs.

A replay drops and recreates its version's tables and changelog topics before it writes them.
Two replays of one version at once (two operators, a retried job, two `rapport replay` picking
the same next version) would each destroy what the other wrote, and the worker state could end
up mixed from both. So a replay first claims its version: it adds a beat, then reads every live
build of that version (not finished, its last beat younger than the lapse that beat gave:
`STALE_S` for a replay, which renews its claim every `BEAT_S`). The build that began first holds
the version; the others give up before they touch anything. The beats carry the server's clock
(`now64`), so hosts whose clocks disagree still agree on who began first, and a beat that comes
after a later claim is seen by that claim. A replay that dies without finishing (kill -9, a lost
host) holds the version until its last beat is `STALE_S` old.

An activation holds the version it activates the same way (a "build" named `activation-...`),
so a replay cannot drop the tables the activation is about to exchange, and an activation
waits for the replay of its version to finish. It cannot renew its claim while the worker
restarts (nothing owns the embedded engine then), so its one beat holds for `ACTIVATION_S`,
longer than an activation may take.

Beats are rows (plain MergeTree, kept a week): the live builds are an aggregate over them.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from projections.store import ClickHouseStore, SqlReader
from streams.replay.interfaces import Beats, Progress, ReplayError

log = logging.getLogger("rapport.replay")

TABLE = "projection_builds"
STALE_S = 120.0  # a build without a beat this long is taken for dead
BEAT_S = 10.0  # how often a running replay renews its claim
ACTIVATION = "activation-"  # the prefix of an activation's "build"
ACTIVATION_S = 600.0  # an activation's claim: the worker's stop (60 s) and swap (300 s) and more


@dataclass(frozen=True)
class Lease:
    """A live build of a version: who runs it, since when, its last beat (server time)."""

    version: int
    build: str
    holder: str
    started_at: datetime
    beat_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "build": self.build,
            "holder": self.holder,
            "started_at": self.started_at.isoformat(),
            "beat_at": self.beat_at.isoformat(),
        }

    @property
    def activation(self) -> bool:
        return self.build.startswith(ACTIVATION)

    def describe(self) -> str:
        what = "the activation" if self.activation else "build"
        return (
            f"{what} {self.build} of version {self.version} by {self.holder}, running since "
            f"{self.started_at:%Y-%m-%d %H:%M:%S} UTC (last beat {self.beat_at:%H:%M:%S})"
        )


def ensure_table(store: ClickHouseStore, database: str) -> None:
    """The table of beats (made on first use, as the versions log is)."""
    store.command(
        f"""
        CREATE TABLE IF NOT EXISTS {database}.{TABLE} (
            version UInt32,
            build String,
            holder String,
            done UInt8,
            lapse_ms UInt32,
            beat_at DateTime64(3, 'UTC') DEFAULT now64(3)
        ) ENGINE = MergeTree
        ORDER BY (version, build, beat_at)
        TTL toDateTime(beat_at) + INTERVAL 7 DAY
        """
    )


def beat(
    store: ClickHouseStore,
    database: str,
    version: int,
    build: str,
    holder: str,
    done: bool = False,
    lapse_s: float = STALE_S,
) -> Lease | None:
    """Add a beat of `build` (its claim, a renewal, or with `done` its end), which holds for
    `lapse_s` without another, and return the build that holds `version` now (None when no
    build is live)."""
    ensure_table(store, database)
    store.command(
        f"INSERT INTO {database}.{TABLE} (version, build, holder, done, lapse_ms) "
        f"VALUES ({int(version)}, {_quoted(build)}, {_quoted(holder)}, {int(done)}, "
        f"{int(lapse_s * 1000)})"
    )
    live = _live(store, database, version)
    return live[0] if live else None


def builds(reader: SqlReader, database: str, version: int | None = None) -> list[Lease]:
    """The live builds (of `version`, or of every version), the one that began first first."""
    exists = reader.query(f"EXISTS TABLE {database}.{TABLE}").rows
    if not exists or not int(exists[0][0]):
        return []
    return _live(reader, database, version)


def _live(reader: SqlReader, database: str, version: int | None) -> list[Lease]:
    where = "" if version is None else f"WHERE version = {int(version)}"
    rows = reader.query(
        f"""
        SELECT version, build, any(holder), min(beat_at) AS started, max(beat_at) AS last
        FROM {database}.{TABLE} {where}
        GROUP BY version, build
        HAVING max(done) = 0
            AND last + toIntervalMillisecond(argMax(lapse_ms, beat_at)) > now64(3)
        ORDER BY version, started, build
        """
    ).rows
    return [
        Lease(int(v), str(b), str(h), _utc(started), _utc(last)) for v, b, h, started, last in rows
    ]


def from_json(data: Any) -> Lease | None:
    """`Lease.to_json` back (None stays None)."""
    if data is None:
        return None
    return Lease(
        int(data["version"]),
        str(data["build"]),
        str(data["holder"]),
        _utc(data["started_at"]),
        _utc(data["beat_at"]),
    )


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


class Claim:
    """A replay's (or an activation's) hold on its version: claimed before anything of the
    version is dropped, renewed while the replay reports progress (`Renewing`), ended when it
    stops."""

    def __init__(self, writer: Beats, version: int, build: str, lapse_s: float = STALE_S) -> None:
        self.writer, self.version, self.build, self.lapse_s = writer, version, build, lapse_s
        self.holder = f"{socket.gethostname()} pid {os.getpid()}"
        self._last = time.monotonic()
        held = writer.beat(version, build, self.holder, lapse_s=lapse_s)
        if held is None or held.build != build:
            if held is None:
                said = f"version {version} was taken and let go meanwhile"
            elif held.activation:
                said = f"version {version} is being activated: {held.describe()}"
            else:
                said = f"another replay is building version {version}: {held.describe()}"
            advice = (
                "Wait for it to finish, then activate"
                if build.startswith(ACTIVATION)
                else f"Wait for it, or build another version (--to-version {version + 1})"
            )
            self.end()  # a refused claim must not stand in the next one's way
            raise ReplayError(f"{said}. {advice}")

    def renew(self) -> None:
        """A beat, at most every BEAT_S; raises when another build holds the version now."""
        now = time.monotonic()
        if now - self._last < BEAT_S:
            return
        self._last = now
        held = self.writer.beat(self.version, self.build, self.holder, lapse_s=self.lapse_s)
        if held is None or held.build != self.build:
            raise ReplayError(
                f"this replay no longer holds version {self.version}: it went more than "
                f"{self.lapse_s:.0f} s without a beat and "
                + (held.describe() if held else "its claim ended")
                + "; replay again"
            )

    def end(self) -> None:
        """The build is over (done or failed): the version is free for the next one. If the
        beat that says so cannot be written, the claim lapses instead."""
        try:
            self.writer.beat(self.version, self.build, self.holder, True, self.lapse_s)
        except Exception as exc:
            log.warning(
                "could not end the claim of build %s on version %s (%s): the next replay of "
                "that version must wait up to %.0f s",
                self.build,
                self.version,
                exc,
                self.lapse_s,
            )


class Renewing:
    """The replay's progress, renewing its claim as it goes."""

    def __init__(self, progress: Progress, claim: Claim) -> None:
        self.progress, self.claim = progress, claim

    def phase(self, name: str, total: int | None) -> None:
        self.claim.renew()
        self.progress.phase(name, total)

    def advance(self, n: int) -> None:
        self.claim.renew()
        self.progress.advance(n)
