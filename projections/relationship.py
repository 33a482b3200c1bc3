"""The relationship projection: `apply(state, event) -> state`, pure, shared by agents and replay.

State = `settled` (the ordered fold of every event older than the watermark, i.e. the newest
event time minus the allowed lateness) + `timeline` (the events inside the window, sorted by
(occurred_at, event_id)) + `view` (settled folded with the timeline). An event inside the window
is inserted in order, so for any arrival order of on-time events the view is exactly the ordered
fold of SPEC section 3 (the same float operations in the same order); an in-order event costs
one step. An event older than the watermark is applied by `tally.step_late` and counted in
`late`. Duplicates (same `event_id`) count once however late: the state keeps a 64-bit
fingerprint of every event id it applied.
"""

from __future__ import annotations

import bisect
import math
import statistics
from dataclasses import dataclass, fields, replace
from typing import Any

from events.models import Interaction, epoch_ms
from projections.latency import Latencies
from projections.policy import DAY_MS, DEFAULT_POLICY, Policy
from projections.tally import Run, Tally, Touch, qualified_times, step, step_late

STAGES = ("attention", "attraction", "affinity", "audience")


def relationship_key(workspace: str, contact_id: str) -> str:
    """The Kafka key and table key of a relationship."""
    return f"{workspace}|{contact_id}"


def touch_of(event: Interaction, contact_id: str | None = None) -> Touch:
    """The part of an interaction the fold needs."""
    return Touch(
        at=epoch_ms(event.occurred_at),
        event_id=event.event_id,
        inbound=event.direction.value == "inbound",
        kind=event.kind.value,
        conversational=event.kind.conversational,
        intent=event.intent.value,
        platform=event.platform,
        conversation_id=event.conversation_id,
        member=event.member,
    )


@dataclass(frozen=True, slots=True)
class RelationshipState:
    workspace: str
    contact_id: str
    settled: Tally = Tally()
    timeline: tuple[Touch, ...] = ()
    view: Tally = Tally()
    newest: int | None = None
    seen: frozenset[str] = frozenset()
    revision: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "contact_id": self.contact_id,
            "settled": tally_to_json(self.settled),
            "timeline": [t.to_json() for t in self.timeline],
            "view": tally_to_json(self.view),
            "newest": self.newest,
            "seen": sorted(self.seen),
            "revision": self.revision,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RelationshipState:
        return cls(
            workspace=data["workspace"],
            contact_id=data["contact_id"],
            settled=tally_from_json(data["settled"]),
            timeline=tuple(Touch.from_json(t) for t in data["timeline"]),
            view=tally_from_json(data["view"]),
            newest=data["newest"],
            seen=frozenset(data["seen"]),
            revision=int(data["revision"]),
        )


def _refold(settled: Tally, timeline: tuple[Touch, ...], policy: Policy) -> Tally:
    view = settled
    for touch in timeline:
        view = step(view, touch, policy)
    return view


def apply_touch(state: RelationshipState, touch: Touch, policy: Policy) -> RelationshipState:
    """Fold one touch into the relationship (see the module docstring for the guarantees)."""
    fingerprint = touch.event_id[:16]
    if fingerprint in state.seen:
        return state
    seen = state.seen | {fingerprint}
    watermark = None if state.newest is None else state.newest - policy.lateness_ms
    if watermark is not None and touch.at < watermark:
        settled = step_late(state.settled, touch, policy)
        return replace(
            state,
            settled=settled,
            view=_refold(settled, state.timeline, policy),
            seen=seen,
            revision=state.revision + 1,
        )
    timeline = list(state.timeline)
    position = bisect.bisect(timeline, touch.order, key=lambda t: t.order)
    timeline.insert(position, touch)
    if position == len(timeline) - 1:
        view = step(state.view, touch, policy)
    else:
        view = _refold(state.settled, tuple(timeline), policy)
    newest = touch.at if state.newest is None else max(state.newest, touch.at)
    cut = newest - policy.lateness_ms
    settled = state.settled
    keep = 0
    while keep < len(timeline) and timeline[keep].at < cut:
        settled = step(settled, timeline[keep], policy)
        keep += 1
    return RelationshipState(
        workspace=state.workspace,
        contact_id=state.contact_id,
        settled=settled,
        timeline=tuple(timeline[keep:]),
        view=view,
        newest=newest,
        seen=seen,
        revision=state.revision + 1,
    )


def apply(
    state: RelationshipState | None,
    event: Interaction,
    policy: Policy = DEFAULT_POLICY,
    contact_id: str | None = None,
) -> RelationshipState:
    """Fold one interaction into its relationship; events without a contact are not accepted."""
    if event.contact is None or not event.direction.counts:
        raise ValueError(
            "only inbound and outbound interactions with a contact have a relationship"
        )
    cid = contact_id or event.contact.key
    if state is None:
        state = RelationshipState(workspace=event.workspace, contact_id=cid)
    return apply_touch(state, touch_of(event), policy)


def fold(
    events: list[Interaction],
    policy: Policy = DEFAULT_POLICY,
    contacts: dict[str, str] | None = None,
) -> dict[str, RelationshipState]:
    """Every relationship of a list of events, in memory (tests, replay, benchmarks).

    `contacts` maps an identity key to its contact id (identity links); unmapped identities are
    their own contact.
    """
    states: dict[str, RelationshipState] = {}
    for event in events:
        if event.contact is None or not event.direction.counts:
            continue
        cid = (contacts or {}).get(event.contact.key, event.contact.key)
        key = relationship_key(event.workspace, cid)
        states[key] = apply(states.get(key), event, policy, cid)
    return states


# --- the read model -----------------------------------------------------------------------------


def _median_gap(gaps: tuple[tuple[int, int], ...]) -> float | None:
    values = [gap for gap, count in gaps for _ in range(count)]
    return float(statistics.median(values)) if values else None


def _reciprocity(gives_out: float, gives_in: float) -> float | None:
    top = max(gives_out, gives_in)
    return None if top == 0 else min(gives_out, gives_in) / top


def view_row(state: RelationshipState, policy: Policy = DEFAULT_POLICY) -> dict[str, Any]:
    """The relationship as users see it: SPEC section 3 field names, times in epoch ms."""
    v = state.view
    reciprocity = _reciprocity(v.gives_out, v.gives_in)
    asks_recent = sum(a for _, a, _, _, _ in v.trailing)
    gives_recent = sum(g for _, _, g, _, _ in v.trailing)
    inbound_recent = sum(i for _, _, _, i, _ in v.trailing)
    outbound_recent = sum(o for _, _, _, _, o in v.trailing)
    qualified_at = qualified_times(v)
    qualified = len(qualified_at)
    if qualified >= 3 or (
        reciprocity is not None and reciprocity >= 0.5 and inbound_recent and outbound_recent
    ):
        stage = "audience"
    elif qualified >= 1:
        stage = "affinity"
    elif v.last_in_at is not None:
        stage = "attraction"
    else:
        stage = "attention"
    return {
        "workspace": state.workspace,
        "contact_id": state.contact_id,
        "first_contact_at": v.first_at,
        "last_contact_at": v.last_at,
        "last_inbound_at": v.last_in_at,
        "last_outbound_at": v.last_out_at,
        "last_platform": v.last_platform,
        "interactions": v.count,
        "our_replies": v.our.count,
        "our_latency_p50_s": v.our.percentile_s(0.5),
        "our_latency_p90_s": v.our.percentile_s(0.9),
        "awaiting_reply_since": v.our_open_since,
        "their_replies": v.their.count,
        "their_latency_p50_s": v.their.percentile_s(0.5),
        "their_latency_p90_s": v.their.percentile_s(0.9),
        "gives_out": v.gives_out,
        "asks_out": v.asks_out,
        "gives_in": v.gives_in,
        "asks_in": v.asks_in,
        "balance": v.gives_out - v.asks_out,
        "reciprocity": reciprocity,
        "ask_only": asks_recent > 0 and gives_recent == 0,
        "strength": v.strength,
        "strength_at": v.strength_at,
        "typical_gap_days": _median_gap(v.gaps),
        "touch_due_at": (
            None if v.last_at is None else v.last_at + policy.cadence_ms(qualified >= 1)
        ),
        "qualified_conversations": qualified,
        "qualified_at": qualified_at,
        "stage": stage,
        "platforms": sorted(v.platforms),
        "platform_moves": v.platform_moves,
        "members": sorted(v.members),
        "late_events": v.late,
        "policy_version": policy.version,
        "revision": state.revision,
    }


def decayed_strength(row: dict[str, Any], at_ms: int, policy: Policy = DEFAULT_POLICY) -> float:
    """A stored strength decayed to a later time (what dashboards do with `strength_at`)."""
    if row["strength_at"] is None:
        return 0.0
    return float(row["strength"]) * math.pow(
        0.5, (at_ms - row["strength_at"]) / policy.half_life_ms
    )


# --- JSON for the Faust table -------------------------------------------------------------------

_TALLY_FIELDS = [f.name for f in fields(Tally)]


def tally_to_json(t: Tally) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _TALLY_FIELDS:
        value = getattr(t, name)
        if isinstance(value, Latencies):
            value = value.to_json()
        elif isinstance(value, Run):
            value = [value.last_at, value.inbound, value.outbound, value.qualified]
        elif isinstance(value, frozenset):
            value = sorted(value)
        elif name == "conversations":
            value = {k: [list(v[0]), list(v[1])] for k, v in value.items()}
        elif isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        out[name] = value
    return out


def tally_from_json(data: dict[str, Any]) -> Tally:
    kwargs: dict[str, Any] = dict(data)
    kwargs["our"] = Latencies.from_json(data["our"])
    kwargs["their"] = Latencies.from_json(data["their"])
    kwargs["run"] = None if data["run"] is None else Run(*data["run"])
    for name in ("platforms", "members"):
        kwargs[name] = frozenset(data[name])
    kwargs["conversations"] = {
        k: (tuple(int(x) for x in v[0]), tuple(int(x) for x in v[1]))
        for k, v in data["conversations"].items()
    }
    kwargs["trailing"] = tuple(tuple(r) for r in data["trailing"])
    kwargs["gaps"] = tuple((int(g), int(c)) for g, c in data["gaps"])
    kwargs["run_qualified_at"] = tuple(int(v) for v in data["run_qualified_at"])
    for name in ("last_order", "last_conv"):
        kwargs[name] = None if data[name] is None else tuple(data[name])
    return Tally(**kwargs)


__all__ = [
    "DAY_MS",
    "STAGES",
    "RelationshipState",
    "apply",
    "apply_touch",
    "decayed_strength",
    "fold",
    "relationship_key",
    "touch_of",
    "view_row",
]
