"""The worker's Faust tables, keyed like the topics they follow and recoverable after a restart.

Faust derives a table's key serializer from its key type ("json" for plain types) and builds the
changelog topic from it when the table is made. Rapport's keys are raw `workspace|identity`
bytes, so that the changelog and the router partition exactly like the topics; and a changelog
whose value type is `dict` cannot be decoded (Faust calls `dict.from_data`). Each table is
therefore made here with a raw key serializer and a changelog topic that decodes what the table
writes: without this a restarted worker recovers empty tables ("Error in recovery"), and the
RocksDB store cannot read its own values back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
import msgspec
from faust.serializers import codecs

from projections.relationship import RelationshipState

TABLE_CODEC = "rapport-json"
STATE_CODEC = "rapport-json-undecoded"  # the relationships table: decoded by its reader


class _MsgspecJson(codecs.Codec):
    """Plain JSON, as Faust's "json" codec writes and reads it, about ten times faster; bytes
    are taken as JSON already encoded.

    A busy relationship's state is hundreds of kilobytes (its lateness window); the worker writes
    it once per batch, so the encoder is on the hot path. The bytes are ordinary JSON: states
    written by the "json" codec (or by a replay) read back unchanged.
    """

    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, bytes):  # already JSON (`RelationshipState.to_json`)
            return obj
        return msgspec.json.encode(obj)

    def _loads(self, s: bytes) -> Any:
        return msgspec.json.decode(s)


class _UndecodedJson(_MsgspecJson):
    """Writes as `_MsgspecJson`; reads the JSON back as bytes, for the caller to decode.

    A relationship state is decoded by `RelationshipState.from_json` in one typed pass (its
    timeline straight into touches, no document built first): the worker does that at every
    decoded-state cache miss (77 us against 84 for a generic decode and a conversion, at 60
    touches; `bench/bench_live_memory.py`).
    """

    def _loads(self, s: bytes) -> Any:
        return bytes(s)


codecs.register(TABLE_CODEC, _MsgspecJson())
codecs.register(STATE_CODEC, _UndecodedJson())


def stored_state(stored: bytes | dict[str, Any]) -> RelationshipState:
    """A relationship state as read back from its table: JSON bytes (`STATE_CODEC`, and what
    the in-memory store keeps: the bytes the worker wrote), or a decoded document."""
    if isinstance(stored, bytes | bytearray | memoryview):
        return RelationshipState.from_json(bytes(stored))
    return RelationshipState.from_dict(stored)


def rocksdb_options(write_buffer_mb: int, block_cache_mb: int) -> dict[str, int]:
    """Bounded memory for each partition's RocksDB (Faust's defaults: 3 x 64 MB memtables and a
    2 GB block cache per partition, which a worker's RSS grows into at its write rate)."""
    mb = 1024 * 1024
    return {
        "write_buffer_size": write_buffer_mb * mb,
        "max_write_buffer_number": 2,
        "block_cache_size": block_cache_mb * mb,
        "block_cache_compressed_size": block_cache_mb * mb,
    }


ROCKSDB_MEMORY = {  # what RocksDB itself counts of its memory, by the name /healthz reports
    "memtables": "rocksdb.cur-size-all-mem-tables",
    "block_cache": "rocksdb.block-cache-usage",
    "table_readers": "rocksdb.estimate-table-readers-mem",  # index and filter blocks
}


def rocksdb_memory(tables: Iterable[Any]) -> dict[str, int] | None:
    """Bytes RocksDB holds for these tables' open partitions (each has its own memtables and
    block cache), by RocksDB's own properties; None for a store that is not RocksDB.

    The worker's memory is its decoded states, RocksDB and the embedded ClickHouse; this is the
    part only the worker can see (it reads Faust's open databases, `Store._dbs`).
    """
    totals = dict.fromkeys(ROCKSDB_MEMORY, 0)
    found = False
    for table in tables:
        dbs = getattr(table.data, "_dbs", None)
        if dbs is None:
            continue
        found = True
        for db in list(dbs.values()):
            for name, prop in ROCKSDB_MEMORY.items():
                totals[name] += db.property_int_value(prop) or 0
    return totals if found else None


def raw_keyed_table(
    app: faust.App,
    name: str,
    partitions: int,
    value_type: type,
    options: dict[str, Any] | None = None,
    value_serializer: str = TABLE_CODEC,
) -> Any:
    """A table with raw byte keys (no default value) whose changelog recovers on restart."""
    plain = None if value_type is dict else value_type  # JSON objects decode to dicts as they are
    table: Any = app.Table(
        name, default=None, partitions=partitions, value_type=plain, options=options
    )
    table.key_serializer = "raw"  # both are read when the store is first opened, not before
    table.value_serializer = value_serializer
    table.changelog_topic = app.topic(
        table._changelog_topic_name(),
        schema=table.schema,
        key_type=table.key_type,
        value_type=plain,
        key_serializer="raw",
        value_serializer=table.value_serializer,
        partitions=table.partitions,
        compacting=table._changelog_compacting,
        deleting=table._changelog_deleting,
        acks=False,
        internal=True,
        config=table.extra_topic_configs,
        maxsize=131_072,  # as Faust's own: changelog reads are not committed
        allow_empty=True,
    )
    return table
