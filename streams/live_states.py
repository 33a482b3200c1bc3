"""The decoded relationship states a worker keeps at hand, bounded.

Decoding a state from the table costs far more than folding a batch into it, so the worker keeps
the states it touched recently. The table stays the truth; this is a cache of it, and without a
bound it held every relationship the worker ever saw (memory grew for as long as new contacts
arrived). The least recently used states are dropped first.
"""

from __future__ import annotations

from collections import OrderedDict

from projections.relationship import RelationshipState


class LiveStates:
    """At most `capacity` states by relationship key, least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._states: OrderedDict[bytes, RelationshipState] = OrderedDict()

    def get(self, key: bytes) -> RelationshipState | None:
        state = self._states.get(key)
        if state is not None:
            self._states.move_to_end(key)
        return state

    def put(self, key: bytes, state: RelationshipState) -> None:
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def clear(self) -> None:
        self._states.clear()

    def __len__(self) -> int:
        return len(self._states)
