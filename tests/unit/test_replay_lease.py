"""One build of a version at a time: the lease in real chdb, and the replay's claim on it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rapport.settings import Settings
from streams.replay import lease
from streams.replay.interfaces import NoProgress, ReplayError
from streams.replay.lease import STALE_S, Claim, Lease, Renewing
from streams.replay.writers import DirectWriter

DB = "rapport"


@pytest.fixture()
def writer(tmp_path: Path) -> Iterator[DirectWriter]:
    made = DirectWriter(Settings(home=tmp_path, clickhouse_url=f"chdb://{tmp_path / 'ch'}"))
    try:
        yield made
    finally:
        made.close()


class CountingWriter:
    """A real DirectWriter whose beats are counted."""

    def __init__(self, inner: DirectWriter) -> None:
        self.inner = inner
        self.beats: list[tuple[str, bool]] = []

    def beat(
        self, version: int, build: str, holder: str, done: bool = False, lapse_s: float = STALE_S
    ) -> Lease | None:
        self.beats.append((build, done))
        return self.inner.beat(version, build, holder, done, lapse_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_the_build_that_began_first_holds_the_version_until_it_ends(writer: DirectWriter) -> None:
    store = writer.store
    first = lease.beat(store, DB, 2, "a", "host-a pid 1")
    assert first is not None and first.build == "a" and first.holder == "host-a pid 1"
    assert lease.beat(store, DB, 2, "b", "host-b pid 2").build == "a"  # type: ignore[union-attr]
    assert lease.beat(store, DB, 3, "c", "host-c pid 3").build == "c"  # type: ignore[union-attr]
    assert lease.beat(store, DB, 2, "a", "host-a pid 1").build == "a"  # type: ignore[union-attr]
    assert [(held.version, held.build) for held in lease.builds(store, DB)] == [
        (2, "a"),
        (2, "b"),
        (3, "c"),
    ]
    assert lease.beat(store, DB, 2, "a", "host-a pid 1", done=True).build == "b"  # type: ignore[union-attr]
    assert lease.beat(store, DB, 2, "b", "host-b pid 2", done=True) is None


def test_a_build_without_a_recent_beat_is_taken_for_dead(writer: DirectWriter) -> None:
    store = writer.store
    dead = lease.beat(store, DB, 2, "dead", "lost host pid 9", lapse_s=0.5)
    assert dead is not None and dead.build == "dead"
    assert lease.beat(store, DB, 3, "slow", "busy host pid 8", lapse_s=60).build == "slow"  # type: ignore[union-attr]
    time.sleep(0.6)
    held = lease.beat(store, DB, 2, "next", "host pid 1")
    assert held is not None and held.build == "next"  # "dead" gave 0.5 s, that went by
    assert [held.build for held in lease.builds(store, DB, 3)] == ["slow"]  # it gave 60 s


def test_a_refused_claim_names_the_holder_and_stands_in_nobodys_way(
    writer: DirectWriter,
) -> None:
    running = Claim(writer, 4, "running")
    with pytest.raises(ReplayError) as refused:
        Claim(writer, 4, "second")
    message = str(refused.value)
    assert "another replay is building version 4" in message
    assert "build running" in message and running.holder in message
    assert "--to-version 5" in message
    running.end()
    third = Claim(writer, 4, "third")  # the refused "second" claimed nothing
    assert [held.build for held in lease.builds(writer.store, DB)] == ["third"]
    third.end()
    assert lease.builds(writer.store, DB) == []


def test_a_claim_renews_as_the_replay_goes_and_fails_once_another_build_holds_it(
    writer: DirectWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingWriter(writer)
    claim = Claim(counting, 2, "mine")
    progress = Renewing(NoProgress(), claim)
    for _ in range(50):
        progress.advance(1)
    assert counting.beats == [("mine", False)]  # nothing more within BEAT_S
    monkeypatch.setattr(lease, "BEAT_S", 0.0)
    progress.phase("writing", 10)
    progress.advance(1)
    assert counting.beats == [("mine", False)] * 3
    # Another host took the version over (this one went without beats for too long).
    lease.beat(writer.store, DB, 2, "mine", claim.holder, done=True)
    lease.beat(writer.store, DB, 2, "theirs", "other host pid 7")
    with pytest.raises(ReplayError, match=r"no longer holds version 2.*build theirs"):
        progress.advance(1)


def test_ending_a_claim_that_cannot_be_written_says_so(
    writer: DirectWriter, caplog: pytest.LogCaptureFixture
) -> None:
    claim = Claim(writer, 2, "mine")
    writer.close()  # ClickHouse gone: the end cannot be written, the claim lapses instead
    with caplog.at_level("WARNING", logger="rapport.replay"):
        claim.end()
    assert "could not end the claim of build mine on version 2" in caplog.text


def test_an_activation_and_a_replay_of_one_version_wait_for_each_other(
    writer: DirectWriter,
) -> None:
    building = Claim(writer, 3, "abc123")
    with pytest.raises(ReplayError) as waits:
        Claim(writer, 3, f"{lease.ACTIVATION}1")
    assert "another replay is building version 3: build abc123" in str(waits.value)
    assert "Wait for it to finish, then activate" in str(waits.value)
    building.end()
    activating = Claim(writer, 3, f"{lease.ACTIVATION}2")
    with pytest.raises(ReplayError) as refused:
        Claim(writer, 3, "def456")
    said = str(refused.value)
    assert "version 3 is being activated: the activation activation-2 of version 3" in said
    assert "build another version (--to-version 4)" in said
    activating.end()
    assert lease.builds(writer.store, DB) == []


def test_a_replay_whose_shard_fails_says_why_stops_its_shards_and_lets_the_version_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard's reader fails (the broker went away mid-read): the replay stops with the
    shard's error, no shard is left running, and its claim on the version is ended."""
    import multiprocessing

    import streams.replay.build as build_module
    import streams.replay.shards as shards_module
    from events.models import dump_event
    from rapport.workspaces import WorkspaceRegistry
    from streams.archive import Snapshot
    from tests.datasets import collegemsg_interactions

    log = [dump_event(e) for e in collegemsg_interactions({"9", "12"}, limit=400)]
    snapshot = Snapshot("rapport.events", {0: len(log), 1: 10})

    def reading(settings: Any, share: Snapshot, handle: Any) -> int:
        if 1 in share.ends:
            raise ConnectionError("the broker went away mid-read")
        handle([(None, value) for value in log])
        return len(log)

    monkeypatch.setattr(build_module, "take_snapshot", lambda settings: snapshot)
    monkeypatch.setattr(build_module, "fold_parallelism", lambda: 2)
    monkeypatch.setattr(shards_module, "read_log", reading)
    settings = Settings(home=tmp_path, clickhouse_url=f"chdb://{tmp_path / 'ch'}")
    # one workspace: an inspection build, so no worker state (no broker needed here)
    with pytest.raises(ReplayError, match=r"(?s)replay shard \d failed:.*went away mid-read"):
        build_module.replay(settings, WorkspaceRegistry(), 2, workspaces=["college"])
    assert multiprocessing.active_children() == []
    writer = DirectWriter(settings)
    try:
        beats = writer.store.query(
            f"SELECT count(), sum(done) FROM {DB}.{lease.TABLE} WHERE version = 2"
        ).rows[0]
        assert tuple(int(v) for v in beats) == (2, 1)  # claimed, then ended
        assert lease.builds(writer.store, DB) == []
        assert lease.beat(writer.store, DB, 2, "next", "host pid 1").build == "next"  # type: ignore[union-attr]
    finally:
        writer.close()


def test_shards_that_overlap_hand_the_version_to_the_replay_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same events in two partitions (the partition count changed): the sharded replay
    ends its claim and the one-process replay claims the version again, as a build of its
    own, and builds it."""
    import streams.replay.build as build_module
    import streams.replay.shards as shards_module
    from events.models import dump_event
    from rapport.workspaces import WorkspaceRegistry
    from streams.archive import Snapshot
    from tests.datasets import collegemsg_interactions

    log = [dump_event(e) for e in collegemsg_interactions({"9", "12"}, limit=400)]
    snapshot = Snapshot("rapport.events", {0: len(log), 1: len(log)})

    def reading(settings: Any, share: Snapshot, handle: Any) -> int:
        for _ in share.ends:
            handle([(None, value) for value in log])
        return len(log) * len(share.ends)

    monkeypatch.setattr(build_module, "take_snapshot", lambda settings: snapshot)
    monkeypatch.setattr(build_module, "fold_parallelism", lambda: 2)
    monkeypatch.setattr(shards_module, "read_log", reading)
    monkeypatch.setattr(build_module, "read_log", reading)
    settings = Settings(home=tmp_path, clickhouse_url=f"chdb://{tmp_path / 'ch'}")
    result = build_module.replay(settings, WorkspaceRegistry(), 2, workspaces=["college"])
    assert result.duplicates == len(log) and result.relationships > 0
    writer = DirectWriter(settings)
    try:
        claims = writer.store.query(
            f"SELECT build, max(done) FROM {DB}.{lease.TABLE} WHERE version = 2 GROUP BY build"
        ).rows
        assert len(claims) == 2 and all(int(done) == 1 for _, done in claims)
        assert result.build in {str(build) for build, _ in claims}
        assert lease.builds(writer.store, DB) == []
        count = writer.store.query(f"SELECT count() FROM {DB}.relationships_v2 FINAL").rows
        assert int(count[0][0]) == result.relationships
    finally:
        writer.close()


def test_a_long_wait_in_the_background_keeps_renewing_and_stops_when_the_claim_is_lost() -> None:
    """The replay waits for its worker state (a thread) without progress: the wait itself
    renews the claim about every second, and a lost claim stops the wait."""
    from streams.replay.build import _Background

    ticks: list[float] = []
    assert _Background(lambda: time.sleep(2.5) or "done").result(lambda: ticks.append(1)) == "done"
    assert len(ticks) >= 2

    def lost() -> None:
        raise ReplayError("this replay no longer holds version 2")

    slow = _Background(time.sleep, 3.0)
    started = time.monotonic()
    with pytest.raises(ReplayError, match="no longer holds"):
        slow.result(lost)
    assert time.monotonic() - started < 2.5
    slow.result()  # joined: nothing left running
