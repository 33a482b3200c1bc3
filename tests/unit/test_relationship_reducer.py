"""The relationship reducer on hand-worked cases, plus order/duplicate/partition invariance."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from events.ids import event_id
from events.models import Direction, Identity, Intent, Interaction, Kind, epoch_ms
from projections.latency import Latencies
from projections.policy import DEFAULT_POLICY, Policy
from projections.relationship import (
    RelationshipState,
    apply,
    apply_all,
    fold,
    touch_of,
    view_row,
)

BRAND = Identity(platform="x", user_id="1")
T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)


def interaction(
    n: int,
    contact: str,
    inbound: bool,
    at: datetime,
    platform: str = "x",
    kind: Kind = Kind.MESSAGE,
    intent: Intent = Intent.NEUTRAL,
    conversation_id: str | None = None,
    member: str = "brand",
) -> Interaction:
    them = Identity(platform=platform, user_id=contact)
    actor, subject = (them, BRAND) if inbound else (BRAND, them)
    return Interaction(
        event_id=event_id("w", platform, f"obj:{n}"),
        workspace="w",
        platform=platform,
        kind=kind,
        actor=actor,
        subject=subject,
        direction=Direction.INBOUND if inbound else Direction.OUTBOUND,
        contact=them,
        account=BRAND,
        member=member,
        occurred_at=at,
        received_at=at,
        object_id=str(n),
        intent=intent,
        conversation_id=conversation_id,
    )


def view(events: list[Interaction], policy: Policy = DEFAULT_POLICY) -> dict[str, Any]:
    states = fold(events, policy)
    assert len(states) == 1
    return view_row(next(iter(states.values())), policy)


def ms(at: datetime) -> int:
    return epoch_ms(at)


def test_contact_times_and_latencies_by_hand() -> None:
    v = view(
        [
            interaction(1, "a", True, T0),  # opens our wait
            interaction(2, "a", True, T0 + H),  # wait already open: keeps its start
            interaction(3, "a", False, T0 + 3 * H),  # we answer after 3 h; opens their wait
            interaction(4, "a", False, T0 + 4 * H),  # no wait open for us: nothing
            interaction(5, "a", True, T0 + 5 * H),  # they answer 2 h after our first
            interaction(6, "a", True, T0 + 6 * H, kind=Kind.REACTION),  # not conversational
        ]
    )
    assert v["first_contact_at"] == ms(T0) and v["last_contact_at"] == ms(T0 + 6 * H)
    assert v["last_inbound_at"] == ms(T0 + 6 * H) and v["last_outbound_at"] == ms(T0 + 4 * H)
    assert v["interactions"] == 6
    assert (v["our_replies"], v["our_latency_p50_s"], v["our_latency_p90_s"]) == (
        1,
        10800.0,
        10800.0,
    )
    assert (v["their_replies"], v["their_latency_p50_s"]) == (1, 7200.0)
    assert v["awaiting_reply_since"] == ms(T0 + 5 * H)


def test_nearest_rank_percentiles() -> None:
    lat = Latencies()
    for value in [5000, 1000, 3000, 2000, 4000]:
        lat = lat.add(value, 10_000)
    # ceil(0.5 * 5) = 3rd of [1,2,3,4,5] s; ceil(0.9 * 5) = 5th
    assert (lat.percentile_s(0.5), lat.percentile_s(0.9)) == (3.0, 5.0)
    assert Latencies().percentile_s(0.5) is None


def test_sketch_past_the_limit_stays_within_one_percent() -> None:
    values = [(i * 7919) % 100_000 + 1 for i in range(3000)]
    exact, sketch = Latencies(), Latencies()
    for value in values:
        exact = exact.add(value, 10_000)
        sketch = sketch.add(value, 1000)
    assert sketch.sketched and sketch.count == 3000 and not exact.sketched
    for p in (0.5, 0.9, 0.99):
        truth, approx = exact.percentile_s(p), sketch.percentile_s(p)
        assert truth is not None and approx is not None
        assert abs(approx - truth) <= 0.01 * truth + 0.001
    assert Latencies.from_json(sketch.to_json()) == sketch


def test_give_take_reciprocity_and_ask_only() -> None:
    asks = [interaction(i, "a", False, T0 + i * H, intent=Intent.ASK) for i in range(3)]
    v = view(asks)
    assert v["asks_out"] == 3.0 and v["gives_out"] == 0.0 and v["ask_only"] is True
    assert v["reciprocity"] is None and v["balance"] == -3.0
    gift = interaction(9, "a", False, T0 + 5 * H, kind=Kind.SHARE)  # structural give, weight 0.5
    back = interaction(10, "a", True, T0 + 6 * H, kind=Kind.INTRODUCTION, intent=Intent.GIVE)
    v = view([*asks, gift, back])
    assert v["gives_out"] == 0.5 and v["gives_in"] == 3.0 and v["ask_only"] is False
    assert v["reciprocity"] == 0.5 / 3.0 and v["balance"] == 0.5 - 3.0


def test_ask_only_looks_at_the_trailing_ninety_days() -> None:
    old_give = interaction(1, "a", False, T0, kind=Kind.SHARE)
    recent_ask = interaction(2, "a", False, T0 + 100 * D, intent=Intent.ASK)
    assert view([old_give, recent_ask])["ask_only"] is True
    assert (
        view([old_give, interaction(3, "a", False, T0 + 80 * D, intent=Intent.ASK)])["ask_only"]
        is False
    )


def test_strength_decays_with_the_half_life_and_is_valid_at_the_last_event() -> None:
    v = view([interaction(1, "a", True, T0), interaction(2, "a", False, T0 + 30 * D)])
    assert v["strength_at"] == ms(T0 + 30 * D)
    assert abs(v["strength"] - (1.0 * 0.5 + 1.0)) < 1e-12


def test_keep_in_touch_qualified_and_stage() -> None:
    turns = [
        interaction(1, "a", True, T0, conversation_id="c1"),
        interaction(2, "a", False, T0 + 2 * D, conversation_id="c1"),
        interaction(3, "a", True, T0 + 3 * D, conversation_id="c1"),
        interaction(4, "a", False, T0 + 7 * D, conversation_id="c1"),  # qualifies c1 here
        interaction(5, "a", True, T0 + 8 * D, conversation_id="c1"),  # already counted
    ]
    v = view(turns)
    assert v["qualified_conversations"] == 1 and v["qualified_at"] == [ms(T0 + 7 * D)]
    assert v["typical_gap_days"] == 1.5  # day gaps 2, 1, 4, 1 -> median 1.5
    assert v["touch_due_at"] == ms(T0 + 8 * D) + 30 * 86_400_000
    assert v["stage"] == "audience"  # reciprocity 1 with two-way activity in 90 days
    one_way = view([interaction(1, "b", False, T0)])
    assert one_way["stage"] == "attention" and one_way["touch_due_at"] == ms(T0) + 90 * 86_400_000
    assert view([interaction(1, "b", True, T0, kind=Kind.REACTION)])["stage"] == "attraction"


def test_idless_runs_split_on_seven_day_gaps() -> None:
    run1 = [interaction(i, "a", i % 2 == 0, T0 + i * D) for i in range(4)]  # in,out,in,out
    run2 = [interaction(10 + i, "a", i % 2 == 0, T0 + (20 + i) * D) for i in range(3)]
    v = view(run1 + run2)
    assert v["qualified_conversations"] == 1 and v["qualified_at"] == [ms(T0 + 3 * D)]


def test_platform_moves_members_and_platforms_across_linked_identities() -> None:
    events = [
        interaction(1, "a", True, T0, platform="x", member="brand"),
        interaction(2, "a", False, T0 + D, platform="slack", member="ann"),  # a move
        interaction(3, "a", True, T0 + 20 * D, platform="x"),  # a move, but 19 days later
    ]
    assert len(fold(events)) == 2  # without a link, x:a and slack:a are two contacts
    (state,) = fold(events, contacts={"slack:a": "x:a"}).values()
    v = view_row(state)
    assert state.contact_id == "x:a" and v["interactions"] == 3
    assert v["platform_moves"] == 1
    assert v["platforms"] == ["slack", "x"] and v["members"] == ["ann", "brand"]


def test_duplicates_count_once_even_far_outside_the_lateness_window() -> None:
    first = interaction(1, "a", True, T0)
    later = interaction(2, "a", False, T0 + 60 * D)
    state = apply(apply(apply(None, first), later), first)
    assert view_row(state)["interactions"] == 2 and view_row(state)["late_events"] == 0


def test_a_late_event_is_applied_and_counted() -> None:
    early = interaction(1, "a", True, T0 + 30 * D)
    late = interaction(2, "a", False, T0)
    v = view_row(apply(apply(None, early), late))
    assert v["late_events"] == 1 and v["interactions"] == 2
    assert v["first_contact_at"] == ms(T0) and v["our_replies"] == 0  # waits do not see it


def test_state_survives_its_table_encoding() -> None:
    events = [interaction(i, "a", i % 3 == 0, T0 + i * H, conversation_id="c") for i in range(30)]
    state = next(iter(fold(events).values()))
    assert RelationshipState.from_dict(state.to_dict()) == state
    assert RelationshipState.from_json(state.to_json()) == state  # the worker's typed decode


def test_touches_share_their_repeated_strings_however_they_were_decoded() -> None:
    """A window's touches repeat kind, intent, platform, conversation and member: one copy each
    (the live worker keeps every touch of a window in memory; `bench/bench_live_memory.py`)."""
    from events.models import dump_event
    from projections.relationship import touch_from_doc

    events = [interaction(i, "a", i % 2 == 0, T0 + i * H, conversation_id="c") for i in range(3)]
    stored = json.loads(next(iter(fold(events).values())).to_json())
    decoded = [
        [touch_of(e) for e in events],
        [touch_from_doc(json.loads(dump_event(e))) for e in events],
        list(RelationshipState.from_dict(stored).timeline),
    ]
    for touches in decoded:
        assert [t.to_json() for t in touches] == [touch_of(e).to_json() for e in events]
    every = [t for touches in decoded for t in touches]
    for name in ("kind", "intent", "platform", "conversation_id", "member"):
        values = {id(getattr(t, name)) for t in every}
        assert len(values) == 1, name


def _views(events: list[Interaction]) -> dict[str, dict[str, Any]]:
    return {k: view_row(s) for k, s in fold(events).items()}


event_lists = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.booleans(),
        st.integers(min_value=0, max_value=6 * 24),  # hours: all inside the 7-day window
        st.sampled_from(list(Kind)),
        st.sampled_from(list(Intent)),
        st.sampled_from([None, "c1", "c2"]),
    ),
    min_size=1,
    max_size=40,
)


def _events(rows: list[tuple[str, bool, int, Kind, Intent, str | None]]) -> list[Interaction]:
    return [
        interaction(n, c, inbound, T0 + h * H, kind=k, intent=i, conversation_id=cid)
        for n, (c, inbound, h, k, i, cid) in enumerate(rows)
    ]


@settings(max_examples=200, deadline=None)
@given(rows=event_lists, data=st.data())
def test_order_within_the_window_and_duplicates_do_not_change_results(
    rows: list[tuple[str, bool, int, Kind, Intent, str | None]], data: st.DataObject
) -> None:
    events = _events(rows)
    baseline = _views(sorted(events, key=lambda e: (e.occurred_at, e.event_id)))
    shuffled = data.draw(st.permutations(events))
    duplicated = list(shuffled) + data.draw(st.lists(st.sampled_from(events), max_size=10))
    assert _views(list(shuffled)) == _views(duplicated)
    got = _views(list(shuffled))
    for key, row in baseline.items():
        assert got[key] | {"revision": 0} == row | {"revision": 0}


@settings(max_examples=100, deadline=None)
@given(rows=event_lists, workers=st.integers(min_value=1, max_value=4))
def test_splitting_relationships_over_workers_changes_nothing(
    rows: list[tuple[str, bool, int, Kind, Intent, str | None]], workers: int
) -> None:
    events = _events(rows)
    merged: dict[str, dict[str, Any]] = {}
    for w in range(workers):
        part = [e for e in events if e.contact is not None and hash(e.contact.key) % workers == w]
        merged.update(_views(part))
    assert merged == _views(events)


def test_a_late_turn_gives_the_exact_qualification_time() -> None:
    """Found by the independent oracle: in order the turns are in 0, in 30m, out 1h, out 2h."""
    arrivals = [
        interaction(1, "a", True, T0, conversation_id="c1"),
        interaction(2, "a", False, T0 + H, conversation_id="c1"),
        interaction(3, "a", False, T0 + 2 * H, conversation_id="c1"),
        interaction(4, "a", False, T0 + 10 * D, kind=Kind.REACTION),
        interaction(5, "a", True, T0 + timedelta(minutes=30), conversation_id="c1"),  # late
    ]
    state = None
    for event in arrivals:
        state = apply(state, event)
    assert state is not None
    v = view_row(state)
    assert v["late_events"] == 1
    assert v["qualified_conversations"] == 1 and v["qualified_at"] == [ms(T0 + 2 * H)]


CAPPED = Policy(lateness_touches=4)


@settings(max_examples=150, deadline=None)
@given(rows=event_lists, data=st.data())
def test_the_touch_cap_keeps_state_bounded_and_in_order_results_exact(
    rows: list[tuple[str, bool, int, Kind, Intent, str | None]], data: st.DataObject
) -> None:
    """In order, settling early changes nothing; a reordering inside the cap changes nothing."""
    events = sorted(_events(rows), key=lambda e: (e.occurred_at, e.event_id))
    uncapped = {k: view_row(s, CAPPED) for k, s in fold(events).items()}
    capped = fold(events, CAPPED)
    assert all(len(s.timeline) <= 4 for s in capped.values())
    assert {k: view_row(s, CAPPED) for k, s in capped.items()} == uncapped
    # Swap two neighbours of one relationship: still inside the cap, so still exact.
    if len(events) >= 2:
        i = data.draw(st.integers(min_value=0, max_value=len(events) - 2))
        swapped = [*events[:i], events[i + 1], events[i], *events[i + 2 :]]
        got = {k: view_row(s, CAPPED) for k, s in fold(swapped, CAPPED).items()}
        for key, row in uncapped.items():
            assert got[key] | {"revision": 0} == row | {"revision": 0}


def test_an_event_older_than_the_capped_window_is_late_and_counted_once() -> None:
    turns = [interaction(i, "a", i % 2 == 0, T0 + i * H, conversation_id="c") for i in range(1, 8)]
    early = interaction(0, "a", True, T0, conversation_id="c")  # before every settled touch
    state = None
    for event in [*turns, early, early]:
        state = apply(state, event, CAPPED)
    assert state is not None and len(state.timeline) == 4
    assert state.horizon == (ms(turns[2].occurred_at), turns[2].event_id)
    v = view_row(state, CAPPED)
    assert (v["late_events"], v["interactions"], v["first_contact_at"]) == (1, 8, ms(T0))
    # The stored state keeps the horizon and the fingerprints: the duplicate stays a duplicate.
    restored = RelationshipState.from_dict(state.to_dict())
    assert restored == state
    again = apply(restored, early, CAPPED)
    assert view_row(again, CAPPED)["interactions"] == 8


def test_latencies_share_their_buffer_without_seeing_each_other() -> None:
    base = Latencies().add(30, 10).add(10, 10)
    left, right = base.add(20, 10), base.add(5, 10)  # right branches off the shared buffer
    assert (base.exact, left.exact, right.exact) == ((10, 30), (10, 20, 30), (5, 10, 30))
    assert left.buffer is base.buffer and right.buffer is not base.buffer
    assert Latencies.from_json(left.to_json()) == left and left != right
    assert Latencies().add(7, 10).exact == (7,) and Latencies().exact == ()


def test_state_written_without_horizon_still_reads() -> None:
    events = [interaction(i, "a", i % 2 == 0, T0 + i * H) for i in range(5)]
    state = next(iter(fold(events).values()))
    doc = state.to_dict()
    del doc["horizon"]
    # as the seen-set was stored then: first 16 digits of each id, in the order they arrived
    doc["seen"] = "".join(e.event_id[:16] for e in reversed(events))
    assert RelationshipState.from_dict(doc) == state
    assert RelationshipState.from_json(json.dumps(doc).encode()) == state
    doc["seen"] = [e.event_id[:16] for e in events]  # the first encoding: a list
    assert RelationshipState.from_json(json.dumps(doc).encode()) == state


@settings(max_examples=150, deadline=None)
@given(
    rows=event_lists,
    data=st.data(),
    stride=st.integers(min_value=2, max_value=7),
    cap=st.integers(min_value=2, max_value=40),
)
def test_sparse_snapshots_and_reloaded_states_fold_like_dense_ones(
    rows: list[tuple[str, bool, int, Kind, Intent, str | None]],
    data: st.DataObject,
    stride: int,
    cap: int,
) -> None:
    """Any arrival order, late events past a small cap, a state read back from its table in
    between: keeping one snapshot in `stride` gives exactly the states of keeping them all."""
    policy = Policy(lateness_touches=cap, lateness_days=2)
    events = data.draw(st.permutations(_events(rows)))
    events += data.draw(st.lists(st.sampled_from(events), max_size=5)) if events else []
    reload_at = data.draw(st.integers(min_value=0, max_value=max(len(events), 1)))
    dense: dict[str, RelationshipState] = {}
    sparse: dict[str, RelationshipState] = {}
    for n, event in enumerate(events):
        assert event.contact is not None
        key = event.contact.key
        touch = touch_of(event)
        fresh = RelationshipState(workspace="w", contact_id=key)
        dense[key] = apply_all(dense.get(key, fresh), [touch], policy)
        sparse[key] = apply_all(sparse.get(key, fresh), [touch], policy, stride=stride)
        # The stored JSON, partly extended from the previous state's, is the full encoding.
        assert json.loads(sparse[key].to_json()) == json.loads(json.dumps(sparse[key].to_dict()))
        assert sparse[key].to_json() == msgspec.json.encode(sparse[key].to_dict())  # same bytes
        if n == reload_at:
            sparse = {k: RelationshipState.from_json(s.to_json()) for k, s in sparse.items()}
    assert sparse == dense
    assert {k: view_row(s, policy) for k, s in sparse.items()} == {
        k: view_row(s, policy) for k, s in dense.items()
    }


def test_imported_ids_count_once_each_and_stay_apart_after_read_back() -> None:
    """An imported event keeps its own id: any length from 8, any prefix in common."""
    ids = ["short-01", "import-event-000001", "import-event-000002", "x" * 128]
    events = [
        interaction(i, "a", i % 2 == 0, T0 + i * H).model_copy(update={"event_id": eid})
        for i, eid in enumerate(ids)
    ]
    state = next(iter(fold(events).values()))
    assert state.view.count == len(ids)  # ids sharing 16 characters are not duplicates
    back = RelationshipState.from_dict(json.loads(state.to_json()))
    assert back == state == RelationshipState.from_json(state.to_json())
    again = apply_all(back, [touch_of(e) for e in events], DEFAULT_POLICY)
    assert again.view.count == len(ids) and again.revision == state.revision
