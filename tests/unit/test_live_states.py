"""The worker's cache of decoded states stays within its bounds and keeps the recent ones."""

from __future__ import annotations

from projections import seen as seen_set
from projections.relationship import RelationshipState
from projections.tally import Touch
from streams.live_states import SEEN_BYTES, STATE_BYTES, TOUCH_BYTES, LiveStates, footprint

T0 = 1_700_000_000_000


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


def grown(n: int, touches: int) -> RelationshipState:
    """A state with `touches` touches in its window (and as many fingerprints)."""
    timeline = tuple(
        Touch(T0 + i, f"{i:016x}{n:016x}", i % 2 == 0, "message", True, "neutral", "x")
        for i in range(touches)
    )
    return RelationshipState(
        workspace="w",
        contact_id=f"x:{n}",
        timeline=timeline,
        seen=seen_set.merged(
            seen_set.empty(), {seen_set.fingerprint(t.event_id) for t in timeline}
        ),
    )


def test_it_drops_the_least_recent_states_to_stay_within_its_memory_budget() -> None:
    one = footprint(grown(0, 100))
    assert one == STATE_BYTES + 100 * (TOUCH_BYTES + SEEN_BYTES)
    live = LiveStates(capacity=1_000, budget_bytes=3 * one)
    for n in range(5):
        live.put(f"w|x:{n}".encode(), grown(n, 100))
    assert len(live) == 3 and live.bytes == 3 * one and live.dropped == 2
    assert [live.get(f"w|x:{n}".encode()) is not None for n in range(5)] == [0, 0, 1, 1, 1]
    live.put(b"w|x:4", grown(4, 10))  # a state replaced by a smaller one frees its difference
    assert live.bytes == 2 * one + footprint(grown(4, 10))


def test_a_state_larger_than_the_whole_budget_is_still_kept_alone() -> None:
    live = LiveStates(capacity=1_000, budget_bytes=1_000)
    live.put(b"w|x:0", grown(0, 1))
    live.put(b"w|x:1", grown(1, 50))
    assert len(live) == 1 and live.get(b"w|x:1") is not None and live.dropped == 1
    live.clear()
    assert len(live) == 0 and live.bytes == 0
