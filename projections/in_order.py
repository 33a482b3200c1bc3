"""Many touches folded at once: exactly `step` repeated, with the running aggregates in locals.

`step` makes a new frozen `Tally` per touch, which is what a live relationship needs (the view
after each touch is a snapshot that settling and a reordered touch start from). A replay folds
whole sorted histories and only needs the tally at two points (settled, and the view), so this
fold keeps the aggregates in local variables and builds one `Tally` at the end. It performs the
same float operations in the same order as `step` (weights, decay, trailing sums), so the result
equals `reduce(step)` field for field, floats included (tested with hypothesis against `step`
on arbitrary tallies and touch sequences, in order or not).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from projections.policy import DAY_MS, Policy
from projections.tally import Run, Tally, Touch


def _native_fold_of() -> Any:
    """The same fold in Rust (native/), where it is built; None in a Python-only install."""
    try:
        import rapport_native
    except ImportError:
        return None
    return rapport_native.fold_in_order


_native_fold = _native_fold_of()


def fold_in_order(t: Tally, touches: Sequence[Touch], policy: Policy, native: bool = True) -> Tally:
    """`step(...step(step(t, touches[0]), touches[1])...)`, built once. `t` is not modified.

    Folded by the native fold (`native/src/fold.rs`, the same float operations in the same
    order, tested equal) where it is built and `native` is true, else by `fold_in_python`.
    """
    if native and _native_fold is not None:
        folded: Tally | None = _native_fold(t, touches, policy, (Tally, Run))
        if folded is not None:  # None: a starting tally it leaves to Python
            return folded
    return fold_in_python(t, touches, policy)


def fold_in_python(t: Tally, touches: Sequence[Touch], policy: Policy) -> Tally:
    """`fold_in_order` in Python: the reference the native fold is tested against."""
    half_life = policy.half_life_ms
    trailing_days = policy.trailing_days
    limit = policy.exact_latencies
    move_ms = policy.platform_move_days * DAY_MS
    gap_ms = policy.conversation_gap_days * DAY_MS
    weight_of = policy.weight
    weights: dict[tuple[bool, str, str], float] = {}

    count, first_at, last_at = t.count, t.first_at, t.last_at
    last_in_at, last_out_at = t.last_in_at, t.last_out_at
    last_platform, last_order = t.last_platform, t.last_order
    our_open, their_open = t.our_open_since, t.their_open_since
    our_new: list[int] = []  # latencies to add to t.our / t.their, in order
    their_new: list[int] = []
    gives_out, asks_out, gives_in, asks_in = t.gives_out, t.asks_out, t.gives_in, t.asks_in
    trailing = [list(row) for row in t.trailing]  # [day, asks_out, gives_out, in, out]
    trailing_changed = False
    strength, strength_at = t.strength, t.strength_at
    last_conv_day = t.last_conv_day
    gaps: dict[int, int] | None = None  # a copy of t.gaps once one changes
    conversations: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] | None = None
    run = t.run
    run_at, run_in, run_out, run_ok = (
        (run.last_at, run.inbound, run.outbound, run.qualified) if run else (0, 0, 0, False)
    )
    has_run = run is not None
    run_qualified_at = list(t.run_qualified_at)
    platforms, members = t.platforms, t.members
    new_platforms: set[str] | None = None
    new_members: set[str] | None = None
    platform_moves, last_conv = t.platform_moves, t.last_conv

    for touch in touches:
        at = touch.at
        inbound = touch.inbound
        intent = touch.intent
        platform = touch.platform
        key = (inbound, touch.kind, intent)
        weight = weights.get(key)
        if weight is None:
            weight = weights[key] = weight_of("inbound" if inbound else "outbound", *key[1:])
        # _strength
        if strength_at is None:
            strength, strength_at = weight, at
        elif at >= strength_at:
            strength = strength * 0.5 ** ((at - strength_at) / half_life) + weight
            strength_at = at
        else:
            strength = strength + weight * 0.5 ** ((strength_at - at) / half_life)
        count += 1
        if first_at is None or at < first_at:
            first_at = at
        if last_at is None or at > last_at:
            last_at = at
        # _trailing (newest = at)
        day = at // DAY_MS
        horizon = day - trailing_days + 1
        trailing_changed = True
        if trailing and trailing[0][0] >= horizon and day >= trailing[-1][0]:
            if day == trailing[-1][0]:
                row = trailing[-1]
            else:
                row = [day, 0.0, 0.0, 0, 0]
                trailing.append(row)
        else:
            trailing = [r for r in trailing if r[0] >= horizon]
            row = None
            if day >= horizon:
                for r in trailing:
                    if r[0] == day:
                        row = r
                if row is None:
                    row = [day, 0.0, 0.0, 0, 0]
                    trailing.append(row)
                    trailing.sort(key=lambda r: r[0])
        ask = intent == "ask"
        if row is not None:
            if inbound:
                row[3] += 1
            elif ask:
                row[1] += weight
                row[4] += 1
            else:
                row[2] += weight
                row[4] += 1
        # _give_take
        if inbound:
            if ask:
                asks_in = asks_in + weight
            else:
                gives_in = gives_in + weight
            if last_in_at is None or at > last_in_at:
                last_in_at = at
        else:
            if ask:
                asks_out = asks_out + weight
            else:
                gives_out = gives_out + weight
            if last_out_at is None or at > last_out_at:
                last_out_at = at
        order = (at, touch.event_id)
        if last_order is None or order > last_order:
            last_order = order
            last_platform = platform
        if platform not in platforms and (new_platforms is None or platform not in new_platforms):
            if new_platforms is None:
                new_platforms = set(platforms)
            new_platforms.add(platform)
        member = touch.member
        if (
            member is not None
            and member not in members
            and (new_members is None or member not in new_members)
        ):
            if new_members is None:
                new_members = set(members)
            new_members.add(member)
        if not touch.conversational:
            continue
        cid = touch.conversation_id
        if cid is not None:  # _conversation
            if conversations is None:
                conversations = dict(t.conversations)
            ins, outs = conversations.get(cid, ((), ()))
            if inbound:
                updated = (tuple(sorted((*ins, at))[:2]), outs)
            else:
                updated = (ins, tuple(sorted((*outs, at))[:2]))
            if updated != (ins, outs):
                conversations[cid] = updated
        # _waits
        if inbound:
            if our_open is None:
                our_open = at
            if their_open is not None:
                their_new.append(at - their_open)
                their_open = None
        else:
            if their_open is None:
                their_open = at
            if our_open is not None:
                our_new.append(at - our_open)
                our_open = None
        # _rhythm
        if last_conv_day is None or day > last_conv_day:
            if last_conv_day is not None:
                if gaps is None:
                    gaps = dict(t.gaps)
                gap = day - last_conv_day
                gaps[gap] = gaps.get(gap, 0) + 1
            last_conv_day = day
        if last_conv is not None:
            previous_at, previous_platform = last_conv
            if previous_platform != platform and at - previous_at <= move_ms:
                platform_moves += 1
        last_conv = (at, platform)
        if cid is None:  # _run
            if not has_run or at - run_at >= gap_ms:
                run_in, run_out, run_ok = 0, 0, False
                has_run = True
            run_at = at
            if inbound:
                run_in += 1
            else:
                run_out += 1
            if not run_ok and run_in >= 2 and run_out >= 2:
                run_ok = True
                run_qualified_at.append(at)

    return Tally(
        count=count,
        first_at=first_at,
        last_at=last_at,
        last_in_at=last_in_at,
        last_out_at=last_out_at,
        last_platform=last_platform,
        last_order=last_order,
        our_open_since=our_open,
        our=t.our.add_many(our_new, limit),
        their_open_since=their_open,
        their=t.their.add_many(their_new, limit),
        gives_out=gives_out,
        asks_out=asks_out,
        gives_in=gives_in,
        asks_in=asks_in,
        trailing=tuple(tuple(r) for r in trailing) if trailing_changed else t.trailing,  # type: ignore[misc]
        strength=strength,
        strength_at=strength_at,
        last_conv_day=last_conv_day,
        gaps=t.gaps if gaps is None else tuple(sorted(gaps.items())),
        conversations=t.conversations if conversations is None else conversations,
        run=Run(run_at, run_in, run_out, run_ok) if has_run else None,
        run_qualified_at=tuple(run_qualified_at),
        platforms=platforms if new_platforms is None else frozenset(new_platforms),
        platform_moves=platform_moves,
        last_conv=last_conv,
        members=members if new_members is None else frozenset(new_members),
        late=t.late,
    )
