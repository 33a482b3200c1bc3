"""Faust's commit bookkeeping, with Rapport's head-gap guard: no offset is skipped.

Runs Faust's own `Consumer._new_offset` (guarded by `streams.offsets.guard_head_gap`) on the
consumer state it reads: acknowledged offsets per partition, the committed position (the next
offset to read, as Kafka stores it) and the known gaps (offsets that hold no message).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.offsets import guard_head_gap

TOPIC = TP("rapport.raw", 4)


class ConsumerState:
    """The attributes `_new_offset` reads and updates, nothing else."""

    def __init__(self, committed: int | None, acked: list[int]) -> None:
        self._committed_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._committed_offset[TOPIC] = committed
        self._acked: dict[TP, list[int]] = defaultdict(list)
        self._acked[TOPIC] = sorted(acked)
        self._acked_index: dict[TP, set[int]] = defaultdict(set)
        self._acked_index[TOPIC] = set(acked)
        self._gap: dict[TP, IntervalTree] = defaultdict(IntervalTree)


def new_offset(state: Any) -> int | None:
    guard_head_gap()
    result: int | None = Consumer._new_offset(state, TOPIC)
    return result


def test_the_offset_right_after_the_committed_one_must_be_acknowledged() -> None:
    # Committed position 1 (offset 0 done); offset 1 was never acknowledged.
    assert new_offset(ConsumerState(committed=1, acked=[2, 3, 4])) is None


def test_a_committed_position_of_zero_is_checked_too() -> None:
    assert new_offset(ConsumerState(committed=0, acked=[1, 2])) is None


def test_consecutive_offsets_from_the_committed_one_commit() -> None:
    assert new_offset(ConsumerState(committed=1, acked=[1, 2, 3])) == 4
    assert new_offset(ConsumerState(committed=1, acked=[1, 2, 5])) == 3  # up to the first gap


def test_known_gaps_count_as_acknowledged() -> None:
    state = ConsumerState(committed=1, acked=[3, 4])
    state._gap[TOPIC].addi(1, 3)  # offsets 1 and 2 hold no message (e.g. compacted away)
    assert new_offset(state) == 5


def test_nothing_committed_yet_keeps_fausts_behaviour() -> None:
    assert new_offset(ConsumerState(committed=None, acked=[5, 6])) == 7


def test_guarding_twice_wraps_once() -> None:
    guard_head_gap()
    first = Consumer._new_offset
    guard_head_gap()
    assert Consumer._new_offset is first


class SeekingConsumer:
    """What `perform_seek` uses: the committed offsets Kafka reports, the assignment, seeks."""

    pause_partitions = Consumer.pause_partitions
    resume_partitions = Consumer.resume_partitions
    _get_active_partitions = Consumer._get_active_partitions
    _set_active_tps = Consumer._set_active_tps

    def __init__(self, committed: dict[TP, int | None]) -> None:
        self.committed = committed
        self._active_partitions: set[TP] = set(committed)
        self._paused_partitions: set[TP] = set()
        self._read_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._committed_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self.seeks: list[tuple[TP, int]] = []

    async def seek_to_committed(self) -> dict[TP, int | None]:
        return dict(self.committed)

    def assignment(self) -> set[TP]:
        return set(self.committed)

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))

    def _is_changelog_tp(self, tp: TP) -> bool:
        return tp.topic.endswith("-changelog")


def test_partitions_never_committed_are_read_from_the_start_after_an_assignment() -> None:
    import asyncio

    from streams.offsets import read_uncommitted_from_the_start

    read_uncommitted_from_the_start({"rapport.raw"})
    fresh, zero, done = TP("rapport.raw", 0), TP("rapport.raw", 1), TP("rapport.raw", 2)
    other = TP("rapport-worker-relationships-changelog", 0)
    consumer = SeekingConsumer({fresh: None, zero: 0, done: 187, other: None})
    asyncio.run(Consumer.perform_seek(consumer))  # type: ignore[arg-type]
    assert sorted(consumer.seeks) == [(fresh, 0), (zero, 0)]  # not the committed one, not others


class RecoveringConsumer:
    """The attributes and methods Faust's `perform_seek` uses, Faust's own pause/resume."""

    pause_partitions = Consumer.pause_partitions
    resume_partitions = Consumer.resume_partitions
    _get_active_partitions = Consumer._get_active_partitions
    _set_active_tps = Consumer._set_active_tps

    def __init__(self, assigned: set[TP], changelogs: set[TP], committed: dict[TP, int]) -> None:
        self.assigned, self.changelogs, self.committed = assigned, changelogs, committed
        self._active_partitions: set[TP] = set(assigned)
        self._paused_partitions: set[TP] = set()
        self._read_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._committed_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self.active_while_seeking: set[TP] | None = None
        self.sought: list[tuple[TP, int]] = []

    def assignment(self) -> set[TP]:
        return self.assigned

    def _is_changelog_tp(self, tp: TP) -> bool:
        return tp in self.changelogs

    async def seek_to_committed(self) -> dict[TP, int]:
        await asyncio.sleep(0)  # the fetcher runs meanwhile: what may it deliver?
        self.active_while_seeking = set(self._active_partitions)
        return self.committed

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought.append((tp, offset))


def test_stream_partitions_deliver_nothing_while_they_are_sought() -> None:
    from streams.offsets import read_uncommitted_from_the_start

    read_uncommitted_from_the_start({"rapport.events"})
    events = {TP("rapport.events", p) for p in range(3)}
    changelog = TP("w-relationships-changelog", 0)
    consumer = RecoveringConsumer(
        events | {changelog}, {changelog}, {TP("rapport.events", 0): 2765,
                                            TP("rapport.events", 1): 2674}
    )  # fmt: skip
    consumer.pause_partitions({TP("rapport.events", 2)})  # paused by someone else: stays so
    asyncio.run(Consumer.perform_seek(consumer))  # type: ignore[arg-type]
    assert consumer.active_while_seeking == {changelog}
    assert consumer._active_partitions == {changelog, *events} - {TP("rapport.events", 2)}
    assert consumer._read_offset[TP("rapport.events", 0)] == 2765
    assert consumer.sought == [(TP("rapport.events", 2), 0)]  # no committed offset: from 0
