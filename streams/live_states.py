"""The decoded relationship states a worker keeps at hand, bounded in number and in memory.

Decoding a state from the table costs far more than folding a batch into it, so the worker keeps
the states it touched recently. The table stays the truth; this is a cache of it. Without a
bound in number it held every relationship the worker ever saw, and without a bound in bytes it
grew with every relationship's lateness window (every touch of the last 7 days stays decoded):
the least recently used states are dropped first until both bounds hold.
"""

from __future__ import annotations

from collections import OrderedDict

from projections.relationship import RelationshipState

# What a decoded state holds in memory, as `bench/bench_live_memory.py` measures it (it prints
# this estimate against the traced bytes): a fixed part (keys, tallies, their stored JSON), each
# touch of the lateness window (the touch, the encoding the next write extends, one snapshot in
# 16) and each event fingerprint of the whole history (8 bytes in an array, a little spare).
STATE_BYTES = 3_000
TOUCH_BYTES = 500
SEEN_BYTES = 10


def footprint(state: RelationshipState) -> int:
    """The estimated bytes of one decoded state (a little over what it traces)."""
    return STATE_BYTES + TOUCH_BYTES * len(state.timeline) + SEEN_BYTES * len(state.seen)


class LiveStates:
    """At most `capacity` states and `budget_bytes` of them, least recently used dropped first.

    The state just put always stays, even alone over the budget: the next batch for that
    relationship would decode it again anyway.
    """

    def __init__(self, capacity: int, budget_bytes: int | None = None) -> None:
        self.capacity = capacity
        self.budget_bytes = budget_bytes
        self._states: OrderedDict[bytes, tuple[RelationshipState, int]] = OrderedDict()
        self._bytes = 0
        self.dropped = 0  # states dropped to stay within the bounds, since the start

    def get(self, key: bytes) -> RelationshipState | None:
        held = self._states.get(key)
        if held is None:
            return None
        self._states.move_to_end(key)
        return held[0]

    def put(self, key: bytes, state: RelationshipState) -> None:
        size = footprint(state)
        old = self._states.get(key)
        if old is not None:
            self._bytes -= old[1]
        self._states[key] = (state, size)
        self._states.move_to_end(key)
        self._bytes += size
        while len(self._states) > 1 and (
            len(self._states) > self.capacity
            or (self.budget_bytes is not None and self._bytes > self.budget_bytes)
        ):
            _, (_, gone) = self._states.popitem(last=False)
            self._bytes -= gone
            self.dropped += 1

    def clear(self) -> None:
        self._states.clear()
        self._bytes = 0

    @property
    def bytes(self) -> int:
        """The estimated bytes of the states held (`footprint`)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._states)
