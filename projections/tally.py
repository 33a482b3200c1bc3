"""The ordered fold of SPEC section 3: `step(tally, touch, policy) -> tally`, pure.

`step` assumes touches come in (occurred_at, event_id) order, which `projections.relationship`
guarantees for every event inside the lateness window. `step_late` applies an event that came
after the window closed: deterministically, to the order-free parts only (times, counts,
give/take, strength, conversations with an id and their qualification times, platforms, members)
and it is counted in `late`; a replay places it exactly.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import msgspec

from projections.latency import Latencies
from projections.policy import DAY_MS, Policy


class Touch(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One counted interaction, as much of it as the fold needs (also the timeline entry).

    Stored as a JSON array in field order. A msgspec struct rather than a dataclass: a
    relationship read back from its table (a worker's cache miss, a restart) converts its whole
    timeline at once, several times faster (`bench/bench_live_memory.py`), and a touch is
    smaller (no GC header: it holds only strings, numbers and None, so it is never in a cycle).
    Its repeated strings (kind, intent, platform, conversation, member) are one shared copy
    however it was made (`__post_init__`): a live relationship keeps every touch of its
    lateness window in memory, and a decoded string is a new object each time.
    """

    at: int
    event_id: str
    inbound: bool
    kind: str
    conversational: bool
    intent: str
    platform: str
    conversation_id: str | None = None
    member: str | None = None

    def __post_init__(self) -> None:
        share = msgspec.structs.force_setattr  # frozen: set once, while it is being made
        share(self, "kind", sys.intern(self.kind))
        share(self, "intent", sys.intern(self.intent))
        share(self, "platform", sys.intern(self.platform))
        if self.conversation_id is not None:
            share(self, "conversation_id", sys.intern(self.conversation_id))
        if self.member is not None:
            share(self, "member", sys.intern(self.member))

    @property
    def order(self) -> tuple[int, str]:
        return (self.at, self.event_id)

    @property
    def direction(self) -> str:
        return "inbound" if self.inbound else "outbound"

    def to_json(self) -> list[Any]:
        return [
            self.at, self.event_id, self.inbound, self.kind, self.conversational, self.intent,
            self.platform, self.conversation_id, self.member,
        ]  # fmt: skip

    @classmethod
    def from_json(cls, data: list[Any]) -> Touch:
        return cls(*data)


def timeline_from_json(data: list[list[Any]]) -> tuple[Touch, ...]:
    """A stored timeline (decoded JSON arrays) in one conversion, each touch type-checked."""
    return msgspec.convert(data, tuple[Touch, ...])


class Run(msgspec.Struct, frozen=True, gc=False):
    """An id-less conversation: conversational turns with gaps under the policy's gap."""

    last_at: int
    inbound: int
    outbound: int
    qualified: bool


class Tally(msgspec.Struct, frozen=True, gc=False):
    """Running aggregates of one relationship. Times are epoch ms; days are UTC day numbers.

    A msgspec struct rather than a frozen dataclass: `step` makes one per touch, and a frozen
    dataclass sets each of its 28 fields through `object.__setattr__` (a changed copy 6.1-6.5
    us here, against 0.9-1.1 us for `msgspec.structs.replace`; `bench/bench_replay_parts.py`). No GC
    header: it holds only numbers, strings, tuples, sets and a dict of those, never a cycle.
    """

    count: int = 0
    first_at: int | None = None
    last_at: int | None = None
    last_in_at: int | None = None
    last_out_at: int | None = None
    last_platform: str | None = None
    last_order: tuple[int, str] | None = None
    our_open_since: int | None = None
    our: Latencies = Latencies()
    their_open_since: int | None = None
    their: Latencies = Latencies()
    gives_out: float = 0.0
    asks_out: float = 0.0
    gives_in: float = 0.0
    asks_in: float = 0.0
    # day -> (asks_out, gives_out, inbound touches, outbound touches), trailing window only
    trailing: tuple[tuple[int, float, float, int, int], ...] = ()
    strength: float = 0.0
    strength_at: int | None = None
    last_conv_day: int | None = None
    gaps: tuple[tuple[int, int], ...] = ()  # (gap in days, how many)
    # conversation id -> (two earliest inbound turn times, two earliest outbound turn times)
    conversations: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]] = msgspec.field(
        default_factory=dict
    )
    run: Run | None = None
    run_qualified_at: tuple[int, ...] = ()
    platforms: frozenset[str] = frozenset()
    platform_moves: int = 0
    last_conv: tuple[int, str] | None = None  # (at, platform) of the last conversational turn
    members: frozenset[str] = frozenset()
    late: int = 0


def _day(at: int) -> int:
    return at // DAY_MS


def _strength(t: Tally, at: int, weight: float, policy: Policy) -> tuple[float, int]:
    """Decayed sum valid at the latest event time (never a wall clock)."""
    if t.strength_at is None:
        return weight, at
    if at >= t.strength_at:
        decay = 0.5 ** ((at - t.strength_at) / policy.half_life_ms)
        return t.strength * decay + weight, at
    return t.strength + weight * 0.5 ** ((t.strength_at - at) / policy.half_life_ms), t.strength_at


def _counted(
    row: tuple[float, float, int, int], touch: Touch, weight: float
) -> tuple[float, float, int, int]:
    """A trailing day's (asks_out, gives_out, inbound, outbound) with one more touch."""
    a, g, i, o = row
    if touch.inbound:
        return a, g, i + 1, o
    if touch.intent == "ask":
        return a + weight, g, i, o + 1
    return a, g + weight, i, o + 1


def _trailing(
    t: Tally, touch: Touch, weight: float, policy: Policy, newest: int
) -> tuple[Any, ...]:
    day = _day(touch.at)
    horizon = _day(newest) - policy.trailing_days + 1
    trailing = t.trailing
    if trailing and trailing[0][0] >= horizon and day >= trailing[-1][0]:
        # The common case (an in-order touch, nothing to drop): change or add the last day only.
        if day == trailing[-1][0]:
            return (*trailing[:-1], (day, *_counted(trailing[-1][1:], touch, weight)))
        return (*trailing, (day, *_counted((0.0, 0.0, 0, 0), touch, weight)))
    rows = {d: (a, g, i, o) for d, a, g, i, o in trailing if d >= horizon}
    if day >= horizon:
        rows[day] = _counted(rows.get(day, (0.0, 0.0, 0, 0)), touch, weight)
    return tuple((d, *rows[d]) for d in sorted(rows))


def _give_take(t: Tally, touch: Touch, weight: float) -> dict[str, float]:
    ask = touch.intent == "ask"
    if touch.inbound:
        if ask:
            return {"asks_in": t.asks_in + weight}
        return {"gives_in": t.gives_in + weight}
    if ask:
        return {"asks_out": t.asks_out + weight}
    return {"gives_out": t.gives_out + weight}


def _earliest_two(times: tuple[int, ...], at: int) -> tuple[int, ...]:
    return tuple(sorted((*times, at))[:2])


def _conversation(t: Tally, touch: Touch) -> dict[str, Any]:
    """Turns of a conversation with an id: its two earliest inbound and outbound times.

    The conversation qualified at the later of its 2nd inbound and 2nd outbound turn, which does
    not depend on arrival order, so even a late turn gives the exact qualification time.
    """
    cid = touch.conversation_id
    if cid is None:
        return {}
    inbound, outbound = t.conversations.get(cid, ((), ()))
    if touch.inbound:
        updated = (_earliest_two(inbound, touch.at), outbound)
    else:
        updated = (inbound, _earliest_two(outbound, touch.at))
    if updated == (inbound, outbound):
        return {}
    return {"conversations": {**t.conversations, cid: updated}}


def qualified_times(t: Tally) -> list[int]:
    """When each conversation and run qualified, ascending (SPEC: >= 2 turns each way)."""
    by_id = [max(i[1], o[1]) for i, o in t.conversations.values() if len(i) == 2 and len(o) == 2]
    return sorted([*by_id, *t.run_qualified_at])


def _common(t: Tally, touch: Touch, policy: Policy, newest: int) -> dict[str, Any]:
    """The order-free part of a step."""
    weight = policy.weight(touch.direction, touch.kind, touch.intent)
    strength, strength_at = _strength(t, touch.at, weight, policy)
    out: dict[str, Any] = {
        "count": t.count + 1,
        "first_at": touch.at if t.first_at is None else min(t.first_at, touch.at),
        "last_at": touch.at if t.last_at is None else max(t.last_at, touch.at),
        "strength": strength,
        "strength_at": strength_at,
        "trailing": _trailing(t, touch, weight, policy, max(newest, touch.at)),
        **_give_take(t, touch, weight),
    }
    if touch.inbound:
        out["last_in_at"] = touch.at if t.last_in_at is None else max(t.last_in_at, touch.at)
    else:
        out["last_out_at"] = touch.at if t.last_out_at is None else max(t.last_out_at, touch.at)
    if t.last_order is None or touch.order > t.last_order:
        out["last_order"] = touch.order
        out["last_platform"] = touch.platform
    if touch.platform not in t.platforms:
        out["platforms"] = t.platforms | {touch.platform}
    if touch.member is not None and touch.member not in t.members:
        out["members"] = t.members | {touch.member}
    if touch.conversational:
        out.update(_conversation(t, touch))
    return out


_replace = msgspec.structs.replace


def _evolve(t: Tally, changes: dict[str, Any]) -> Tally:
    """`t` with `changes` (the hot path of every step)."""
    return _replace(t, **changes)


def step(t: Tally, touch: Touch, policy: Policy) -> Tally:
    """Fold the next touch in (occurred_at, event_id) order.

    `projections.in_order` and the replay's native core (native/src/fold.rs and
    native/src/relationship.rs) fold the same way, tested equal bit for bit: change them
    together.
    """
    out = _common(t, touch, policy, touch.at)
    if touch.conversational:
        out.update(_waits(t, touch, policy))
        out.update(_rhythm(t, touch, policy))
    return _evolve(t, out)


def step_late(t: Tally, touch: Touch, policy: Policy) -> Tally:
    """Apply a touch that arrived after its lateness window closed (see module docstring)."""
    out = _common(t, touch, policy, t.last_at if t.last_at is not None else touch.at)
    out["late"] = t.late + 1
    return _evolve(t, out)


def _waits(t: Tally, touch: Touch, policy: Policy) -> dict[str, Any]:
    """Inbound opens our wait (if none is open) and closes theirs; outbound the mirror."""
    limit = policy.exact_latencies
    out: dict[str, Any] = {}
    if touch.inbound:
        if t.our_open_since is None:
            out["our_open_since"] = touch.at
        if t.their_open_since is not None:
            out["their"] = t.their.add(touch.at - t.their_open_since, limit)
            out["their_open_since"] = None
    else:
        if t.their_open_since is None:
            out["their_open_since"] = touch.at
        if t.our_open_since is not None:
            out["our"] = t.our.add(touch.at - t.our_open_since, limit)
            out["our_open_since"] = None
    return out


def _rhythm(t: Tally, touch: Touch, policy: Policy) -> dict[str, Any]:
    """Gaps between conversational days, platform moves, and id-less conversation runs."""
    out: dict[str, Any] = {}
    day = _day(touch.at)
    if t.last_conv_day is None or day > t.last_conv_day:
        if t.last_conv_day is not None:
            gaps = dict(t.gaps)
            gap = day - t.last_conv_day
            gaps[gap] = gaps.get(gap, 0) + 1
            out["gaps"] = tuple(sorted(gaps.items()))
        out["last_conv_day"] = day
    if t.last_conv is not None:
        previous_at, previous_platform = t.last_conv
        if (
            previous_platform != touch.platform
            and touch.at - previous_at <= policy.platform_move_days * DAY_MS
        ):
            out["platform_moves"] = t.platform_moves + 1
    out["last_conv"] = (touch.at, touch.platform)
    if touch.conversation_id is None:
        out.update(_run(t, touch, policy))
    return out


def _run(t: Tally, touch: Touch, policy: Policy) -> dict[str, Any]:
    run = t.run
    if run is None or touch.at - run.last_at >= policy.conversation_gap_days * DAY_MS:
        run = Run(touch.at, 0, 0, False)
    run = Run(
        touch.at,
        run.inbound + (1 if touch.inbound else 0),
        run.outbound + (0 if touch.inbound else 1),
        run.qualified,
    )
    out: dict[str, Any] = {}
    if not run.qualified and run.inbound >= 2 and run.outbound >= 2:
        run = _replace(run, qualified=True)
        out["run_qualified_at"] = (*t.run_qualified_at, touch.at)
    out["run"] = run
    return out
