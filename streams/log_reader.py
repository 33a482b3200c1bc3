"""Reading a topic from given offsets up to given ends: fetch requests through aiokafka's client.

A replay reads the whole event log once. `AIOKafkaConsumer` would do it, but its fetcher wraps
every record in a `ConsumerRecord` (eleven fields, a tuple of headers) in Python before handing
it over, which costs more CPU per record than anything else the read does for it
(`bench/bench_readers.py`). This scan sends aiokafka's own `FetchRequest` to each partition's
leader and reads the answers with aiokafka's record batches (its C extension): a record is
handed over as the batch made it (`offset`, `key`, `value`). While one answer is handled, the
next request to the same broker is already out.

It reads what a consumer with `isolation_level=read_uncommitted` reads: control batches
skipped, each batch's CRC checked. A partition whose leader moved or is not known yet waits for
new metadata and goes on; whatever would lose events (the start of a partition deleted under
the scan, a partition ending below the end it must reach) stops it with `LogReadError`, as does
a read that makes no progress for `STALL_S`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

FETCH_WAIT_MS = 500
PARTITION_FETCH_BYTES = 8 * 1024 * 1024
FETCH_BYTES = 64 * 1024 * 1024
STALL_S = 60.0  # how long no partition may move (no leader, no broker) before giving up

OnRecords = Callable[[int, list[Any]], None]  # partition, its records in offset order


class LogReadError(RuntimeError):
    """The log cannot be read up to the asked ends (retrying would not help)."""


async def scan_log(
    bootstrap: str,
    topic: str,
    begins: dict[int, int],
    ends: dict[int, int],
    on_records: OnRecords,
    client_id: str = "rapport-replay",
) -> None:
    """Call `on_records(partition, records)` with every record of `topic` from `begins` (per
    partition, 0 when absent) up to, not including, `ends`; each partition in offset order."""
    from aiokafka.client import AIOKafkaClient

    positions = {p: begins.get(p, 0) for p, end in ends.items() if end > begins.get(p, 0)}
    if not positions:
        return
    client = AIOKafkaClient(bootstrap_servers=bootstrap, client_id=client_id)
    await client.bootstrap()
    try:
        await _Scan(client, topic, positions, ends, on_records).run()
    finally:
        await client.close()


class _Scan:
    """One fetch out per broker at a time, for the partitions it leads that are not done."""

    def __init__(
        self,
        client: Any,
        topic: str,
        positions: dict[int, int],
        ends: dict[int, int],
        on_records: OnRecords,
    ) -> None:
        self.client = client
        self.topic = topic
        self.positions = positions  # partition -> next offset to read; done ones leave
        self.ends = ends
        self.on_records = on_records
        self.in_flight: dict[asyncio.Future[Any], tuple[int, list[int]]] = {}
        self.moved_at = time.monotonic()

    async def run(self) -> None:
        await self.client.add_topic(self.topic)
        try:
            await self._read()
        finally:
            for task in self.in_flight:  # only left when the scan stopped on an error
                task.cancel()

    async def _read(self) -> None:
        from aiokafka import errors

        while self.positions:
            leaderless = self._send_idle()
            if not self.in_flight:
                self._check_stall(f"no leader for partitions {sorted(leaderless)}")
                await self.client.force_metadata_update()
                await asyncio.sleep(0.1)
                continue
            done, _ = await asyncio.wait(set(self.in_flight), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                node, partitions = self.in_flight.pop(task)
                try:
                    response = task.result()
                except (TimeoutError, errors.KafkaError, OSError) as error:
                    self._check_stall(f"fetching from broker {node} failed: {error!r}")
                    await self.client.force_metadata_update()
                    await asyncio.sleep(0.2)
                    continue
                starts = {p: self.positions[p] for p in partitions}
                answers, readable = _answers(self.topic, response, self.positions, self.ends)
                if any(self.positions.get(p) != offset for p, offset in starts.items()):
                    self.moved_at = time.monotonic()
                else:
                    self._check_stall("no partition moved")
                if all(readable.values()):
                    # The next request goes out before these records are handled: the broker
                    # serves it meanwhile.
                    again = [p for p in partitions if p in self.positions]
                    if again:
                        self._send(node, again)
                        await asyncio.sleep(0)  # lets it reach the socket
                else:  # a leader moved: new metadata first, then `_send_idle` asks the new one
                    await self.client.force_metadata_update()
                for partition, batches in answers.items():
                    _hand_over(
                        partition, batches, starts[partition], self.ends[partition],
                        self.on_records,
                    )  # fmt: skip

    def _check_stall(self, why: str) -> None:
        if time.monotonic() - self.moved_at > STALL_S:
            raise LogReadError(f"reading {self.topic}: {why} for {STALL_S:.0f} s")

    def _send(self, node: int, partitions: list[int]) -> None:
        request = _request(self.topic, [(p, self.positions[p]) for p in partitions])
        task = asyncio.ensure_future(self.client.send(node, request))
        self.in_flight[task] = (node, partitions)

    def _send_idle(self) -> list[int]:
        """A fetch to each broker with none out, for its idle partitions; returns the
        partitions without a known leader."""
        from aiokafka.structs import TopicPartition

        busy = {p for _, partitions in self.in_flight.values() for p in partitions}
        waiting = {node for node, _ in self.in_flight.values()}
        by_node: dict[int, list[int]] = {}
        leaderless: list[int] = []
        for p in self.positions:
            if p in busy:
                continue
            leader = self.client.cluster.leader_for_partition(TopicPartition(self.topic, p))
            if leader is None or leader == -1:
                leaderless.append(p)
            elif leader not in waiting:
                by_node.setdefault(leader, []).append(p)
        for node, partitions in by_node.items():
            self._send(node, partitions)
        return leaderless


def _request(topic: str, partitions: list[tuple[int, int]]) -> Any:
    from aiokafka.protocol.fetch import FetchRequest

    return FetchRequest(
        FETCH_WAIT_MS,
        1,  # min bytes
        FETCH_BYTES,
        0,  # read_uncommitted, as the consumer the replay used before
        [(topic, [(p, offset, PARTITION_FETCH_BYTES) for p, offset in partitions])],
    )


@functools.cache
def _leader_moved() -> frozenset[type[Exception]]:
    """Partition errors that new metadata (a new leader) mends."""
    from aiokafka import errors

    return frozenset(
        {
            errors.NotLeaderForPartitionError,
            errors.UnknownTopicOrPartitionError,
            errors.LeaderNotAvailableError,
            errors.KafkaStorageError,
        }
    )


def _answers(
    topic: str, response: Any, positions: dict[int, int], ends: dict[int, int]
) -> tuple[dict[int, list[Any]], dict[int, bool]]:
    """A fetch response's record batches per partition, with `positions` moved past them (a
    partition done leaves it), and per partition whether it could be read (False: its leader
    moved, fetch it again after new metadata). Raises `LogReadError` where events would be
    lost."""
    from aiokafka import errors
    from aiokafka.record.memory_records import MemoryRecords

    batches_of: dict[int, list[Any]] = {}
    read: dict[int, bool] = {}
    for name, partitions in response.topics:
        if name != topic:
            continue
        for partition, error_code, highwater, *rest in partitions:
            if partition not in positions:
                continue
            error = errors.for_code(error_code)
            if error is not errors.NoError:
                if error in _leader_moved():
                    read[partition] = False
                    continue
                lost = error is errors.OffsetOutOfRangeError
                raise LogReadError(
                    f"{topic} partition {partition} at offset {positions[partition]}: "
                    f"{error.__name__}"
                    + (" (events were deleted while the replay read them)" if lost else "")
                )
            start = position = positions[partition]
            records = MemoryRecords(rest[-1])  # the records are last in every version
            batches: list[Any] = []
            while records.has_next():
                batch = records.next_batch()
                if batch is None:  # a partial batch at the end of the answer
                    break
                if not batch.validate_crc():
                    raise LogReadError(f"{topic} partition {partition}: a batch fails its CRC")
                if batch.next_offset <= position:
                    continue
                position = batch.next_offset
                if not batch.is_control_batch:
                    batches.append(batch)
            if position == start and highwater <= start:
                raise LogReadError(
                    f"{topic} partition {partition} ends at offset {highwater}, below the "
                    f"{ends[partition]} it must be read up to (was the topic recreated?)"
                )
            if position >= ends[partition]:
                del positions[partition]
            else:
                positions[partition] = position
            batches_of[partition] = batches
            read[partition] = True
    return batches_of, read


def _hand_over(
    partition: int, batches: list[Any], start: int, end: int, on_records: OnRecords
) -> None:
    """The records of a partition's batches from `start` up to, not including, `end` (a first
    batch may begin before the offset asked, a last one reach past the end)."""
    records: list[Any] = []
    for batch in batches:
        if batch.base_offset >= start and batch.next_offset <= end:
            records += batch
        else:
            records += [r for r in batch if start <= r.offset < end]
    if records:
        on_records(partition, records)
