"""The pure parts of the chaos suite: the plan it sends and the verifier's comparisons.

The suite itself (`make chaos`) runs real processes and is not part of `make test`; these tests
make sure that what it expects is what the adapters and the replay core actually compute, and
that its comparisons notice a lost, doubled or wrong row.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from chaos.generator import (
    WORKSPACE,
    Plan,
    generate,
    redeliver_and_shuffle,
    workspace_toml,
)
from chaos.verify import (
    REL_FIELDS,
    DatabaseRows,
    Verdict,
    doubled_events,
    merge,
    relationship_problems,
)
from events.delivery import process_delivery
from events.envelope import RawEnvelope
from events.models import RawPointer, dump_event
from projections.policy import DEFAULT_POLICY
from rapport.workspaces import WorkspaceRegistry
from streams.replay.recalculation import Outcome, recalculate
from streams.webhooks.generic import GenericProtocol
from streams.webhooks.x import XProtocol

REGISTRY = WorkspaceRegistry.from_mapping(tomllib.loads(workspace_toml()))
NOW = datetime(2024, 5, 10, tzinfo=UTC)


def normalized(plan: Plan) -> tuple[list[bytes], list[str]]:
    """The logged events and the dead-letter reasons the worker would produce (pure path)."""
    events: list[bytes] = []
    reasons: list[str] = []
    for offset, delivery in enumerate(plan.deliveries):
        envelope = RawEnvelope(
            workspace=WORKSPACE,
            source=delivery.platform,
            received_at=NOW,
            headers={},
            body=delivery.body,
        )
        pointer = RawPointer(topic="raw", partition=0, offset=offset)
        outcome = process_delivery(REGISTRY, envelope.dumps(), pointer, NOW)
        if outcome.dead_letter is not None:
            reasons.append(outcome.dead_letter.reason)
        events += [dump_event(e) for e in outcome.events]
        assert {e.event_id for e in outcome.events} == set(delivery.event_ids)
    return events, reasons


def database_of(outcome: Outcome) -> DatabaseRows:
    """The rows a perfect ClickHouse would return for the verifier's queries."""
    relationships = []
    for view in outcome.views.values():
        row = dict(view, last_platform=view["last_platform"] or "")
        relationships.append(tuple(row[name] for name in REL_FIELDS))
    interactions = [
        (r[0], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[13], r[14], r[15])
        for r in outcome.interaction_rows
    ]
    return DatabaseRows(relationships, interactions, [])


@pytest.fixture(scope="module")
def plan() -> Plan:
    return generate(1500, seed=3, per_body=25, poison=6)


@pytest.fixture(scope="module")
def outcome(plan: Plan) -> Outcome:
    events, _ = normalized(plan)
    return recalculate(events, REGISTRY, [WORKSPACE])


def test_the_plan_is_deterministic_and_every_event_id_unique(plan: Plan) -> None:
    again = generate(1500, seed=3, per_body=25, poison=6)
    assert [d.body for d in again.deliveries] == [d.body for d in plan.deliveries]
    assert len(plan.expected_ids) == len(plan.events) == 1500
    assert generate(1500, seed=4).deliveries[0].body != plan.deliveries[0].body
    assert len({d.msg_id for d in plan.deliveries}) == len(plan.deliveries)
    assert not any(a in b for a in plan.poison for b in plan.poison if a != b)


def test_the_plan_spans_less_than_the_lateness_window(plan: Plan) -> None:
    times = [e.at_s for e in plan.events]
    assert (max(times) - min(times)) * 1000 < DEFAULT_POLICY.lateness_ms


def test_deliveries_are_authentic() -> None:
    config = REGISTRY.get(WORKSPACE)
    assert config is not None
    small = generate(40, seed=1, per_body=10, poison=3)
    for delivery in small.deliveries:
        protocol = XProtocol() if delivery.platform == "x" else GenericProtocol()
        headers = delivery.headers(now=1_714_600_000)
        verdict = protocol.verify(config, headers, delivery.body, 1_714_600_010)
        assert verdict.ok, (delivery.msg_id, verdict.reason)


def test_the_adapters_give_exactly_the_planned_events_and_poison_dead_letters(
    plan: Plan,
) -> None:
    events, reasons = normalized(plan)
    assert len(events) == 1500
    assert len(reasons) == len(plan.poison) == 6
    assert all(reason.strip() for reason in reasons)


def test_the_replay_core_counts_what_the_plan_expects(plan: Plan, outcome: Outcome) -> None:
    counted = {k.split("|", 1)[1]: v["interactions"] for k, v in outcome.views.items()}
    assert counted == dict(plan.per_contact())
    assert outcome.interactions == 1500
    assert all(v["late_events"] == 0 for v in outcome.views.values())


def test_redeliveries_repeat_every_body_and_move_it_a_bounded_distance(plan: Plan) -> None:
    shuffled = redeliver_and_shuffle(plan.deliveries, seed=3, window=50)
    copies = Counter(d.msg_id for d in shuffled)
    assert set(copies) == {d.msg_id for d in plan.deliveries}
    assert set(copies.values()) <= {1, 2, 3} and max(copies.values()) > 1
    assert all(copies[d.msg_id] == 1 for d in plan.deliveries if d.poison)
    original = {d.msg_id: i for i, d in enumerate(plan.deliveries)}
    assert shuffled != sorted(shuffled, key=lambda d: original[d.msg_id])
    # A copy never lands more than the window (plus the copies before it) away.
    for position, delivery in enumerate(shuffled):
        assert abs(position - original[delivery.msg_id]) <= 50 + len(shuffled) - len(
            plan.deliveries
        )


def test_a_perfect_database_passes(outcome: Outcome) -> None:
    state = merge([database_of(outcome)])
    assert relationship_problems(state, outcome) == []
    assert doubled_events(state) == set()
    assert set(state.interactions) == {r[0] for r in outcome.interaction_rows}


def _with(row: tuple[Any, ...], **changes: Any) -> tuple[Any, ...]:
    values = dict(zip(REL_FIELDS, row, strict=True)) | changes
    return tuple(values[name] for name in REL_FIELDS)


def test_wrong_fields_stale_revisions_and_missing_relationships_are_reported(
    outcome: Outcome,
) -> None:
    db = database_of(outcome)
    first, second, *rest = db.relationships
    wrong = _with(first, strength=first[REL_FIELDS.index("strength")] + 0.5)
    stale = _with(second, interactions=1, revision=1)
    state = merge([DatabaseRows([wrong, stale, *rest[1:]], db.interactions, [])])
    problems = relationship_problems(state, outcome, limit=100)
    contact = lambda row: row[REL_FIELDS.index("contact_id")]  # noqa: E731
    assert any(f"{contact(first)}.strength" in p for p in problems)
    assert any(f"{contact(second)}.interactions" in p for p in problems)
    assert any(f"relationship {contact(rest[0])} only in the replay" in p for p in problems)
    # Float noise far below 1e-9 is not a difference; a time off by 1 ms is.
    tiny = _with(first, strength=first[REL_FIELDS.index("strength")] * (1 + 1e-13))
    state = merge([DatabaseRows([tiny, second, *rest], db.interactions, [])])
    assert relationship_problems(state, outcome) == []
    late = _with(first, last_contact_at=first[REL_FIELDS.index("last_contact_at")] + 1)
    state = merge([DatabaseRows([late, second, *rest], db.interactions, [])])
    assert [p.split(": ")[0] for p in relationship_problems(state, outcome)] == [
        f"relationship {contact(first)}.last_contact_at"
    ]


def test_the_union_of_databases_takes_the_newest_revision(outcome: Outcome) -> None:
    db = database_of(outcome)
    row = db.relationships[0]
    older = _with(row, revision=1, interactions=1)
    one = DatabaseRows([older], db.interactions[:10], [])
    two = DatabaseRows(db.relationships, db.interactions, [])
    state = merge([one, two])
    assert relationship_problems(state, outcome) == []
    assert state.copies == 10 and doubled_events(state) == set()


def test_doubles_and_losses_are_counted(outcome: Outcome) -> None:
    db = database_of(outcome)
    first = db.interactions[0]
    moved = (first[0], "email:someone-else@ext.example", *first[2:])
    state = merge([DatabaseRows(db.relationships, [*db.interactions[1:], first, moved], [])])
    assert doubled_events(state) == {first[0]}
    across = merge([DatabaseRows([], [first], []), DatabaseRows(db.relationships, [moved], [])])
    assert doubled_events(across) == {first[0]}
    lost = merge([DatabaseRows(db.relationships, db.interactions[1:], [])])
    assert first[0] not in lost.interactions


def test_a_verdict_passes_only_when_nothing_is_off() -> None:
    good = Verdict("x", sent=10, counted=10, lost=0, doubled=0)
    assert good.ok and good.line().startswith("PASS x")
    assert not Verdict("x", sent=10, counted=9, lost=1, doubled=0).ok
    assert not Verdict("x", sent=10, counted=10, lost=0, doubled=1).ok
    assert not Verdict("x", sent=10, lost=0, doubled=0, expected_dead_letters=2).ok
    assert not Verdict("x", sent=10, lost=0, doubled=0, problems=["a"]).ok
