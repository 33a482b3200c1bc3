"""The relationship projection: `apply(state, event) -> state`, pure, shared by agents and replay.

State = `settled` (the ordered fold of every event older than the watermark, i.e. the newest
event time minus the allowed lateness) + `timeline` (the events inside the window, sorted by
(occurred_at, event_id)) + `view` (settled folded with the timeline). An event inside the window
is inserted in order, so for any arrival order of on-time events the view is exactly the ordered
fold of SPEC section 3 (the same float operations in the same order); an in-order event costs
one step. An event older than the watermark is applied by `tally.step_late` and counted in
`late`. Duplicates (same `event_id`) count once however late: the state keeps a 64-bit
fingerprint of every event id it applied.

The window also holds at most `policy.lateness_touches` touches (default 10,000): a relationship
busier than that within the lateness (a bot, an integration loop) settles its oldest touches
early, so its state, the cost of writing it and of re-folding after a reordered event stay
bounded; an event older than the newest settled touch (`horizon`) is then late too.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from events.models import CONVERSATIONAL_KINDS, Interaction, epoch_ms
from projections import seen as seen_set
from projections.in_order import fold_in_order
from projections.latency import Latencies
from projections.policy import DAY_MS, DEFAULT_POLICY, Policy
from projections.seen import Seen
from projections.tally import (
    Run,
    Tally,
    Touch,
    qualified_times,
    step,
    step_late,
    timeline_from_json,
)

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


def touch_from_doc(doc: dict[str, Any]) -> Touch | None:
    """The touch of a decoded current-version interaction (JSON), without model validation.

    Equal to `touch_of(Interaction.model_validate(doc))` (tested); None when the interaction
    belongs to no relationship (internal, external, no contact).
    """
    if doc["direction"] not in ("inbound", "outbound") or doc.get("contact") is None:
        return None
    kind = doc["kind"]
    return Touch(
        at=epoch_ms(datetime.fromisoformat(doc["occurred_at"])),
        event_id=doc["event_id"],
        inbound=doc["direction"] == "inbound",
        kind=kind,
        conversational=kind in _CONVERSATIONAL,
        intent=doc.get("intent", "neutral"),
        platform=doc["platform"],
        conversation_id=doc.get("conversation_id"),
        member=doc.get("member"),
    )


_CONVERSATIONAL = frozenset(k.value for k in CONVERSATIONAL_KINDS)


@dataclass(frozen=True, slots=True)
class RelationshipState:
    workspace: str
    contact_id: str
    settled: Tally = Tally()
    timeline: tuple[Touch, ...] = ()
    view: Tally = Tally()
    newest: int | None = None
    seen: Seen = field(default_factory=seen_set.empty)  # fingerprints, see `projections.seen`
    revision: int = 0
    # The order of the newest touch settled so far: nothing at or before it can be reordered.
    horizon: tuple[int, str] | None = None
    # The view after each timeline touch, or None where not kept (in memory only, see
    # `apply_all`): settling a touch then takes its snapshot instead of stepping it again.
    snapshots: tuple[Tally | None, ...] | None = field(default=None, compare=False, repr=False)
    # Stored JSON of the timeline and of `settled`, reused or extended by the next state while
    # they only grow (in memory only, see `to_json`).
    timeline_json: bytes | None = field(default=None, compare=False, repr=False)
    settled_json: bytes | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> bytes:
        """`to_dict()` as JSON bytes, without re-encoding what the previous write encoded.

        (The replay's native core writes the same bytes, native/src/relationship.rs.)

        The worker writes a relationship's whole state at every batch that touches it; for a
        busy relationship that is thousands of timeline touches, of which a batch appends a
        few. Their encoding is kept and extended instead (the same bytes as a full encoding).
        """
        timeline = self.timeline_json
        if timeline is None:
            timeline = msgspec.json.encode(self.timeline)  # arrays, as `Touch.to_json`
            object.__setattr__(self, "timeline_json", timeline)  # a cache of a frozen value
        settled = self.settled_json
        if settled is None:
            settled = msgspec.json.encode(tally_to_json(self.settled))
            object.__setattr__(self, "settled_json", settled)
        return msgspec.json.encode(self._doc(msgspec.Raw(settled), msgspec.Raw(timeline)))

    def to_dict(self) -> dict[str, Any]:
        return self._doc(tally_to_json(self.settled), [t.to_json() for t in self.timeline])

    def _doc(self, settled: Any, timeline: Any) -> dict[str, Any]:
        """The stored form, with `settled` and `timeline` given as values or encoded JSON."""
        return {
            "workspace": self.workspace,
            "contact_id": self.contact_id,
            "settled": settled,
            "timeline": timeline,
            "view": tally_to_json(self.view),
            "newest": self.newest,
            "seen": seen_set.packed(self.seen),  # 16 hex digits each, ascending
            "revision": self.revision,
            "horizon": None if self.horizon is None else list(self.horizon),
        }

    @classmethod
    def from_json(cls, raw: bytes) -> RelationshipState:
        """The stored JSON back, in one typed pass: `from_dict(json.loads(raw))`, faster.

        A worker reads a state back at every decoded-state cache miss; decoding its timeline
        straight into touches skips building a list per touch and converting it afterwards
        (`bench/bench_live_memory.py` times both).
        """
        doc = _STORED.decode(raw)
        return cls(
            workspace=doc.workspace,
            contact_id=doc.contact_id,
            settled=tally_from_json(doc.settled),
            timeline=doc.timeline,
            view=tally_from_json(doc.view),
            newest=doc.newest,
            seen=seen_set.unpacked(doc.seen),
            revision=doc.revision,
            horizon=doc.horizon,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RelationshipState:
        horizon = data.get("horizon")  # absent before the touch cap
        return cls(
            workspace=data["workspace"],
            contact_id=data["contact_id"],
            settled=tally_from_json(data["settled"]),
            timeline=timeline_from_json(data["timeline"]),
            view=tally_from_json(data["view"]),
            newest=data["newest"],
            seen=seen_set.unpacked(data["seen"]),
            revision=int(data["revision"]),
            horizon=None if horizon is None else (int(horizon[0]), str(horizon[1])),
        )


class _StoredState(msgspec.Struct):
    """The stored form of a `RelationshipState` (`_doc`), as `from_json` decodes it."""

    workspace: str
    contact_id: str
    settled: dict[str, Any]
    timeline: tuple[Touch, ...]
    view: dict[str, Any]
    newest: int | None
    seen: str | list[str]
    revision: int
    horizon: tuple[int, str] | None = None  # absent before the touch cap


_STORED = msgspec.json.Decoder(_StoredState)


LIVE_SNAPSHOT_STRIDE = 16  # the live worker keeps one snapshot in 16 (memory), replay all


def _snapshots(
    settled: Tally, timeline: Sequence[Touch], policy: Policy, stride: int
) -> list[Tally | None]:
    """The view after each touch, every `stride`-th kept (the last always): the rest are None."""
    out: list[Tally | None] = []
    view = settled
    last = len(timeline) - 1
    for i, touch in enumerate(timeline):
        view = step(view, touch, policy)
        out.append(view if i % stride == 0 or i == last else None)
    return out


def _snapshot(
    snaps: list[Tally | None],
    settled: Tally,
    timeline: Sequence[Touch],
    i: int,
    policy: Policy,
) -> Tally:
    """The view after timeline[i] (settled for i = -1), stepped from the nearest kept one."""
    j = i
    while j >= 0 and snaps[j] is None:
        j -= 1
    view = settled if j < 0 else snaps[j]
    assert view is not None
    for k in range(j + 1, i + 1):
        view = step(view, timeline[k], policy)
    return view


def _last(snaps: list[Tally | None], settled: Tally) -> Tally:
    """The view: the last snapshot (always kept), or settled when the timeline is empty."""
    last = snaps[-1] if snaps else settled
    assert last is not None
    return last


def apply_all(
    state: RelationshipState,
    touches: Iterable[Touch],
    policy: Policy,
    stride: int = 1,
) -> RelationshipState:
    """Fold touches one after another, exactly as repeated `apply_touch` would.

    Pure: the input state is not modified. The seen-set, the timeline and its snapshots are
    copied once per call instead of once per touch, which keeps a batch (or a replay) linear.
    Snapshots (the view after each timeline touch) are what settling and a reordered touch
    start from; with `stride` > 1 only one in `stride` is kept and the others are stepped to
    when needed, which trades a few steps for most of the memory of a long window (the live
    worker). A state read back from its table has none: they are found the same way.
    """
    seen = state.seen
    added: set[int] = set()  # fingerprints this call applied, not yet in `seen`
    timeline = list(state.timeline)
    appended: list[Touch] = []  # while the timeline only grows at its end
    rewritten = False
    snaps: list[Tally | None]
    if state.snapshots is not None:
        snaps = list(state.snapshots)
    else:
        snaps = [None] * len(timeline)
        if snaps:
            snaps[-1] = state.view  # the view is the snapshot after the last touch
    settled, view, newest, revision = state.settled, state.view, state.newest, state.revision
    horizon = state.horizon
    lateness, cap = policy.lateness_ms, policy.lateness_touches

    def settle(keep: int) -> None:
        nonlocal settled, horizon, rewritten
        rewritten = True
        settled = _snapshot(snaps, settled, timeline, keep - 1, policy)
        horizon = timeline[keep - 1].order
        del timeline[:keep]
        del snaps[:keep]

    for touch in touches:
        fingerprint = seen_set.fingerprint(touch.event_id)
        if fingerprint in added or seen_set.contains(seen, fingerprint):
            continue
        added.add(fingerprint)
        revision += 1
        order = touch.order
        if (newest is not None and touch.at < newest - lateness) or (
            horizon is not None and order < horizon
        ):
            settled = step_late(settled, touch, policy)
            snaps = _snapshots(settled, timeline, policy, stride)
            rewritten = True
            view = _last(snaps, settled)
            continue
        if not timeline or order > timeline[-1].order:
            timeline.append(touch)
            appended.append(touch)
            view = step(view, touch, policy)
            if stride > 1 and snaps and (len(snaps) - 1) % stride:  # no longer the last
                snaps[-1] = None
            snaps.append(view)
        else:
            at = bisect.bisect(timeline, order, key=lambda t: t.order)
            start = _snapshot(snaps, settled, timeline, at - 1, policy)
            timeline.insert(at, touch)
            snaps[at:] = _snapshots(start, timeline[at:], policy, stride)
            rewritten = True
            view = _last(snaps, settled)
        if newest is None or touch.at > newest:
            newest = touch.at
            cut = newest - lateness
            keep = 0
            while keep < len(timeline) and timeline[keep].at < cut:
                keep += 1
            if keep:
                settle(keep)
        if len(timeline) > cap:  # a very busy relationship: settle its oldest touches early
            settle(len(timeline) - cap)
    timeline_json = state.timeline_json
    if rewritten or timeline_json is None:
        timeline_json = None
    elif appended:
        more = msgspec.json.encode(appended)
        timeline_json = more if timeline_json == b"[]" else timeline_json[:-1] + b"," + more[1:]
    return RelationshipState(
        workspace=state.workspace,
        contact_id=state.contact_id,
        settled=settled,
        timeline=tuple(timeline),
        view=view,
        newest=newest,
        seen=seen_set.merged(seen, added),
        revision=revision,
        horizon=horizon,
        snapshots=tuple(snaps),
        timeline_json=timeline_json,
        settled_json=state.settled_json if settled is state.settled else None,
    )


_NOTHING = Tally()  # what a fresh relationship has settled (immutable, so shared)


def replayed(
    workspace: str,
    contact_id: str,
    touches: Sequence[Touch],
    policy: Policy,
    native: bool = True,
) -> RelationshipState:
    """A relationship from its whole history at once: `apply_all` of a fresh state, faster.

    A replay has the touches sorted by (occurred_at, event_id), each event once. Nothing is
    then late or reordered, so the settled touches are a prefix: those older than the newest
    minus the lateness, and any beyond the touch cap. Both tallies come from `fold_in_order`
    (the same float operations as `step`), so the result equals `apply_all` field for field
    (tested). Touches out of order, or twice (by fingerprint), take `apply_all` itself.
    `native`: fold with the native fold where it is built (`fold_in_order`).
    """
    if not touches:
        return RelationshipState(workspace=workspace, contact_id=contact_id)
    fingerprints = set(seen_set.fingerprints([t.event_id for t in touches]))
    ats = [t.at for t in touches]
    if len(fingerprints) != len(touches) or not _strictly_ordered(touches, ats):
        fresh = RelationshipState(workspace=workspace, contact_id=contact_id)
        return apply_all(fresh, touches, policy)
    newest = ats[-1]
    cut = newest - policy.lateness_ms
    keep = max(bisect.bisect_left(ats, cut), len(touches) - policy.lateness_touches)
    settled = fold_in_order(_NOTHING, touches[:keep], policy, native) if keep else _NOTHING
    return RelationshipState(
        workspace=workspace,
        contact_id=contact_id,
        settled=settled,
        timeline=tuple(touches[keep:]),
        view=fold_in_order(settled, touches[keep:], policy, native),
        newest=newest,
        seen=seen_set.of(fingerprints),
        revision=len(touches),
        horizon=touches[keep - 1].order if keep else None,
    )


def _strictly_ordered(touches: Sequence[Touch], ats: list[int]) -> bool:
    """Whether the touches' (occurred_at, event_id) only grow: compared by time alone, in C,
    unless two share a time."""
    if all(map(operator.lt, ats, itertools.islice(ats, 1, None))):
        return True
    orders = [t.order for t in touches]
    return all(map(operator.lt, orders, itertools.islice(orders, 1, None)))


def apply_touch(state: RelationshipState, touch: Touch, policy: Policy) -> RelationshipState:
    """Fold one touch into the relationship (see the module docstring for the guarantees)."""
    return apply_all(state, (touch,), policy)


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
    """The relationship as users see it: SPEC section 3 field names, times in epoch ms.

    The replay's native core computes the same row (`write_row` in native/src/relationship.rs,
    tested equal column for column): a change here is made there too, or its tests fail.
    """
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


def tally_to_json(t: Tally) -> dict[str, Any]:
    """The stored form of a tally: its fields in order, sets sorted, the latencies and the run
    as their JSON; tuples stay tuples (JSON arrays, as msgspec and `json` write both).

    Taken with `structs.asdict` (in C) and six fields converted, rather than field by field
    (1.48x less CPU, `bench/bench_replay_parts.py`): every state the worker writes encodes its
    view, and a replay encodes two tallies per relationship.
    """
    doc = msgspec.structs.asdict(t)
    doc["our"] = t.our.to_json()
    doc["their"] = t.their.to_json()
    doc["conversations"] = dict(t.conversations)  # not the tally's own mapping
    run = t.run
    if run is not None:
        doc["run"] = (run.last_at, run.inbound, run.outbound, run.qualified)
    doc["platforms"] = sorted(t.platforms)
    doc["members"] = sorted(t.members)
    return doc


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
    "replayed",
    "touch_of",
    "view_row",
]
