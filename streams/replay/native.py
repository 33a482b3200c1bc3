"""The replay's native core (`native/`, a Rust extension built by `make setup`), if built.

Its decoder turns the shards' current-version interactions into touches and Arrow columns
without a Python object per field, and hands every other event back to the Python decoder,
which stays the reference: the two give the same touches and rows
(tests/unit/test_replay_native.py). Its replay folds each relationship straight into its stored
JSON and its `relationships` row (`relationship_table`), the same bytes and values as
`RelationshipState.to_json` and `view_row`, and leaves what it is unsure of to the Python fold.
Its fold is `projections.in_order.fold_in_order`'s. Without
the extension (a Python-only install) the replay works the same, more slowly, and says so once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection
from typing import Any

from projections.schema import INTERACTION_COLUMNS
from streams.replay.arrow import relationship_arrow_types

log = logging.getLogger("rapport.replay")

# The decoder's number columns; the others are strings (as `interaction_arrow` makes them).
NUMBER_COLUMNS = ("occurred_at", "received_at", "raw_partition", "raw_offset", "schema_version")


@functools.cache
def module() -> Any | None:
    """`rapport_native`, or None (logged once) when it is not installed."""
    try:
        import rapport_native
    except ImportError as error:
        log.warning(
            "the replay's native core is not installed (%s): replays decode and fold in "
            "Python, more slowly; `make setup` (or `pip install ./native`) builds it",
            error,
        )
        return None
    return rapport_native


def in_use(wanted: bool) -> bool:
    """Whether a replay runs with the native core: `wanted` (`RAPPORT_REPLAY_NATIVE`) and
    built."""
    return wanted and module() is not None


def decoder(touch: type, conversational: Collection[str], only: Collection[str] | None) -> Any:
    """A `rapport_native.Decoder` making `touch` objects, or None without the extension."""
    found = module()
    if found is None:
        return None
    return found.Decoder(touch, set(conversational), set(only) if only is not None else None)


def interaction_table(count: int, strings: list[tuple[bytes, bytes]], numbers: list[bytes]) -> Any:
    """The decoder's rows (`Decoder.take_rows`) as the Arrow table `interaction_arrow` makes."""
    import pyarrow as pa

    texts, values = iter(strings), iter(numbers)
    arrays = []
    for name in INTERACTION_COLUMNS:
        if name in NUMBER_COLUMNS:
            arrays.append(
                pa.Array.from_buffers(pa.int64(), count, [None, pa.py_buffer(next(values))])
            )
        else:
            offsets, data = next(texts)
            arrays.append(
                pa.Array.from_buffers(
                    pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
                )
            )
    return pa.Table.from_arrays(arrays, names=list(INTERACTION_COLUMNS))


def relationship_table(count: int, columns: list[tuple[Any, ...]]) -> Any:
    """The native replay's rows (`Decoder.replay`) as the Arrow table `relationship_arrow`
    makes: each column (name, kind, buffers) in RELATIONSHIP_COLUMNS order, `kind` being s
    (string), i, f, b (int64, float64, bool, with a validity bitmap or None), I or S (a list
    of int64 or of strings: the list offsets, then the values' buffers)."""
    import pyarrow as pa

    types = relationship_arrow_types()
    if [c[0] for c in columns] != list(types):
        raise RuntimeError(f"the native core's relationship columns are {[c[0] for c in columns]}")
    arrays = []
    for (_, kind, *buffers), type_ in zip(columns, types.values(), strict=True):
        raw = [None if b is None else pa.py_buffer(b) for b in buffers]
        if kind == "s":
            arrays.append(pa.Array.from_buffers(type_, count, [None, *raw]))
        elif kind in ("i", "f"):
            arrays.append(pa.Array.from_buffers(type_, count, raw))
        elif kind == "b":
            arrays.append(pa.Array.from_buffers(type_, count, [None, *raw]))
        elif kind == "I":
            child = pa.Array.from_buffers(pa.int64(), len(buffers[1]) // 8, [None, raw[1]])
            arrays.append(pa.Array.from_buffers(type_, count, [None, raw[0]], children=[child]))
        else:
            items = len(buffers[1]) // 4 - 1
            child = pa.Array.from_buffers(pa.string(), items, [None, raw[1], raw[2]])
            arrays.append(pa.Array.from_buffers(type_, count, [None, raw[0]], children=[child]))
    return pa.Table.from_arrays(arrays, names=list(types))
