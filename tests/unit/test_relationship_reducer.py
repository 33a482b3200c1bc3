"""The contact-times reducer: exact on small cases, and order/duplicate invariant (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from events.ids import event_id
from events.models import Direction, Identity, Interaction, Kind, epoch_ms
from projections.relationship import RelationshipState, apply, fold

BRAND = Identity(platform="x", user_id="1")
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def interaction(
    n: int, contact: str, inbound: bool, at: datetime, platform: str = "x"
) -> Interaction:
    them = Identity(platform=platform, user_id=contact)
    actor, subject = (them, BRAND) if inbound else (BRAND, them)
    return Interaction(
        event_id=event_id("w", platform, f"dm:{n}"),
        workspace="w",
        platform=platform,
        kind=Kind.MESSAGE,
        actor=actor,
        subject=subject,
        direction=Direction.INBOUND if inbound else Direction.OUTBOUND,
        contact=them,
        account=BRAND,
        member="brand",
        occurred_at=at,
        received_at=at,
        object_id=str(n),
    )


def test_contact_times_by_hand() -> None:
    events = [
        interaction(1, "a", True, T0),
        interaction(2, "a", False, T0 + timedelta(hours=1)),
        interaction(3, "a", True, T0 + timedelta(hours=2), platform="x"),
    ]
    state = fold(events)["w|x:a"]
    assert state.first_contact_at == epoch_ms(T0)
    assert state.last_contact_at == epoch_ms(T0 + timedelta(hours=2))
    assert state.last_inbound_at == epoch_ms(T0 + timedelta(hours=2))
    assert state.last_outbound_at == epoch_ms(T0 + timedelta(hours=1))
    assert state.interactions == 3


def test_a_duplicate_counts_once_even_far_outside_the_lateness_window() -> None:
    first = interaction(1, "a", True, T0)
    later = interaction(2, "a", False, T0 + timedelta(days=60))
    state = apply(apply(apply(None, first), later), first)
    assert state.interactions == 2
    assert state.first_contact_at == epoch_ms(T0)


def test_state_survives_its_table_encoding() -> None:
    state = fold([interaction(1, "a", True, T0), interaction(2, "a", False, T0)])["w|x:a"]
    assert RelationshipState.from_dict(state.to_dict()) == state


def _comparable(states: dict[str, RelationshipState]) -> dict[str, tuple[object, ...]]:
    return {
        k: (
            s.first_contact_at,
            s.last_contact_at,
            s.last_inbound_at,
            s.last_outbound_at,
            s.last_platform,
            s.interactions,
        )
        for k, s in states.items()
    }


event_lists = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.booleans(),
        st.integers(min_value=0, max_value=6 * 24 * 60),  # minutes within the lateness window
        st.sampled_from(["x", "mastodon"]),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(rows=event_lists, data=st.data())
def test_order_and_duplicates_do_not_change_results(
    rows: list[tuple[str, bool, int, str]], data: st.DataObject
) -> None:
    events = [
        interaction(n, c, inbound, T0 + timedelta(minutes=m), platform=p)
        for n, (c, inbound, m, p) in enumerate(rows)
    ]
    baseline = _comparable(fold(sorted(events, key=lambda e: (e.occurred_at, e.event_id))))
    shuffled = data.draw(st.permutations(events))
    duplicated = shuffled + data.draw(st.lists(st.sampled_from(events), max_size=10))
    assert _comparable(fold(list(shuffled))) == baseline
    assert _comparable(fold(duplicated)) == baseline


@settings(max_examples=100, deadline=None)
@given(rows=event_lists, workers=st.integers(min_value=1, max_value=4))
def test_splitting_relationships_over_workers_changes_nothing(
    rows: list[tuple[str, bool, int, str]], workers: int
) -> None:
    events = [
        interaction(n, c, inbound, T0 + timedelta(minutes=m), platform=p)
        for n, (c, inbound, m, p) in enumerate(rows)
    ]
    merged: dict[str, RelationshipState] = {}
    for w in range(workers):
        part = [e for e in events if e.contact is not None and hash(e.contact.key) % workers == w]
        merged.update(fold(part))
    assert _comparable(merged) == _comparable(fold(events))
