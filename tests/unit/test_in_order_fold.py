"""The replay's fold (`fold_in_order`, `replayed`) against the live path's (`step`, `apply_all`).

The replay folds whole histories with mutable locals instead of one frozen tally per touch; it
must give exactly what the live path gives, floats included (same operations, same order), for
any starting tally, any policy and any touches.
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import astuple, fields

from events.ids import event_id
from events.models import CONVERSATIONAL_KINDS, Intent, Kind
from projections.in_order import fold_in_order, fold_in_python
from projections.latency import Latencies
from projections.policy import DAY_MS, Policy
from projections.relationship import (
    RelationshipState,
    apply_all,
    replayed,
    tally_to_json,
    view_row,
)
from projections.tally import Run, Tally, Touch, step, step_late
from streams.replay import native

CONVERSATIONAL = {k.value for k in CONVERSATIONAL_KINDS}
HOUR = 3_600_000


GAPS = [0, 1, HOUR, 6 * HOUR, DAY_MS // 10, DAY_MS // 5, DAY_MS, 2 * DAY_MS, 7 * DAY_MS]
GAPS.append(40 * DAY_MS)


@st.composite
def touches(draw: st.DrawFn, max_size: int = 40) -> list[Touch]:
    """Touches a gap apart each (gaps equal to the policies' day boundaries below, so a
    boundary is hit often, and past their trailing window, lateness and conversation gap),
    ids unique, in any order."""
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(GAPS),
                st.booleans(),
                st.sampled_from([k.value for k in Kind]),
                st.sampled_from([i.value for i in Intent]),
                st.sampled_from(["x", "slack", "email"]),
                st.sampled_from([None, "c1", "c2"]),
                st.sampled_from([None, "m1", "m2"]),
            ),
            max_size=max_size,
        )
    )
    made: list[Touch] = []
    at = draw(st.sampled_from([0, 5 * DAY_MS + 17]))
    for n, (gap, inbound, kind, intent, platform, cid, member) in enumerate(rows):
        at += gap
        made.append(
            Touch(
                at=at,
                event_id=event_id("w", "x", f"t{n}"),
                inbound=inbound,
                kind=kind,
                conversational=kind in CONVERSATIONAL,
                intent=intent,
                platform=platform,
                conversation_id=cid,
                member=member,
            )
        )
    return draw(st.permutations(made))


policies = st.builds(
    Policy,
    half_life_days=st.sampled_from([0.3, 1.0, 7.5, 30.0]),
    lateness_days=st.sampled_from([0.0, 0.5, 2.0, 7.0]),
    lateness_touches=st.integers(min_value=1, max_value=12),
    conversation_gap_days=st.sampled_from([0.2, 1.0, 7.0]),
    platform_move_days=st.sampled_from([0.1, 1.0, 7.0]),
    trailing_days=st.integers(min_value=1, max_value=30),
    exact_latencies=st.integers(min_value=1, max_value=6),  # past it: the sketch
    weights=st.sampled_from([{}, {"outbound.message": 2.5, "inbound.reaction.ask": 0.3}]),
)


def _stepped(t: Tally, items: list[Touch], policy: Policy) -> Tally:
    return reduce(lambda tally, touch: step(tally, touch, policy), items, t)


def _same(a: Tally, b: Tally) -> None:
    assert a == b
    # the same bytes: every float bit for bit, the conversations in the same order
    assert msgspec.json.encode(tally_to_json(a)) == msgspec.json.encode(tally_to_json(b))
    # and it is the stored form, written as before (sketched latencies, runs, sets, tuples)
    assert msgspec.json.decode(msgspec.json.encode(tally_to_json(a))) == _stored_form(a)


def _as_json(value: Any) -> Any:
    if isinstance(value, Latencies | Run):
        return _as_json(value.to_json() if isinstance(value, Latencies) else list(astuple(value)))
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_as_json(v) for v in value]
    return value


def _stored_form(t: Tally) -> dict[str, Any]:
    """A tally's stored JSON as decoded, field by field by type: the reference for the bytes
    states were written with before `tally_to_json` took `structs.asdict`."""
    return {f.name: _as_json(getattr(t, f.name)) for f in fields(Tally)}


@settings(max_examples=300, deadline=None)
@given(before=touches(), late=touches(max_size=5), after=touches(), policy=policies)
def test_the_native_fold_is_the_python_fold_from_any_tally(
    before: list[Touch], late: list[Touch], after: list[Touch], policy: Policy
) -> None:
    """The Rust fold (native/src/fold.rs) takes these tallies itself (no fallback) and gives
    the Python fold's tally, bytes included."""
    core = native.module()
    assert core is not None  # `make setup` builds it
    start = _stepped(Tally(), before, policy)
    start = reduce(lambda tally, touch: step_late(tally, touch, policy), late, start)
    for items in (after, sorted(after, key=lambda t: t.order)):
        got = core.fold_in_order(start, items, policy, (Tally, Run))
        assert got is not None
        _same(got, fold_in_python(start, items, policy))


def test_a_tally_the_native_fold_would_convert_is_folded_in_python() -> None:
    # An int where the fold keeps a float: the Python fold carries it through unchanged.
    start = Tally(gives_in=1)  # type: ignore[arg-type]
    touch = Touch(5, event_id("w", "x", "t"), False, "like", False, "neutral", "x")
    core = native.module()
    assert core is not None
    assert core.fold_in_order(start, [touch], Policy(), (Tally, Run)) is None
    folded = fold_in_order(start, [touch], Policy())
    assert folded == fold_in_python(start, [touch], Policy()) and type(folded.gives_in) is int


@settings(max_examples=300, deadline=None)
@given(before=touches(), late=touches(max_size=5), after=touches(), policy=policies)
def test_fold_in_order_is_step_repeated_from_any_tally(
    before: list[Touch], late: list[Touch], after: list[Touch], policy: Policy
) -> None:
    """From a tally with history (some of it applied late), over touches in any order."""
    start = _stepped(Tally(), before, policy)
    start = reduce(lambda tally, touch: step_late(tally, touch, policy), late, start)
    _same(fold_in_order(start, after, policy), _stepped(start, after, policy))
    ordered = sorted(after, key=lambda t: t.order)
    _same(fold_in_order(start, ordered, policy), _stepped(start, ordered, policy))


@settings(max_examples=300, deadline=None)
@given(history=touches(max_size=60), policy=policies)
def test_a_replayed_history_is_apply_all_of_it(history: list[Touch], policy: Policy) -> None:
    """Sorted and unique (what a replay has): the settled prefix, the window, the cap."""
    ordered = sorted(history, key=lambda t: t.order)
    fresh = RelationshipState(workspace="w", contact_id="x:1")
    expected = apply_all(fresh, ordered, policy)
    got = replayed("w", "x:1", ordered, policy)
    assert got == expected
    assert got.to_json() == expected.to_json()
    assert view_row(got, policy) == view_row(expected, policy)


@settings(max_examples=100, deadline=None)
@given(history=touches(), data=st.data(), policy=policies)
def test_touches_out_of_order_or_twice_are_still_apply_all(
    history: list[Touch], data: st.DataObject, policy: Policy
) -> None:
    arrival = data.draw(st.permutations(history))
    arrival += data.draw(st.lists(st.sampled_from(history), max_size=5)) if history else []
    fresh = RelationshipState(workspace="w", contact_id="x:1")
    assert replayed("w", "x:1", arrival, policy) == apply_all(fresh, arrival, policy)


def test_ids_with_one_fingerprint_count_once_as_in_apply_all() -> None:
    """Two of our ids sharing their first 16 hex digits are one fingerprint: apply_all keeps
    the first; a replay must not count both."""
    base = event_id("w", "x", "one")
    twin = base[:16] + ("0" if base[16] != "0" else "1") + base[17:]
    a = Touch(1000, base, True, "message", True, "neutral", "x")
    b = Touch(2000, twin, False, "message", True, "neutral", "x")
    fresh = RelationshipState(workspace="w", contact_id="x:1")
    expected = apply_all(fresh, [a, b], Policy())
    assert expected.view.count == 1
    assert replayed("w", "x:1", [a, b], Policy()) == expected


def test_the_stored_tally_names_every_field_in_order() -> None:
    """Every Tally field is stored, in order: a new one too."""
    assert list(tally_to_json(Tally())) == [f.name for f in fields(Tally)]


def test_the_settled_prefix_is_cut_by_the_lateness_and_the_cap() -> None:
    day = [
        Touch(d * DAY_MS, event_id("w", "x", f"d{d}"), d % 2 == 0, "message", True, "ask", "x")
        for d in range(10)
    ]
    by_lateness = replayed("w", "x:1", day, Policy(lateness_days=3))
    assert [t.at // DAY_MS for t in by_lateness.timeline] == [6, 7, 8, 9]
    assert by_lateness.horizon == day[5].order and by_lateness.settled.count == 6
    by_cap = replayed("w", "x:1", day, Policy(lateness_days=7, lateness_touches=2))
    assert [t.at // DAY_MS for t in by_cap.timeline] == [8, 9]
    assert by_cap.view.count == 10 and by_cap.revision == 10
