"""Repairs to Faust's consumer offsets: a stop that never ended, records skipped or committed.

1. A bounded wait for in-flight events when the worker stops or gives partitions away.
   Before it commits at a stop or a rebalance, Faust waits until every message it handed to an
   agent is acknowledged (`Consumer.wait_empty`, no time limit, and deaf to cancellation). It also
   empties the agents' inbound queues first; a message dropped from one queue that something
   still references is then never acknowledged, and the wait never ends: a worker stopped right
   after a burst of events hung until it was killed (the replay swap test, about 3 runs in 5).
   Nothing is lost by giving up, given repair 2: a message that was not acknowledged is not
   committed, so its events are processed again by whichever worker owns the partition next;
   projections and sinks are idempotent per event id.
2. No commit past an unacknowledged offset (`guard_head_gap`).
3. A partition with no committed offset is read from offset 0 after every assignment
   (`read_uncommitted_from_the_start`).
4. No stream record is delivered while the stream partitions are sought to their committed
   offsets (same patch). After a recovery that read changelogs, Faust resumes the stream
   partitions and then awaits the seek while its fetcher already runs: records fetched in that
   window were delivered, the seek then set the read offsets back, and the next records looked
   like a jump over the delivered ones. Faust recorded that range as a gap (offsets that hold no
   message) although it held acknowledged records, counted them twice at the next commits, and
   the partitions' commits crawled one offset per commit interval while their events went
   unprocessed (the worker of a new projection version, which starts from a replay's
   changelogs: the swap test, about one run in five).
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from faust.transport.consumer import Consumer

log = logging.getLogger("rapport.worker")


def bound_consumer_drain(timeout_s: float) -> None:
    """Make every Faust consumer in this process wait at most `timeout_s` for in-flight events."""

    async def wait_empty(self: Any) -> None:
        """Faust's own loop (commit what is acknowledged, wait for acks), with a deadline."""
        deadline = self.loop.time() + timeout_s
        while not self.should_stop and self._unacked_messages:
            if self.loop.time() >= deadline:
                log.warning(
                    "%d events still unacknowledged after %.0f s: going on without committing "
                    "them (they are processed again from the last committed offset)",
                    len(self._unacked_messages),
                    timeout_s,
                )
                break
            gc.collect()  # acknowledged messages leave the weak set only once collected
            await self.commit()
            if not self._unacked_messages:
                break
            await self._wait_for_ack(timeout=1)
            self._clean_unacked_messages()
        await self.commit_and_end_transactions()

    Consumer.wait_empty = wait_empty  # type: ignore[method-assign]


def guard_head_gap() -> None:
    """Never commit past an offset of a partition that was not acknowledged.

    Faust commits the first run of consecutive acknowledged offsets of a partition. Its check for
    a missing offset at the head of that run (`Consumer._new_offset`) lets one offset through:
    with offset C as the committed position and C itself unacknowledged (dropped from an agent's
    queue in a rebalance, or left behind by the bounded drain above), acknowledged offsets C+1...
    were committed and C was never processed (the scale-out chaos scenario lost deliveries this
    way). It also skips the check when the committed position is 0. Here the head is checked
    first, counting the known gaps (offsets that hold no message) as Faust does, and nothing is
    committed for the partition until C is acknowledged or the partition is read again from C.
    """
    unguarded = Consumer._new_offset
    if getattr(unguarded, "rapport_guarded", False):
        return

    def new_offset(self: Any, tp: Any) -> int | None:
        committed = self._committed_offset[tp]
        acked = self._acked[tp]
        if committed is not None and acked:
            lowest = min(acked)
            gaps = self._gap[tp]
            if gaps:
                below = [interval.begin for interval in gaps.overlap(0, max(acked))]
                lowest = min([lowest, *below])
            if lowest > committed:
                return None
        result: int | None = unguarded(self, tp)
        return result

    new_offset.rapport_guarded = True  # type: ignore[attr-defined]
    Consumer._new_offset = new_offset  # type: ignore[method-assign]


_SOURCE_TOPICS: set[str] = set()


def read_uncommitted_from_the_start(topics: set[str]) -> None:
    """After each assignment, read partitions of `topics` with no committed offset from offset 0,
    and keep the stream partitions paused while they are sought (repairs 3 and 4).

    Faust seeks every assigned partition to its committed offset after a rebalance, through
    aiokafka's `seek_to_committed`, which leaves a partition without one (or at 0) where the
    previous assignment left its fetch position. Records read before the rebalance but dropped
    from the agents' queues were then skipped: the first records of a partition, delivered
    before the group ever committed it, never reached the event log (the scale-out chaos
    scenario lost offsets 0-186 of one partition of `rapport.raw`).
    """
    _SOURCE_TOPICS.update(topics)
    unpatched = Consumer.perform_seek
    if getattr(unpatched, "rapport_patched", False):
        return

    async def perform_seek(self: Any) -> None:
        streams = {tp for tp in self.assignment() if not self._is_changelog_tp(tp)}
        pausing = streams - self._paused_partitions  # those paused already stay paused
        self.pause_partitions(pausing)
        try:
            await unpatched(self)
            for tp in self.assignment():
                if tp.topic in _SOURCE_TOPICS and not self._committed_offset[tp]:
                    await self.seek(tp, 0)  # an offset below the log start resets to the earliest
        finally:
            self.resume_partitions(pausing)

    perform_seek.rapport_patched = True  # type: ignore[attr-defined]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]
