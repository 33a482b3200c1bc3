"""A slow, literal reading of docs/metrics.md: the oracle the relationship fold is checked against.

Everything is recomputed from the ordered events of one relationship with plain loops, one field
at a time, in the words of the doc. It never looks at the implementation in `projections/`.
"""

from __future__ import annotations

import math
from typing import Any

from events.models import CONVERSATIONAL_KINDS, Interaction, epoch_ms
from projections.policy import DAY_MS, DEFAULT_POLICY, Policy

# Compared with a relative tolerance: a direct sum and an incremental one differ in the last bits.
FLOAT_FIELDS = frozenset(
    {"strength", "gives_out", "asks_out", "gives_in", "asks_in", "balance", "reciprocity"}
)
FIELDS = (
    "workspace",
    "contact_id",
    "first_contact_at",
    "last_contact_at",
    "last_inbound_at",
    "last_outbound_at",
    "last_platform",
    "interactions",
    "our_replies",
    "our_latency_p50_s",
    "our_latency_p90_s",
    "awaiting_reply_since",
    "their_replies",
    "their_latency_p50_s",
    "their_latency_p90_s",
    "gives_out",
    "asks_out",
    "gives_in",
    "asks_in",
    "balance",
    "reciprocity",
    "ask_only",
    "strength",
    "strength_at",
    "typical_gap_days",
    "touch_due_at",
    "qualified_conversations",
    "qualified_at",
    "stage",
    "platforms",
    "platform_moves",
    "members",
)


class _Ev:
    """The few things the metrics read from one interaction, with the time in epoch ms."""

    def __init__(self, event: Interaction) -> None:
        self.t = epoch_ms(event.occurred_at)
        self.event_id = event.event_id
        self.direction = str(event.direction)
        self.kind = str(event.kind)
        self.intent = str(event.intent)
        self.platform = event.platform
        self.conversation_id = event.conversation_id
        self.member = event.member
        self.turn = event.kind in CONVERSATIONAL_KINDS
        self.inbound = self.direction == "inbound"
        self.outbound = self.direction == "outbound"


def nearest_rank(latencies_ms: list[int], p_num: int, p_den: int) -> float | None:
    """The value at 1-based position ceil(p * n) of the ascending latencies, in seconds."""
    n = len(latencies_ms)
    if n == 0:
        return None
    position = -(-p_num * n // p_den)  # ceil(p * n) in integers
    return sorted(latencies_ms)[position - 1] / 1000


def waits(evs: list[_Ev], opens: str, closes: str) -> tuple[list[int], int | None]:
    """Walk the turns: `opens` starts a wait if none is open, `closes` ends an open one."""
    latencies: list[int] = []
    open_since: int | None = None
    for ev in evs:
        if not ev.turn:
            continue
        if ev.direction == opens and open_since is None:
            open_since = ev.t
        elif ev.direction == closes and open_since is not None:
            latencies.append(ev.t - open_since)
            open_since = None
    return latencies, open_since


def median(values: list[int]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n % 2 == 1:
        return ordered[n // 2]
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def qualification_times(evs: list[_Ev], gap_ms: float) -> list[int]:
    """The qualification time of every qualified conversation (by id) and id-less run."""
    groups: dict[Any, list[_Ev]] = {}
    run = 0
    previous_idless: _Ev | None = None
    for ev in evs:
        if not ev.turn:
            continue
        if ev.conversation_id is not None:
            groups.setdefault(("conversation", ev.conversation_id), []).append(ev)
        else:
            if previous_idless is not None and ev.t - previous_idless.t >= gap_ms:
                run += 1
            previous_idless = ev
            groups.setdefault(("run", run), []).append(ev)
    times = []
    for turns in groups.values():
        inbound = outbound = 0
        for ev in turns:
            inbound += ev.inbound
            outbound += ev.outbound
            if inbound >= 2 and outbound >= 2:
                times.append(ev.t)
                break
    return sorted(times)


def relationship_row(workspace: str, contact_id: str, evs: list[_Ev], policy: Policy) -> dict:
    """Every field of docs/metrics.md for one relationship's events, ordered."""
    times = [ev.t for ev in evs]
    last = evs[-1]
    inbound_times = [ev.t for ev in evs if ev.inbound]
    outbound_times = [ev.t for ev in evs if ev.outbound]

    our, awaiting = waits(evs, opens="inbound", closes="outbound")
    their, _ = waits(evs, opens="outbound", closes="inbound")

    def weight(ev: _Ev) -> float:
        return policy.weight(ev.direction, ev.kind, ev.intent)

    gives_out = sum((weight(ev) for ev in evs if ev.outbound and ev.intent != "ask"), 0.0)
    asks_out = sum((weight(ev) for ev in evs if ev.outbound and ev.intent == "ask"), 0.0)
    gives_in = sum((weight(ev) for ev in evs if ev.inbound and ev.intent != "ask"), 0.0)
    asks_in = sum((weight(ev) for ev in evs if ev.inbound and ev.intent == "ask"), 0.0)
    if gives_out == 0 and gives_in == 0:
        reciprocity = None
    else:
        reciprocity = min(gives_out, gives_in) / max(gives_out, gives_in)

    last_day = last.t // DAY_MS
    first_trailing_day = last_day - policy.trailing_days + 1
    trailing = [ev for ev in evs if first_trailing_day <= ev.t // DAY_MS <= last_day]
    trailing_asks_out = sum(weight(ev) for ev in trailing if ev.outbound and ev.intent == "ask")
    trailing_gives_out = sum(weight(ev) for ev in trailing if ev.outbound and ev.intent != "ask")
    ask_only = trailing_asks_out > 0 and trailing_gives_out == 0

    strength_at = last.t
    strength = sum(weight(ev) * 0.5 ** ((strength_at - ev.t) / policy.half_life_ms) for ev in evs)

    turn_days = sorted({ev.t // DAY_MS for ev in evs if ev.turn})
    gaps = [turn_days[i] - turn_days[i - 1] for i in range(1, len(turn_days))]
    typical_gap_days = median(gaps) if gaps else None

    qualified_at = qualification_times(evs, policy.conversation_gap_days * DAY_MS)
    qualified = len(qualified_at)
    last_contact_at = max(times)
    touch_due_at = last_contact_at + policy.cadence_ms(qualified >= 1)

    trailing_both = any(ev.inbound for ev in trailing) and any(ev.outbound for ev in trailing)
    if qualified >= 3 or (reciprocity is not None and reciprocity >= 0.5 and trailing_both):
        stage = "audience"
    elif qualified >= 1:
        stage = "affinity"
    elif inbound_times:
        stage = "attraction"
    else:
        stage = "attention"

    turns = [ev for ev in evs if ev.turn]
    platform_moves = 0
    for i in range(1, len(turns)):
        a, b = turns[i - 1], turns[i]
        if a.platform != b.platform and b.t - a.t <= policy.platform_move_days * DAY_MS:
            platform_moves += 1

    return {
        "workspace": workspace,
        "contact_id": contact_id,
        "first_contact_at": min(times),
        "last_contact_at": last_contact_at,
        "last_inbound_at": max(inbound_times) if inbound_times else None,
        "last_outbound_at": max(outbound_times) if outbound_times else None,
        "last_platform": last.platform,
        "interactions": len(evs),
        "our_replies": len(our),
        "our_latency_p50_s": nearest_rank(our, 1, 2),
        "our_latency_p90_s": nearest_rank(our, 9, 10),
        "awaiting_reply_since": awaiting,
        "their_replies": len(their),
        "their_latency_p50_s": nearest_rank(their, 1, 2),
        "their_latency_p90_s": nearest_rank(their, 9, 10),
        "gives_out": gives_out,
        "asks_out": asks_out,
        "gives_in": gives_in,
        "asks_in": asks_in,
        "balance": gives_out - asks_out,
        "reciprocity": reciprocity,
        "ask_only": ask_only,
        "strength": strength,
        "strength_at": strength_at,
        "typical_gap_days": typical_gap_days,
        "touch_due_at": touch_due_at,
        "qualified_conversations": qualified,
        "qualified_at": qualified_at,
        "stage": stage,
        "platforms": sorted({ev.platform for ev in evs}),
        "platform_moves": platform_moves,
        "members": sorted({ev.member for ev in evs if ev.member is not None}),
    }


def expected_relationships(
    events: list[Interaction],
    policy: Policy = DEFAULT_POLICY,
    contacts: dict[str, str] | None = None,
) -> dict[str, dict]:
    """`{"<workspace>|<contact_id>": row}` for every relationship in `events`, any order."""
    contacts = contacts or {}
    seen: set[tuple[str, str]] = set()
    by_relationship: dict[tuple[str, str], list[_Ev]] = {}
    for event in events:
        if event.contact is None or str(event.direction) not in ("inbound", "outbound"):
            continue
        if (event.workspace, event.event_id) in seen:
            continue
        seen.add((event.workspace, event.event_id))
        contact_id = contacts.get(event.contact.key, event.contact.key)
        by_relationship.setdefault((event.workspace, contact_id), []).append(_Ev(event))
    result = {}
    for (workspace, contact_id), evs in by_relationship.items():
        evs.sort(key=lambda ev: (ev.t, ev.event_id))
        result[f"{workspace}|{contact_id}"] = relationship_row(workspace, contact_id, evs, policy)
    return result


def _same(field: str, actual: Any, expected: Any) -> bool:
    if field in FLOAT_FIELDS and actual is not None and expected is not None:
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            return False
        return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12)
    if type(actual) is bool or type(expected) is bool:
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, list) and isinstance(actual, list | tuple):
        return list(actual) == expected
    return actual == expected


def compare(actual_rows: dict[str, dict], expected: dict[str, dict]) -> list[str]:
    """Human-readable differences between rows and the oracle (empty when they agree)."""
    problems = []
    for key in sorted(expected.keys() - actual_rows.keys()):
        problems.append(f"missing relationship {key}")
    for key in sorted(actual_rows.keys() - expected.keys()):
        problems.append(f"unexpected relationship {key}")
    for key in sorted(expected.keys() & actual_rows.keys()):
        row, want = actual_rows[key], expected[key]
        for field in FIELDS:
            if field not in row:
                problems.append(f"{key}: field {field} missing (expected {want[field]!r})")
            elif not _same(field, row[field], want[field]):
                problems.append(f"{key}: {field} = {row[field]!r}, expected {want[field]!r}")
    return problems
