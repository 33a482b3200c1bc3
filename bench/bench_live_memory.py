"""Memory of the worker's decoded relationship states, per touch in their lateness window.

The load run's worker grows while the relationships' 7-day windows fill (docs/benchmarks.md).
This measures what one touch in a window costs in memory, on the live path: X DM deliveries
like the load run's (`bench/bench_load.py`: contacts in turn, each alternating inbound and
outbound), normalized by the real adapter, encoded as the worker reads them from
`rapport.events`, turned into touches (`touch_from_doc`), folded one batch at a time
(`apply_all` with the live snapshot stride) and written (`to_json`, which keeps the encoding
the next write extends), exactly as the `project` agent does. Then it reads a copy of every
state back from its stored JSON as the worker does (`stored_state`: one typed decode, a worker
after a restart or a cache miss), and times that read twice, untraced: the first pass also takes
fresh memory from the system, the second reuses what the first freed (a worker's steady state);
then, for comparison, the generic decode and `from_dict` it replaced. And it prints the worker's
estimate of the same states (`streams.live_states.footprint`, what its memory budget counts)
against the traced bytes.

Baseline in the same run: the stored JSON of the same states (bytes per touch of what the table
and its changelog hold). Memory is traced with `tracemalloc` around the states only (the events
are dropped batch by batch), so the figure is what the live-state cache holds per touch.

    .venv/bin/python bench/bench_live_memory.py [--contacts 2000] [--touches 60]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from events.adapters import normalize  # noqa: E402
from events.envelope import RawEnvelope  # noqa: E402
from events.models import dump_event  # noqa: E402
from projections.policy import DEFAULT_POLICY  # noqa: E402
from projections.relationship import (  # noqa: E402
    LIVE_SNAPSHOT_STRIDE,
    RelationshipState,
    apply_all,
    touch_from_doc,
)
from rapport.demo import Message, x_dm_delivery  # noqa: E402
from rapport.workspaces import OwnedAccount, WorkspaceConfig  # noqa: E402
from streams.live_states import footprint  # noqa: E402
from streams.tables import stored_state  # noqa: E402

OWNED = "1000"
CONTACT_BASE = 2_000_000
WORKSPACE = WorkspaceConfig(
    name="load", accounts=(OwnedAccount(platform="x", user_id=OWNED, member="brand"),)
)


def round_of_docs(round_no: int, contacts: int, t0_s: int) -> list[dict[str, object]]:
    """One delivery per contact, as the worker decodes them from `rapport.events`."""
    docs: list[dict[str, object]] = []
    received = datetime.now(UTC)
    for c in range(contacts):
        dm_id = round_no * contacts + c + 1
        contact = str(CONTACT_BASE + dm_id % contacts)
        inbound = (dm_id // contacts) % 2 == 0
        sender, recipient = (contact, OWNED) if inbound else (OWNED, contact)
        body = x_dm_delivery(Message(dm_id, sender, recipient, t0_s + dm_id // 1000), OWNED)
        envelope = RawEnvelope(workspace="load", source="x", received_at=received, body=body)
        for event in normalize(WORKSPACE, envelope).events:
            docs.append(json.loads(dump_event(event)))
    return docs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=2_000)
    parser.add_argument("--touches", type=int, default=60, help="touches per relationship")
    args = parser.parse_args()
    t0_s = int(datetime.now(UTC).timestamp())
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    states: dict[str, RelationshipState] = {}
    stored: dict[str, bytes] = {}
    for round_no in range(args.touches):
        docs = round_of_docs(round_no, args.contacts, t0_s)
        for doc in docs:
            touch = touch_from_doc(doc)
            assert touch is not None
            key = str(doc["contact"])
            state = states.get(key) or RelationshipState(workspace="load", contact_id=key)
            state = states[key] = apply_all(state, [touch], DEFAULT_POLICY, LIVE_SNAPSHOT_STRIDE)
            stored[key] = state.to_json()
        del docs, doc, touch, state
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0]
    stored_bytes = sum(len(v) for v in stored.values())
    live_bytes = traced - base - sys.getsizeof(stored) - stored_bytes  # the states alone
    touches = sum(len(s.timeline) for s in states.values())
    before_read = tracemalloc.get_traced_memory()[0]
    read_back = {k: stored_state(v) for k, v in stored.items()}
    gc.collect()
    read_bytes = tracemalloc.get_traced_memory()[0] - before_read
    tracemalloc.stop()
    read_s = []  # untraced: what a cache miss costs the worker
    for _ in range(2):  # the first pass also takes fresh memory from the system; then reused
        started = time.perf_counter()
        for value in stored.values():
            stored_state(value)
        read_s.append(time.perf_counter() - started)
    started = time.perf_counter()
    for value in stored.values():  # the generic decode, then a conversion (the code before)
        RelationshipState.from_dict(msgspec.json.decode(value))
    generic_s = time.perf_counter() - started
    assert all(read_back[k] == states[k] for k in states), "a state read back differs"
    print(
        f"python {platform.python_version()}, {args.contacts:,} relationships x "
        f"{args.touches} touches in the window ({touches:,} touches), X DMs like the load run"
    )
    print(f"stored JSON (the baseline):        {stored_bytes / touches:>7,.0f} bytes per touch")
    print(
        f"live states (folded and written): {live_bytes / touches:>7,.0f} bytes per touch "
        f"= {live_bytes / stored_bytes:.2f}x the stored JSON"
    )
    print(
        f"states read back from the table:  {read_bytes / touches:>7,.0f} bytes per touch "
        f"= {read_bytes / stored_bytes:.2f}x the stored JSON"
    )
    estimate = sum(footprint(s) for s in states.values())
    print(
        f"the worker's estimate (footprint):  {estimate / touches:>7,.0f} bytes per touch "
        f"= {estimate / live_bytes:.2f}x the live states, {estimate / read_bytes:.2f}x read back"
    )
    for name, seconds in zip(("first pass", "second pass"), read_s, strict=True):
        print(
            f"reading a state back (a cache miss), {name}: "
            f"{seconds / len(stored) * 1e6:,.0f} us per state, "
            f"{seconds / touches * 1e6:.2f} us per touch in its window"
        )
    print(
        f"  the generic decode and from_dict instead (steady): "
        f"{generic_s / len(stored) * 1e6:,.0f} us per state = "
        f"{generic_s / read_s[1]:.2f}x the typed decode's second pass"
    )


if __name__ == "__main__":
    main()
