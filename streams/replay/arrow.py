"""The replay's rows as Arrow tables, and how a table goes from a shard to the parent."""

from __future__ import annotations

import array
import contextlib
import functools
import logging
import os
import tempfile
from typing import Any

from streams.replay.rows import relationship_values

log = logging.getLogger("rapport.replay")


def resolve_contacts(data: Any, contacts: dict[tuple[str, str], str]) -> Any:
    """`interaction_arrow` rows whose contact_id is the identity before links (or "" for none), with
    the contact each linked identity resolves to (as `Recalculation.assign` does row by row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if data is None or not contacts:
        return data
    index = data.schema.get_field_index("contact_id")
    identity = data.column(index)
    keys = pc.binary_join_element_wise(data.column("workspace"), identity, "|")
    linked = pa.array([f"{w}|{i}" for w, i in contacts], type=pa.string())
    found = pc.index_in(keys, value_set=linked)
    contact = pc.coalesce(pc.take(pa.array(list(contacts.values()), pa.string()), found), identity)
    return data.set_column(index, "contact_id", contact)


def interaction_arrow(rows: list[list[Any]]) -> Any:
    """Interaction rows as one Arrow table (INTERACTION_COLUMNS; strings, and int64 for the
    times, still epoch ms, and the numbers; the writer casts to the table's own types)."""
    import pyarrow as pa

    from projections.schema import INTERACTION_COLUMNS

    if not rows:
        return None
    numbers = {"occurred_at", "received_at", "raw_partition", "raw_offset", "schema_version"}
    types = [pa.int64() if name in numbers else pa.string() for name in INTERACTION_COLUMNS]
    columns = zip(*rows, strict=True)
    return pa.Table.from_arrays(
        [pa.array(c, type=t) for c, t in zip(columns, types, strict=True)],
        names=list(INTERACTION_COLUMNS),
    )


def relationship_arrow(views: list[dict[str, Any]]) -> Any:
    """`relationship_values` of each view as one Arrow table, updated_at 0 (the writer stamps
    it, `stamped`); times stay epoch-ms ints, the writer casts to the table's types. A shard
    sends its rows this way: Arrow crosses the pipe at the cost of a copy, a dict per view
    costs the parent more to unpickle and turn into rows than the shard to build."""
    import pyarrow as pa

    types = relationship_arrow_types()
    if not views:  # the usual case of a native shard: without `pa.array`, which imports pandas
        return pa.Table.from_arrays([pa.nulls(0, t) for t in types.values()], names=list(types))
    rows = [relationship_values(view, 0) for view in views]
    columns = list(zip(*rows, strict=True))
    return pa.Table.from_arrays(
        [pa.array(c, type=t) for c, t in zip(columns, types.values(), strict=True)],
        names=list(types),
    )


@functools.cache
def relationship_arrow_types() -> dict[str, Any]:
    """The Arrow type of each `relationships` column, in RELATIONSHIP_COLUMNS order."""
    import pyarrow as pa

    from projections.schema import RELATIONSHIP_COLUMNS, RELATIONSHIP_TIME_COLUMNS

    special = {
        "workspace": pa.string(), "contact_id": pa.string(), "last_platform": pa.string(),
        "stage": pa.string(), "policy_version": pa.string(), "ask_only": pa.bool_(),
        "qualified_at": pa.list_(pa.int64()), "platforms": pa.list_(pa.string()),
        "members": pa.list_(pa.string()), "updated_at": pa.int64(),
    }  # fmt: skip
    whole = {"interactions", "our_replies", "their_replies", "qualified_conversations",
             "platform_moves", "late_events", "revision"}  # fmt: skip
    return {
        name: special.get(name)
        or (pa.int64() if name in RELATIONSHIP_TIME_COLUMNS or name in whole else pa.float64())
        for name in RELATIONSHIP_COLUMNS
    }


def stamped(data: Any, updated_at_ms: int) -> Any:
    """`relationship_arrow` rows with their updated_at (from a buffer: `pa.array` would import
    pandas, 0.2-0.4 s of a replay's parent for one column)."""
    import pyarrow as pa

    index = data.schema.get_field_index("updated_at")
    times = array.array("q", [updated_at_ms]) * data.num_rows
    stamp = pa.Array.from_buffers(pa.int64(), data.num_rows, [None, pa.py_buffer(times)])
    return data.set_column(index, "updated_at", stamp)


def shared_memory_dir() -> str:
    """Where the shards leave their Arrow streams for the parent: shared memory (`/dev/shm`)
    where the system has it, the temp directory otherwise."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


def send_arrow(conn: Any, tag: str, data: Any, *rest: Any, spool: str | None = None) -> None:
    """A message whose second item is an Arrow table (or None). The table goes as an Arrow IPC
    stream: written to a file in `spool` (shared memory), which the parent maps and reads in
    place, or, without a spool or when that file cannot be written (shared memory full), in a
    message of its own through the pipe. Pickling cost both processes about twice the CPU of
    the pipe, and the pipe 1.2-2x that of the file (`bench/bench_replay_parts.py`, `to the
    parent`)."""
    import pyarrow as pa

    if data is None:
        conn.send((tag, None, *rest))
        return
    if spool is not None:
        path = os.path.join(spool, f"{tag}-{os.getpid()}.arrow")
        try:
            with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, data.schema) as writer:
                writer.write_table(data)
        except OSError as error:
            log.warning("replay shard: %s not written (%s), the pipe takes the table", path, error)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        else:
            conn.send((tag, path, *rest))
            return
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write_table(data)
    buffer = sink.getvalue()
    conn.send((tag, buffer.size, *rest))
    conn.send_bytes(buffer)


def unpack_arrow(conn: Any, message: Any, in_place: bool = False) -> Any:
    """The message `send_arrow` sent, its table read in place (from the mapped file, which is
    removed, or from the stream that followed in the pipe). `in_place`: a file's path is left
    as it is, for the caller to read (and remove)."""
    import pyarrow as pa

    where = message[1]
    if where is None or (in_place and isinstance(where, str)):
        return message
    if isinstance(where, str):
        data = pa.ipc.open_stream(pa.memory_map(where)).read_all()
        os.unlink(where)  # the mapping stays until the table is gone
    else:
        data = pa.ipc.open_stream(pa.py_buffer(conn.recv_bytes())).read_all()
    return (message[0], data, *message[2:])
