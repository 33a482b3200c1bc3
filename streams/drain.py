"""A bounded wait for in-flight events when the worker stops or gives partitions away.

Before it commits at a stop or a rebalance, Faust waits until every message it handed to an
agent is acknowledged (`Consumer.wait_empty`, no time limit, and deaf to cancellation). It also
empties the agents' inbound queues first; a message dropped from one queue that something still
references is then never acknowledged, and the wait never ends: a worker stopped right after a
burst of events hung until it was killed (the replay swap test, about 3 runs in 5). The wait is
bounded here. Nothing is lost by giving up: a message that was not acknowledged is not committed
(Faust commits each partition up to its first unacknowledged offset), so its events are
processed again by whichever worker owns the partition next; projections and sinks are
idempotent per event id.
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
