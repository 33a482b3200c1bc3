"""The project agent's per-batch work on busy relationships: fold, then write the whole state.

In the same run, on the same touches (a Zipf-like inbox: 100,000 events over 2,000 contacts,
exponent 0.8, so the busiest contact has about 5,400 events inside the lateness window), batches
of 200 events as the worker takes them, per touched relationship:

  baseline:  `apply_all` keeping every snapshot, then `to_dict()` encoded in full (msgspec), the
             write path before the state kept its encoding;
  worker:    `apply_all` with the live worker's snapshot stride, then `to_json()` (the timeline
             and settled encodings extended from the previous write), as `streams.app` does.

Both also build the emitted `view_row`. Reports events/s for each, the ratio, and checks that
both write the same JSON.

    .venv/bin/python bench/bench_state.py [--events 100000] [--contacts 2000] [--batch 200]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from projections.policy import DEFAULT_POLICY
from projections.relationship import (
    LIVE_SNAPSHOT_STRIDE,
    RelationshipState,
    apply_all,
    view_row,
)
from projections.tally import Touch


def workload(events: int, contacts: int, seed: int = 1) -> list[tuple[int, Touch]]:
    rng = random.Random(seed)
    weights = [1 / (k + 1) ** 0.8 for k in range(contacts)]
    picks = rng.choices(range(contacts), weights=weights, k=events)
    t0 = 1_790_000_000_000
    return [
        (
            c,
            Touch(
                at=t0 + n * 5_000,  # 100,000 events span under 6 days: all inside the window
                event_id=hashlib.sha256(str(n).encode()).hexdigest(),
                inbound=rng.random() < 0.5,
                kind="email",
                conversational=True,
                intent="neutral",
                platform="email",
                member="m",
            ),
        )
        for n, c in enumerate(picks)
    ]


def run(
    touches: list[tuple[int, Touch]],
    batch: int,
    fold: Callable[[RelationshipState, list[Touch]], RelationshipState],
    write: Callable[[RelationshipState], bytes],
) -> tuple[float, dict[int, bytes]]:
    states: dict[int, RelationshipState] = {}
    last: dict[int, bytes] = {}
    gc.collect()
    started = time.perf_counter()
    for start in range(0, len(touches), batch):
        pending: dict[int, list[Touch]] = {}
        for contact, touch in touches[start : start + batch]:
            pending.setdefault(contact, []).append(touch)
        for contact, items in pending.items():
            state = states.get(contact) or RelationshipState(workspace="w", contact_id=str(contact))
            state = states[contact] = fold(state, items)
            last[contact] = write(state)
            json.dumps(view_row(state, DEFAULT_POLICY))
    return time.perf_counter() - started, last


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--contacts", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    touches = workload(args.events, args.contacts)
    busiest = max(sum(1 for c, _ in touches if c == k) for k in range(min(args.contacts, 5)))
    print(
        f"python {platform.python_version()}, {args.events:,} events over {args.contacts:,} "
        f"contacts (busiest {busiest:,}), batches of {args.batch}"
    )
    base_s, base = run(
        touches,
        args.batch,
        lambda s, items: apply_all(s, items, DEFAULT_POLICY),
        lambda s: msgspec.json.encode(s.to_dict()),
    )
    live_s, live = run(
        touches,
        args.batch,
        lambda s, items: apply_all(s, items, DEFAULT_POLICY, LIVE_SNAPSHOT_STRIDE),
        lambda s: s.to_json(),
    )
    same = all(json.loads(base[k]) == json.loads(live[k]) for k in base)
    print(f"baseline (full encoding, every snapshot): {args.events / base_s:>9,.0f} events/s")
    stride = LIVE_SNAPSHOT_STRIDE
    print(f"worker (extended encoding, stride {stride}):   {args.events / live_s:>9,.0f} events/s")
    print(f"ratio worker / baseline: {base_s / live_s:.2f}x; same stored JSON: {same}")
    if not same:
        raise SystemExit("the two write paths stored different states")


if __name__ == "__main__":
    main()
