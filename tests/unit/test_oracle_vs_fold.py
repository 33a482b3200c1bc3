"""The relationship fold equals the literal oracle of docs/metrics.md on real and generated data.

Real data: SNAP CollegeMsg (59,835 DMs) and two Reddit comment trees. Generated data: small
random relationships with many equal timestamps, every kind and intent, three platforms. Orders:
sorted, shuffled with every event on time (within the 7-day lateness), and with duplicates.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.models import (
    CONVERSATIONAL_KINDS,
    Direction,
    Identity,
    Intent,
    Interaction,
    Kind,
    epoch_ms,
)
from projections.policy import DAY_MS, DEFAULT_POLICY, Policy
from projections.relationship import fold, view_row
from tests.datasets import (
    REDDIT_THREADS,
    collegemsg_interactions,
    collegemsg_most_active,
    most_replied_authors,
    reddit_interactions,
)
from tests.oracle import compare, expected_relationships

P2 = Policy(version="p2", half_life_days=7, weights={"outbound.message.neutral": 2.0})
HOUR_MS = 3_600_000
_EPOCH_DT = datetime(1970, 1, 1, tzinfo=UTC)


def fold_rows(
    events: list[Interaction], policy: Policy = DEFAULT_POLICY, contacts: dict | None = None
) -> dict[str, dict]:
    return {k: view_row(s, policy) for k, s in fold(events, policy, contacts).items()}


def differences(
    events: list[Interaction], policy: Policy = DEFAULT_POLICY, contacts: dict | None = None
) -> list[str]:
    return compare(
        fold_rows(events, policy, contacts), expected_relationships(events, policy, contacts)
    )


def in_order(events: list[Interaction]) -> list[Interaction]:
    return sorted(events, key=lambda e: (e.occurred_at, e.event_id))


@cache
def dataset(name: str) -> tuple[Interaction, ...]:
    if name == "college-top3":
        owned = set(collegemsg_most_active(3))
        assert owned == {"323", "9", "12"}
        return tuple(collegemsg_interactions(owned))
    if name == "college-top20":
        return tuple(collegemsg_interactions(set(collegemsg_most_active(20))))
    path = REDDIT_THREADS[0 if name == "reddit-funny" else 1]
    return tuple(reddit_interactions(path, set(most_replied_authors(path))))


DATASETS = ["college-top3", "college-top20", "reddit-funny", "reddit-announcements"]


def on_time_shuffle(events: list[Interaction], seed: int) -> list[Interaction]:
    """Shuffle within blocks spanning under 6 days, blocks in time order: nothing is late."""
    rng = random.Random(seed)
    ordered = in_order(events)
    blocks: list[list[Interaction]] = []
    for event in ordered:
        if blocks and event.occurred_at - blocks[-1][0].occurred_at < timedelta(days=6):
            blocks[-1].append(event)
        else:
            blocks.append([event])
    result = []
    for block in blocks:
        rng.shuffle(block)
        result.extend(block)
    return result


@pytest.mark.parametrize("name", DATASETS)
def test_real_data_in_order(name: str) -> None:
    events = list(dataset(name))
    expected = expected_relationships(events)
    # not vacuous: both directions, replies and qualified conversations occur
    assert len(expected) >= 20
    assert sum(row["our_replies"] for row in expected.values()) > 0
    assert sum(row["their_replies"] for row in expected.values()) > 0
    assert compare(fold_rows(in_order(events)), expected) == []
    if name.startswith("college"):
        assert len(events) == 59_835
        assert sum(row["qualified_conversations"] for row in expected.values()) > 0


def test_college_top20_has_internal_messages() -> None:
    directions = {e.direction for e in dataset("college-top20")}
    assert Direction.INTERNAL in directions and Direction.EXTERNAL in directions


@pytest.mark.parametrize("name", DATASETS)
def test_real_data_shuffled_on_time(name: str) -> None:
    events = list(dataset(name))
    shuffled = on_time_shuffle(events, seed=7)
    assert shuffled != in_order(events)
    assert differences(shuffled) == []


@pytest.mark.parametrize("name", DATASETS)
def test_real_data_with_duplicates(name: str) -> None:
    rng = random.Random(11)
    events = on_time_shuffle(list(dataset(name)), seed=3)
    for _ in range(200):
        position = rng.randrange(1, len(events) + 1)
        events.insert(position, events[rng.randrange(position)])
    assert compare(fold_rows(events), expected_relationships(list(dataset(name)))) == []


@pytest.mark.parametrize("name", ["college-top3", "reddit-funny"])
def test_policy_change(name: str) -> None:
    events = in_order(list(dataset(name)))
    p1_rows, p2_rows = fold_rows(events, DEFAULT_POLICY), fold_rows(events, P2)
    assert compare(p2_rows, expected_relationships(events, P2)) == []
    assert any(p1_rows[k]["strength"] != p2_rows[k]["strength"] for k in p1_rows), (
        "half-life 7 days must change strength"
    )
    if name.startswith("college"):  # all DMs are neutral messages: outbound weight 2
        assert any(p2_rows[k]["gives_out"] == 2 * p1_rows[k]["gives_out"] > 0 for k in p1_rows)


# --- generated relationships ----------------------------------------------------------------

PLATFORMS = ("x", "reddit", "email")
# 21:00 UTC: events a few hours apart fall on different UTC days
BASE_MS = 1_700_000_000_000 // DAY_MS * DAY_MS - 3 * HOUR_MS
EDGE_OFFSETS = [0, 1, 3 * HOUR_MS, 3 * HOUR_MS - 1, DAY_MS, 7 * DAY_MS - 1, 7 * DAY_MS]
EDGE_OFFSETS += [7 * DAY_MS + 1, 7 * DAY_MS + 3 * HOUR_MS, 14 * DAY_MS, 20 * DAY_MS]


def offsets(span_days: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([o for o in EDGE_OFFSETS if o <= span_days * DAY_MS]),
        st.integers(0, span_days * 2).map(lambda half_days: half_days * 12 * HOUR_MS),
        st.integers(0, span_days * DAY_MS),
    )


@st.composite
def relationships(draw: st.DrawFn, span_days: int = 20) -> tuple[list[Interaction], dict]:
    """1-40 interactions with 2-3 contacts; identities linked across platforms or not."""
    n = draw(st.integers(1, 40))
    # some cases stay on fewer platforms and one workspace: denser relationships, more qualified
    platforms = draw(st.sampled_from([PLATFORMS, PLATFORMS, ("x",), ("x", "email")]))
    workspaces = draw(st.sampled_from([["w"], ["w", "w", "w", "v"]]))
    chatty = draw(st.booleans())  # only conversational turns, only inbound and outbound
    kinds = sorted(CONVERSATIONAL_KINDS) if chatty else list(Kind)
    directions = ["inbound", "outbound"] if chatty else ["inbound"] * 4 + ["outbound"] * 4
    direction = st.sampled_from(directions if chatty else [*directions, "internal", "external"])
    people = draw(st.integers(2, 3))
    ids = draw(
        st.lists(
            st.text("0123456789abcdef", min_size=8, max_size=10),
            min_size=n,
            max_size=n,
            unique=True,
        )
    )
    events = []
    for event_id in ids:
        platform = draw(st.sampled_from(platforms))
        person = f"u{draw(st.integers(0, people - 1))}"
        at = _EPOCH_DT + timedelta(milliseconds=BASE_MS + draw(offsets(span_days)))
        events.append(
            Interaction(
                event_id=event_id,
                workspace=draw(st.sampled_from(workspaces)),
                occurred_at=at,
                received_at=at,
                platform=platform,
                kind=draw(st.sampled_from(kinds)),
                intent=draw(st.sampled_from(list(Intent))),
                direction=draw(direction),
                actor=Identity(platform=platform, user_id="owned"),
                contact=Identity(platform=platform, user_id=person),
                member=draw(st.sampled_from(["ma", "mb", None])),
                conversation_id=draw(st.sampled_from([None, None, "c1", "c2"])),
                object_id=event_id,
            )
        )
    contacts = {}
    if draw(st.booleans()):
        contacts = {f"{p}:u{i}": f"person:u{i}" for p in PLATFORMS for i in range(people)}
    return events, contacts


@st.composite
def on_time_arrivals(draw: st.DrawFn, events: list[Interaction]) -> list[Interaction]:
    """A permutation where each event is at or after the newest seen minus 7 days, plus copies.

    Arriving at `occurred_at + delay` with delay in [0, 7 days] keeps every event on time: an
    earlier arrival f has t_f <= t_f + d_f <= t_e + d_e <= t_e + 7 days.
    """
    delay = st.one_of(st.sampled_from([0, 7 * DAY_MS]), st.integers(0, 7 * DAY_MS))
    keyed = [
        (epoch_ms(e.occurred_at) + draw(delay), draw(st.integers(0, 1_000)), i)
        for i, e in enumerate(events)
    ]
    arrivals = [events[i] for *_, i in sorted(keyed)]
    for _ in range(draw(st.integers(0, 3))):  # duplicates count once, however late they come
        first = draw(st.integers(0, len(arrivals) - 1))  # (after the original: a copy arriving
        arrivals.insert(draw(st.integers(first + 1, len(arrivals))), arrivals[first])  # first
        # would move the newest-seen time and make other events late)
    return arrivals


GENERATED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@GENERATED
@given(relationships())
def test_generated_in_order(case: tuple[list[Interaction], dict]) -> None:
    events, contacts = case
    assert differences(in_order(events), contacts=contacts) == []


@GENERATED
@given(st.data())
def test_generated_on_time_permutation(data: st.DataObject) -> None:
    events, contacts = data.draw(relationships())
    arrivals = data.draw(on_time_arrivals(events))
    expected = expected_relationships(events, contacts=contacts)
    assert compare(fold_rows(arrivals, contacts=contacts), expected) == []


@settings(max_examples=100, deadline=None)
@given(relationships(span_days=200))
def test_generated_over_two_hundred_days(case: tuple[list[Interaction], dict]) -> None:
    """Sparse relationships spanning more than the 90-day trailing window and the cadences."""
    events, contacts = case
    assert differences(in_order(events), P2, contacts) == []
    assert differences(in_order(events), contacts=contacts) == []


# --- boundaries, spelled out: the oracle's reading and the fold agree on each ----------------


def ev(
    event_id: str,
    at_ms: int,
    direction: str,
    kind: str = "message",
    intent: str = "neutral",
    platform: str = "x",
    conversation_id: str | None = None,
) -> Interaction:
    at = _EPOCH_DT + timedelta(milliseconds=BASE_MS + at_ms)
    return Interaction(
        event_id=event_id,
        workspace="w",
        occurred_at=at,
        received_at=at,
        platform=platform,
        kind=kind,
        intent=intent,
        direction=direction,
        actor=Identity(platform=platform, user_id="owned"),
        contact=Identity(platform=platform, user_id="u0"),
        conversation_id=conversation_id,
        object_id=event_id,
    )


def only_row(events: list[Interaction], contacts: dict | None = None) -> dict:
    assert differences(events, contacts=contacts) == []
    (row,) = expected_relationships(events, contacts=contacts).values()
    return row


@pytest.mark.parametrize(("gap_ms", "qualified"), [(7 * DAY_MS - 1, 1), (7 * DAY_MS, 0)])
def test_run_gap_of_seven_days_starts_a_new_run(gap_ms: int, qualified: int) -> None:
    events = [ev("e0000001", 0, "inbound"), ev("e0000002", HOUR_MS, "outbound")]
    events += [ev("e0000003", HOUR_MS + gap_ms, "inbound")]
    events += [ev("e0000004", 2 * HOUR_MS + gap_ms, "outbound")]
    row = only_row(events)
    assert row["qualified_conversations"] == qualified
    assert row["qualified_at"] == ([epoch_ms(events[3].occurred_at)] if qualified else [])


@pytest.mark.parametrize(("gap_ms", "moves"), [(7 * DAY_MS, 1), (7 * DAY_MS + 1, 0)])
def test_platform_move_within_seven_days_inclusive(gap_ms: int, moves: int) -> None:
    events = [ev("e0000001", 0, "inbound", platform="x")]
    events += [ev("e0000002", gap_ms, "outbound", platform="email")]
    row = only_row(events, contacts={"x:u0": "p", "email:u0": "p"})
    assert row["platform_moves"] == moves


@pytest.mark.parametrize(("inbound_id", "our_replies"), [("e0000001", 1), ("e0000003", 0)])
def test_equal_times_are_ordered_by_event_id(inbound_id: str, our_replies: int) -> None:
    row = only_row([ev("e0000002", 0, "outbound"), ev(inbound_id, 0, "inbound")])
    assert row["our_replies"] == our_replies
    assert row["awaiting_reply_since"] == (None if our_replies else BASE_MS)
    assert row["our_latency_p50_s"] == (0.0 if our_replies else None)


@pytest.mark.parametrize(("give_day", "ask_only"), [(-90, True), (-89, False)])
def test_trailing_window_is_ninety_days_ending_with_the_last_day(
    give_day: int, ask_only: bool
) -> None:
    # BASE_MS is 21:00 UTC, so +3 h starts a UTC day
    start = 3 * HOUR_MS + 100 * DAY_MS
    events = [ev("e0000001", start + give_day * DAY_MS, "outbound", intent="give")]
    events += [ev("e0000002", start + DAY_MS - 1, "outbound", intent="ask")]
    assert only_row(events)["ask_only"] is ask_only


def test_nearest_rank_percentiles_and_even_median_gap() -> None:
    events, t = [], 0
    for i, latency_s in enumerate([5, 1, 4, 2, 3, 10, 9, 8, 7, 6, 11]):
        events.append(ev(f"e{2 * i:07d}", t, "inbound"))
        events.append(ev(f"e{2 * i + 1:07d}", t + latency_s * 1000, "outbound"))
        t += DAY_MS * (1 if i % 2 else 2)  # ten gaps: five of 1 day, five of 2
    row = only_row(events)
    assert (row["our_replies"], row["our_latency_p50_s"], row["our_latency_p90_s"]) == (11, 6, 10)
    assert row["typical_gap_days"] == 1.5
