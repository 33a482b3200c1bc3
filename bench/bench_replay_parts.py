"""The replay's parts in memory, each against a baseline in the same run, on bench_replay's events.

No broker and no ClickHouse: what one shard does with its share of the log, part by part (CPU
seconds of this process, cyclic GC off as in the replay):
  decode:        `Recalculation.add` (decoding, the touch and the interaction row) per event,
                 against msgspec decoding the same values into the same struct alone; and a
                 shard's decoding of each fetch with its rows to Arrow, the native decoder
                 (`native/`) against the Python decoder alone (best of three alternated);
  rows to Arrow: `interaction_arrow` per row, one fetch (about 500 records) at a time as a shard
                 does, against 8,192 at a time (the best of three alternated rounds each: pyarrow's
                 first conversions cost more, and whichever size is timed first pays them);
  to the parent: the shard's table (one chunk per fetch) through a pipe to the parent, as an
                 Arrow IPC stream (`send_arrow`, `unpack_arrow`) against pickled (`send`, as
                 before), the CPU of both processes (best of three alternated rounds); and the
                 stream in a shared-memory file the parent maps (what the shards do now)
                 against the stream in the pipe;
  fold:          `replayed` per touch against `apply_all` of a fresh state (the same result);
                 and the shard's whole fold (`fold_jobs`: state, read-model row, stored JSON);
                 and a shard's fold as it runs with the native core (`fold_natively`: touches
                 kept in Rust, grouped, sorted and replayed there straight into the stored JSON
                 and the relationships' Arrow columns) against Python alone, both with the
                 relationship rows as the Arrow table a shard sends;
  tally JSON:    a tally's stored JSON, encoded: `tally_to_json` (`structs.asdict` and six
                 fields converted) against field by field (its form before) and against a loop
                 over `fields(Tally)` with isinstance (its form before that), same bytes checked;
  fingerprint:   `seen.fingerprint` (a regex checks for our 32 hex digits) against the same
                 rule with `str.strip` (tried, not kept), same values checked; and a
                 relationship's fingerprints at once (`seen.fingerprints`, what `replayed`
                 takes) against one by one (before);
  a tally:       a changed copy of a `Tally` (msgspec `structs.replace`, as `step` makes per
                 touch) against the same copy of a frozen slotted dataclass with the same
                 fields (what `Tally` was: each field set through `object.__setattr__`);
  per relationship: the shard's fold split into its parts (`replayed`, the read-model row,
                 the stored JSON, the relationship rows to Arrow);
and the size of the worker-state records the fold makes.

    .venv/bin/python bench/bench_replay_parts.py [--events 250000]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from msgspec.structs import fields

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec
import pyarrow as pa

from bench.bench_replay import records
from projections import seen
from projections.latency import Latencies
from projections.policy import DEFAULT_POLICY
from projections.relationship import (
    RelationshipState,
    apply_all,
    replayed,
    tally_to_json,
    view_row,
)
from projections.tally import Run, Tally
from streams.replay import native
from streams.replay.arrow import (
    interaction_arrow,
    relationship_arrow,
    send_arrow,
    shared_memory_dir,
    unpack_arrow,
)
from streams.replay.recalculation import _DECODE, Recalculation, fold_jobs, jobs_of

FETCH = 500  # records per partition fetch, about, with these events
BIG = 8_192


def cpu(call: Callable[[], Any]) -> float:
    start = time.process_time()
    call()
    return time.process_time() - start


_TALLY_FIELDS = tuple(f.name for f in fields(Tally))  # `dataclasses.fields` was cached too


# What `Tally` was: a frozen slotted dataclass of the same fields, copied field by field.
_DataclassTally = dataclasses.make_dataclass(
    "_DataclassTally", [(name, Any) for name in _TALLY_FIELDS], frozen=True, slots=True
)
_set = object.__setattr__


def dataclass_evolve(t: Any, changes: dict[str, Any]) -> Any:
    """`projections.tally._evolve` as it was for the dataclass."""
    new = object.__new__(_DataclassTally)
    for name in _TALLY_FIELDS:
        _set(new, name, changes[name] if name in changes else getattr(t, name))
    return new


def field_by_field_tally_json(t: Tally) -> dict[str, Any]:
    """`tally_to_json` as it was before `structs.asdict`: every field by name."""
    run = t.run
    return {
        "count": t.count,
        "first_at": t.first_at,
        "last_at": t.last_at,
        "last_in_at": t.last_in_at,
        "last_out_at": t.last_out_at,
        "last_platform": t.last_platform,
        "last_order": None if t.last_order is None else list(t.last_order),
        "our_open_since": t.our_open_since,
        "our": t.our.to_json(),
        "their_open_since": t.their_open_since,
        "their": t.their.to_json(),
        "gives_out": t.gives_out,
        "asks_out": t.asks_out,
        "gives_in": t.gives_in,
        "asks_in": t.asks_in,
        "trailing": [list(row) for row in t.trailing],
        "strength": t.strength,
        "strength_at": t.strength_at,
        "last_conv_day": t.last_conv_day,
        "gaps": [list(gap) for gap in t.gaps],
        "conversations": {k: [list(v[0]), list(v[1])] for k, v in t.conversations.items()},
        "run": None if run is None else [run.last_at, run.inbound, run.outbound, run.qualified],
        "run_qualified_at": list(t.run_qualified_at),
        "platforms": sorted(t.platforms),
        "platform_moves": t.platform_moves,
        "last_conv": None if t.last_conv is None else list(t.last_conv),
        "members": sorted(t.members),
        "late": t.late,
    }


def generic_tally_json(t: Tally) -> dict[str, Any]:
    """`tally_to_json` as it was earlier still: a loop over the fields, each converted by its
    type."""
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


_HEX_DIGITS = "0123456789abcdef"


def stripped_fingerprint(event_id: str) -> int:
    if len(event_id) == 32 and not event_id.strip(_HEX_DIGITS):
        return int(event_id[:16], 16)
    return seen._hashed(event_id)


def streamed_send(conn: Any, table: Any) -> None:
    send_arrow(conn, "rows", table, table.num_rows)


def streamed_recv(conn: Any) -> Any:
    return unpack_arrow(conn, conn.recv())[1]


SPOOL: list[str] = []  # the shared-memory directory of this run


def spooled_send(conn: Any, table: Any) -> None:
    send_arrow(conn, "rows", table, table.num_rows, spool=SPOOL[0])


def pickled_send(conn: Any, table: Any) -> None:
    conn.send(("rows", table, table.num_rows))


def pickled_recv(conn: Any) -> Any:
    return conn.recv()[1]


def _sender(conn: Any, table: Any, send: Callable[[Any, Any], None]) -> None:
    started = time.process_time()
    send(conn, table)
    conn.send(time.process_time() - started)


def transfer_cpu(table: Any, send: Callable[[Any, Any], None], recv: Callable[[Any], Any]) -> float:
    """CPU seconds of a forked sender and this receiver to move `table` through a pipe."""
    context = multiprocessing.get_context("fork")
    mine, theirs = context.Pipe()
    process = context.Process(target=_sender, args=(theirs, table, send))
    process.start()
    started = time.process_time()
    got = recv(mine)
    received = time.process_time() - started
    sent = float(mine.recv())
    process.join()
    assert got.equals(table), "the table changed on the way"
    return sent + received


def line(name: str, value: float, unit: str, base_name: str, base: float) -> None:
    ratio = base / value
    print(f"{name:<34} {value:8.2f} {unit}   {base_name:<30} {base:8.2f} {unit}   {ratio:5.2f}x")


def read_batches(batches: list[list[tuple[bytes | None, bytes]]], use_native: bool) -> None:
    """What a shard does with each fetch: decode it (`add_records`), its rows to Arrow."""
    calc = Recalculation(None, flat_rows=True, native=use_native)
    for batch in batches:
        calc.add_records(batch)
        calc.take_arrow()


def shard_fold(values: list[bytes], use_native: bool) -> float:
    """CPU seconds of a shard's fold of `values` (read beforehand, not timed): the states, their
    table records and the `relationships` rows as the Arrow table the shard sends."""
    calc = Recalculation(None, flat_rows=True, native=use_native)
    calc.add_records([(None, v) for v in values])
    calc.take_arrow()
    kept: list[Any] = []

    def emit(views: list[Any], changelog: list[Any], touches: int) -> None:
        kept.extend(views)

    def fold() -> None:
        tables = []
        if calc.folds_natively:
            _, folding = calc.fold_natively({}, (), lambda _: DEFAULT_POLICY)
            tables.append(folding(emit)[1])
        else:
            _, groups = calc.assign({})
            jobs, policies = jobs_of(groups, lambda _: DEFAULT_POLICY)
            kept.extend(fold_jobs(jobs, policies, False, native=False)[0])
        tables.append(relationship_arrow([view for _, view in kept]))

    return cpu(fold)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=250_000, help="one shard's share")
    args = parser.parse_args()
    values = [v for _, v in records(args.events)]
    n = len(values)
    gc.collect()
    gc.disable()
    us = 1e6 / n

    calc = Recalculation(None, flat_rows=True, native=False)
    decode_all = cpu(lambda: [calc.add(v) for v in values])
    msgspec_only = cpu(lambda: [_DECODE(v) for v in values])
    print(f"{n:,} events, {'':<18} per event/row/touch      baseline (same run)")
    line(
        "decode (Recalculation.add)",
        decode_all * us,
        "us",
        "msgspec decode alone",
        msgspec_only * us,
    )

    rows = calc.take_rows()
    interaction_arrow(rows[:10])  # imports pyarrow, as the replay does before it forks its shards
    if native.module() is not None:
        batches: list[list[tuple[bytes | None, bytes]]] = [
            [(None, v) for v in values[i : i + FETCH]] for i in range(0, n, FETCH)
        ]
        fast = slow = float("inf")
        for _ in range(3):  # alternated, the best of each
            fast = min(fast, cpu(lambda: read_batches(batches, True)))
            slow = min(slow, cpu(lambda: read_batches(batches, False)))
        line("decode + Arrow, native decoder", fast * us, "us", "Python decoder", slow * us)
    else:
        print("decode + Arrow, native decoder: not built (make setup builds native/)")
    small = big = float("inf")
    for _ in range(3):  # alternated, the best of each: the order moves single runs by 20-50%
        small = min(
            small, cpu(lambda: [interaction_arrow(rows[i : i + FETCH]) for i in range(0, n, FETCH)])
        )
        big = min(
            big, cpu(lambda: [interaction_arrow(rows[i : i + BIG]) for i in range(0, n, BIG)])
        )
    line(f"rows to Arrow, {FETCH} at a time", small * us, "us", f"{BIG:,} at a time", big * us)
    table = pa.concat_tables([interaction_arrow(rows[i : i + FETCH]) for i in range(0, n, FETCH)])
    rows.clear()
    streamed = pickled = spooled = float("inf")
    with tempfile.TemporaryDirectory(prefix="rapport-bench-", dir=shared_memory_dir()) as spool:
        SPOOL.append(spool)
        for _ in range(3):
            streamed = min(streamed, transfer_cpu(table, streamed_send, streamed_recv))
            pickled = min(pickled, transfer_cpu(table, pickled_send, pickled_recv))
            spooled = min(spooled, transfer_cpu(table, spooled_send, streamed_recv))
    line("to the parent, an Arrow stream", streamed * us, "us", "pickled", pickled * us)
    line("  in shared memory", spooled * us, "us", "in the pipe (before)", streamed * us)
    del table

    _, groups = calc.assign({})
    jobs, policies = jobs_of(groups, lambda _: DEFAULT_POLICY)
    states: list[RelationshipState] = []
    fast = cpu(lambda: states.extend(replayed(w, c, ts, DEFAULT_POLICY) for w, c, ts in jobs))
    expected: list[RelationshipState] = []
    slow = cpu(
        lambda: expected.extend(
            apply_all(RelationshipState(workspace=w, contact_id=c), ts, DEFAULT_POLICY)
            for w, c, ts in jobs
        )
    )
    assert states == expected, "replayed differs from apply_all"
    line("fold: replayed", fast * us, "us", "apply_all", slow * us)
    whole = cpu(lambda: fold_jobs(jobs, policies, False))
    print(f"{'fold with rows and records':<34} {whole * us:8.2f} us   (fold_jobs, Python touches)")
    if native.module() is not None:
        # A shard's fold as it runs with the native core: touches kept in Rust, grouped,
        # sorted, replayed, then the read-model rows and records (`fold_natively`), against
        # the same with Python touches and the Python fold (`assign`, `jobs_of`, `fold_jobs`).
        shard_native = shard_python = float("inf")
        for _ in range(3):  # alternated, the best of each
            shard_native = min(shard_native, shard_fold(values, True))
            shard_python = min(shard_python, shard_fold(values, False))
        line("shard fold, native touches", shard_native * us, "us", "Python alone",
             shard_python * us)  # fmt: skip

    tallies = [t for s in states for t in (s.settled, s.view)]
    encode = msgspec.json.encode
    same = [encode(tally_to_json(t)) for t in tallies]
    assert same == [encode(field_by_field_tally_json(t)) for t in tallies]
    assert same == [encode(generic_tally_json(t)) for t in tallies]
    per = 1e6 / len(tallies)
    now = by_field = generic = float("inf")
    for _ in range(3):  # alternated, the best of each
        now = min(now, cpu(lambda: [encode(tally_to_json(t)) for t in tallies]))
        by_field = min(
            by_field, cpu(lambda: [encode(field_by_field_tally_json(t)) for t in tallies])
        )
        generic = min(generic, cpu(lambda: [encode(generic_tally_json(t)) for t in tallies]))
    line("tally JSON (structs.asdict)", now * per, "us", "field by field (before)", by_field * per)
    line("", now * per, "us", "loop over fields(Tally)", generic * per)

    ids = [t.event_id for _, _, ts in jobs for t in ts]
    assert [seen.fingerprint(i) for i in ids] == [stripped_fingerprint(i) for i in ids]
    per = 1e9 / len(ids)
    regexed = cpu(lambda: [seen.fingerprint(i) for i in ids])
    stripped = cpu(lambda: [stripped_fingerprint(i) for i in ids])
    line("fingerprint, regex", regexed * per, "ns", "str.strip (tried)", stripped * per)
    histories = [[t.event_id for t in ts] for _, _, ts in jobs]
    assert all(list(seen.fingerprints(h)) == [seen.fingerprint(i) for i in h] for h in histories)
    bulk = cpu(lambda: [seen.fingerprints(h) for h in histories])
    each = cpu(lambda: [[seen.fingerprint(i) for i in h] for h in histories])
    line("fingerprints, a history at once", bulk * per, "ns", "one by one (before)", each * per)

    changes = {"count": 2, "last_at": 7, "strength": 1.5}  # as a step changes a few fields
    as_struct = tallies[: 20_000 // 2 * 2]
    as_dataclass = [_DataclassTally(*(getattr(t, f) for f in _TALLY_FIELDS)) for t in as_struct]
    assert msgspec.structs.replace(as_struct[0], **changes).count == 2
    assert dataclass_evolve(as_dataclass[0], changes).count == 2
    per = 1e6 / len(as_struct)
    struct_copy = dataclass_copy = float("inf")
    for _ in range(3):  # alternated, the best of each
        struct_copy = min(
            struct_copy,
            cpu(lambda: [msgspec.structs.replace(t, **changes) for t in as_struct]),
        )
        dataclass_copy = min(
            dataclass_copy, cpu(lambda: [dataclass_evolve(t, changes) for t in as_dataclass])
        )
    line(
        "a tally changed (msgspec struct)",
        struct_copy * per,
        "us",
        "frozen dataclass (before)",
        dataclass_copy * per,
    )

    per = 1e6 / len(jobs)
    views = [view_row(s, DEFAULT_POLICY) for s in states]
    encoded = [s.to_json() for s in states]
    fresh = [replayed(w, c, ts, DEFAULT_POLICY) for w, c, ts in jobs]  # to_json caches its parts
    parts = {
        "replayed": cpu(lambda: [replayed(w, c, ts, DEFAULT_POLICY) for w, c, ts in jobs]),
        "view_row": cpu(lambda: [view_row(s, DEFAULT_POLICY) for s in states]),
        "stored JSON (to_json)": cpu(lambda: [s.to_json() for s in fresh]),
        "relationship rows to Arrow": cpu(lambda: relationship_arrow(views)),
    }
    assert [s.to_json() for s in fresh] == encoded
    print(f"per relationship ({len(jobs):,}, {len(ids) / len(jobs):.1f} touches each):")
    for name, seconds in parts.items():
        print(f"  {name:<32} {seconds * per:8.2f} us")
    print(f"  {'whole fold (fold_jobs)':<32} {whole * 1e6 / len(jobs):8.2f} us")

    sizes = [len(s.to_json()) for s in states]
    print(
        f"worker-state records: {len(sizes):,}, {sum(sizes) / len(sizes):,.0f} bytes each on "
        f"average, {sum(sizes) / 1e6:.1f} MB for {n:,} events"
    )


if __name__ == "__main__":
    main()
