"""The worker's table codec: plain JSON both ways, so stored states of any writer read back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faust
from faust.serializers import codecs

from events.ids import event_id
from events.models import Direction, Identity, Interaction, Kind
from projections.relationship import RelationshipState, fold
from streams.tables import (
    STATE_CODEC,
    TABLE_CODEC,
    raw_keyed_table,
    rocksdb_memory,
    rocksdb_options,
    stored_state,
)


def _state() -> RelationshipState:
    brand, them = Identity(platform="x", user_id="1"), Identity(platform="x", user_id="2")
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    events = [
        Interaction(
            event_id=event_id("w", "x", f"dm:{n}"),
            workspace="w",
            platform="x",
            kind=Kind.MESSAGE,
            actor=them if n % 2 == 0 else brand,
            subject=brand if n % 2 == 0 else them,
            direction=Direction.INBOUND if n % 2 == 0 else Direction.OUTBOUND,
            contact=them,
            account=brand,
            member="brand",
            occurred_at=t0 + timedelta(minutes=7 * n),
            received_at=t0 + timedelta(minutes=7 * n),
            object_id=str(n),
            conversation_id="c",
        )
        for n in range(40)
    ]
    return next(iter(fold(events).values()))


def test_the_codec_writes_plain_json_and_reads_what_json_wrote() -> None:
    codec = codecs.get_codec(TABLE_CODEC)
    state = _state()
    written = codec.dumps(state.to_dict())
    assert json.loads(written) == json.loads(json.dumps(state.to_dict()))
    assert RelationshipState.from_dict(codec.loads(written)) == state
    by_stdlib = json.dumps(state.to_dict()).encode()  # what a replay or an older worker wrote
    assert RelationshipState.from_dict(codec.loads(by_stdlib)) == state
    assert codec.loads(codec.dumps("x:2")) == "x:2"  # the identities table's values


def test_rocksdb_tables_get_bounded_memory(tmp_path: Path) -> None:
    """Faust's defaults (3 x 64 MB memtables, 2 GB cache per partition) grew the worker's RSS."""
    app = faust.App("t", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    options = rocksdb_options(write_buffer_mb=8, block_cache_mb=16)
    table = raw_keyed_table(app, "relationships", 4, dict, options)
    opened = table.data.rocksdb_options
    assert opened.write_buffer_size == 8 * 1024 * 1024 and opened.max_write_buffer_number == 2
    assert opened.block_cache_size == 16 * 1024 * 1024
    assert table.value_serializer == TABLE_CODEC and table.key_serializer == "raw"
    default = raw_keyed_table(app, "other", 4, dict).data.rocksdb_options
    assert default.write_buffer_size == 64 * 1024 * 1024  # what the worker no longer uses


def test_encoded_states_pass_through_and_read_back_from_either_store() -> None:
    codec = codecs.get_codec(TABLE_CODEC)
    state = _state()
    written = codec.dumps(state.to_json())
    assert written == state.to_json()  # not encoded twice
    for stored in (written, codec.loads(written)):  # memory store / RocksDB or changelog
        assert stored_state(stored) == state


def test_rocksdb_memory_counts_what_the_open_partitions_hold(tmp_path: Path) -> None:
    app = faust.App("t", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    options = rocksdb_options(write_buffer_mb=8, block_cache_mb=16)
    table = raw_keyed_table(app, "relationships", 4, dict, options)
    assert rocksdb_memory([table]) == {"memtables": 0, "block_cache": 0, "table_readers": 0}
    for partition in (0, 3):
        db = table.data._db_for_partition(partition)
        for n in range(100):
            db[f"w|{n}".encode()] = b"x" * 10_000  # 1 MB per partition, in its memtable
    held = rocksdb_memory([table])
    assert held is not None and held["memtables"] >= 2 * 1_000_000, held
    in_memory = faust.App("m", store="memory://", autodiscover=False)
    assert rocksdb_memory([raw_keyed_table(in_memory, "relationships", 4, dict)]) is None


def test_the_state_codec_hands_the_json_to_its_reader_who_decodes_it_in_one_pass(
    tmp_path: Path,
) -> None:
    """The relationships table reads its values back as bytes: `stored_state` decodes them
    typed (`from_json`), the same state as the generic decode of any writer's JSON."""
    codec = codecs.get_codec(STATE_CODEC)
    state = _state()
    written = codec.dumps(state.to_json())
    assert written == state.to_json() and codec.loads(written) == written
    by_stdlib = json.dumps(state.to_dict(), indent=1).encode()  # a replay or an older worker
    for stored in (written, by_stdlib, codec.loads(by_stdlib), json.loads(by_stdlib)):
        assert stored_state(stored) == state
    app = faust.App("t", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    table = raw_keyed_table(app, "relationships", 4, dict, None, STATE_CODEC)
    assert table.value_serializer == STATE_CODEC
    key = b"w|x:2"
    table.data._db_for_partition(1)[key] = state.to_json()  # the bytes the agent writes
    back = table.data[key]  # read back through the table's serializer
    assert isinstance(back, bytes) and stored_state(back) == state
