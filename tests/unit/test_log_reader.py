"""How `streams.log_reader` reads a fetch answer: real record batches (aiokafka's builder), each
partition's error code as a broker sends it. The reads themselves run against the real broker in
tests/integration/test_log_reader.py; a moved leader or a corrupt batch cannot be made there."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from streams.log_reader import LogReadError, _answers, _hand_over

TOPIC = "rapport.events"
NOT_LEADER, OUT_OF_RANGE, TOPIC_AUTHORIZATION = 6, 1, 29


def _batch(base: int, values: list[bytes]) -> bytes:
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    for delta, value in enumerate(values):
        builder.append(delta, timestamp=None, key=b"k", value=value, headers=[])
    data = bytearray(builder.build())
    data[0:8] = base.to_bytes(8, "big")  # the base offset (not covered by the CRC)
    return bytes(data)


def _response(*partitions: tuple[int, int, int, bytes]) -> Any:
    """(partition, error code, highwater, records) as the fetch answer lays them out (v4+:
    last stable offset, log start, aborted transactions before the records)."""
    rows = [(p, error, high, high, 0, None, records) for p, error, high, records in partitions]
    return SimpleNamespace(topics=[(TOPIC, rows), ("other", [(0, 0, 9, 9, 0, None, b"")])])


def _values(batches: list[Any], start: int, end: int) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    _hand_over(0, batches, start, end, lambda _, rs: got.extend((r.offset, r.value) for r in rs))
    return got


def test_batches_move_the_position_and_a_partition_done_leaves() -> None:
    records = _batch(0, [b"a", b"b", b"c"]) + _batch(3, [b"d", b"e"])
    positions, ends = {0: 1, 1: 0}, {0: 4, 1: 10}
    batches_of, readable = _answers(
        TOPIC, _response((0, 0, 5, records), (1, 0, 10, _batch(0, [b"x"]))), positions, ends
    )
    assert readable == {0: True, 1: True}
    assert positions == {1: 1}  # partition 0 reached its end 4; partition 1 is at offset 1
    # from the asked offset 1 up to the end 4: the batches' records outside it stay out
    assert _values(batches_of[0], 1, 4) == [(1, b"b"), (2, b"c"), (3, b"d")]


def test_a_batch_wholly_before_the_position_is_skipped() -> None:
    records = _batch(0, [b"a", b"b"]) + _batch(2, [b"c"])
    positions = {0: 2}
    batches_of, _ = _answers(TOPIC, _response((0, 0, 3, records)), positions, {0: 3})
    assert len(batches_of[0]) == 1 and _values(batches_of[0], 2, 3) == [(2, b"c")]
    assert positions == {}


def test_a_moved_leader_is_fetched_again_and_keeps_its_position() -> None:
    positions = {0: 7}
    batches_of, readable = _answers(TOPIC, _response((0, NOT_LEADER, -1, b"")), positions, {0: 9})
    assert readable == {0: False} and batches_of == {} and positions == {0: 7}


def test_deleted_events_and_other_errors_stop_the_read() -> None:
    with pytest.raises(LogReadError, match=r"offset 0: OffsetOutOfRangeError \(events were"):
        _answers(TOPIC, _response((0, OUT_OF_RANGE, 9, b"")), {0: 0}, {0: 9})
    with pytest.raises(LogReadError, match="TopicAuthorizationFailedError"):
        _answers(TOPIC, _response((0, TOPIC_AUTHORIZATION, 9, b"")), {0: 0}, {0: 9})


def test_a_partition_ending_below_its_end_is_an_error_not_a_wait() -> None:
    with pytest.raises(LogReadError, match="ends at offset 3, below the 5"):
        _answers(TOPIC, _response((0, 0, 3, b"")), {0: 3}, {0: 5})


def test_a_corrupt_batch_is_refused() -> None:
    records = bytearray(_batch(0, [b"a", b"b"]))
    records[-1] ^= 0xFF  # a byte of the last record's value
    with pytest.raises(LogReadError, match="fails its CRC"):
        _answers(TOPIC, _response((0, 0, 2, bytes(records))), {0: 0}, {0: 2})
