"""The worker's cache of decoded states stays within its bound and keeps the recent ones."""

from __future__ import annotations

from projections.relationship import RelationshipState
from streams.live_states import LiveStates


def state(n: int) -> RelationshipState:
    return RelationshipState(workspace="w", contact_id=f"x:{n}")


def test_the_least_recently_used_state_goes_first() -> None:
    live = LiveStates(capacity=3)
    for n in range(3):
        live.put(f"w|x:{n}".encode(), state(n))
    assert live.get(b"w|x:0") is not None  # 0 is now the most recent
    live.put(b"w|x:3", state(3))
    assert len(live) == 3
    assert live.get(b"w|x:1") is None  # the least recently used went
    assert [live.get(f"w|x:{n}".encode()) is not None for n in (0, 2, 3)] == [True, True, True]


def test_it_never_holds_more_than_its_capacity() -> None:
    live = LiveStates(capacity=100)
    for n in range(10_000):
        live.put(f"w|x:{n}".encode(), state(n))
    assert len(live) == 100
    assert live.get(b"w|x:9999") is not None and live.get(b"w|x:0") is None
    live.clear()
    assert len(live) == 0
