"""Reading the event log (a snapshot of `rapport.events`) and archives of it.

`read_log` reads every partition from its beginning up to the end offsets taken when the
snapshot was made, in batches (fetch requests through aiokafka's client, `streams.log_reader`),
so events appended meanwhile are left for the live worker. `rapport export` writes the same
events to an archive: NDJSON, one event per line exactly as the log holds it, or Parquet
(columns partition, offset, key, event) with pyarrow; `read_archive` reads either back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rapport.settings import Settings
from streams.log_reader import scan_log

FETCH_RECORDS = 20_000
PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class Snapshot:
    """End offsets of every partition of a topic at one moment (what a replay reads up to)."""

    topic: str
    ends: dict[int, int]
    begins: dict[int, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(end - self.begins.get(p, 0) for p, end in self.ends.items())

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "ends": {str(p): o for p, o in sorted(self.ends.items())}}


def _consumer(bootstrap: str) -> Any:
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
        client_id="rapport-replay",
    )


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[str, dict[int, int]]:
    """{topic: {partition: end offset}} now (missing topics are left out)."""
    from aiokafka.structs import TopicPartition

    consumer = _consumer(bootstrap)
    await consumer.start()
    try:
        out: dict[str, dict[int, int]] = {}
        for topic in topics:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic)
            if not parts:
                continue
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            ends = await consumer.end_offsets(tps)
            out[topic] = {tp.partition: int(offset) for tp, offset in ends.items()}
        return out
    finally:
        await consumer.stop()


def take_snapshot(settings: Settings, topic: str | None = None) -> Snapshot:
    """The end (and start) offsets of `rapport.events` now."""
    return asyncio.run(_take_snapshot(settings.kafka_bootstrap, topic or settings.topic_events))


async def _take_snapshot(bootstrap: str, topic: str) -> Snapshot:
    from aiokafka.structs import TopicPartition

    consumer = _consumer(bootstrap)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise RuntimeError(f"topic {topic} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        return Snapshot(
            topic,
            {tp.partition: int(o) for tp, o in ends.items()},
            {tp.partition: int(o) for tp, o in begins.items()},
        )
    finally:
        await consumer.stop()


def read_log(
    settings: Settings,
    snapshot: Snapshot,
    handle: Callable[[list[tuple[bytes | None, bytes]]], None],
) -> int:
    """Call `handle` with batches of (key, value) of every record below the snapshot's ends."""
    count = 0

    def on_records(partition: int, records: list[Any]) -> None:
        nonlocal count
        batch = [(r.key, r.value) for r in records if r.value]
        if batch:
            handle(batch)
            count += len(batch)

    asyncio.run(_scan(settings.kafka_bootstrap, snapshot, on_records))
    return count


async def _scan(
    bootstrap: str, snapshot: Snapshot, on_records: Callable[[int, list[Any]], None]
) -> None:
    """Every record of the snapshot's topic from its begins below its ends, partition batch by
    batch (`streams.log_reader`)."""
    await scan_log(bootstrap, snapshot.topic, snapshot.begins, snapshot.ends, on_records)


# --- archives ---------------------------------------------------------------------------------


def is_parquet(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == PARQUET_MAGIC


def read_archive(
    path: Path, batch: int = FETCH_RECORDS
) -> Iterator[list[tuple[bytes | None, bytes]]]:
    """Batches of (key, event) from an archive `rapport export` wrote (NDJSON or Parquet)."""
    if is_parquet(path):
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path)
        for group in table.iter_batches(batch_size=batch, columns=["key", "event"]):
            keys = group.column(0).to_pylist()
            events = group.column(1).to_pylist()
            yield [
                (k.encode() if isinstance(k, str) else k, e.encode() if isinstance(e, str) else e)
                for k, e in zip(keys, events, strict=True)
            ]
        return
    out: list[tuple[bytes | None, bytes]] = []
    with path.open("rb") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            out.append((None, line))
            if len(out) >= batch:
                yield out
                out = []
    if out:
        yield out


def archive_size(path: Path) -> int | None:
    """Events in an archive when cheap to know (Parquet metadata), else None."""
    if is_parquet(path):
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    return None


class ArchiveWriter:
    """Writes (partition, offset, key, event) records as NDJSON or Parquet."""

    def __init__(self, path: Path, fmt: str) -> None:
        if fmt not in ("ndjson", "parquet"):
            raise ValueError("archive format is ndjson or parquet")
        self.path = path
        self.fmt = fmt
        self.count = 0
        self._fh: Any = None
        self._writer: Any = None
        self._schema: Any = None
        if fmt == "ndjson":
            self._fh = path.open("wb")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            self._schema = pa.schema(
                [
                    ("partition", pa.int32()),
                    ("offset", pa.int64()),
                    ("key", pa.string()),
                    ("event", pa.string()),
                ]
            )
            self._writer = pq.ParquetWriter(path, self._schema, compression="zstd")

    def write(self, records: list[tuple[int, int, bytes | None, bytes]]) -> None:
        if not records:
            return
        self.count += len(records)
        if self._fh is not None:
            self._fh.write(b"".join(value + b"\n" for _, _, _, value in records))
            return
        import pyarrow as pa

        columns = list(zip(*records, strict=True))
        self._writer.write_table(
            pa.Table.from_arrays(
                [
                    pa.array(columns[0], pa.int32()),
                    pa.array(columns[1], pa.int64()),
                    pa.array([k.decode() if k else None for k in columns[2]], pa.string()),
                    pa.array([v.decode() for v in columns[3]], pa.string()),
                ],
                schema=self._schema,
            )
        )

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._writer is not None:
            self._writer.close()


def export_log(
    settings: Settings,
    path: Path,
    fmt: str,
    workspaces: set[str] | None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, Snapshot]:
    """Write the log (up to a snapshot taken now) to an archive; returns (events, snapshot)."""
    snapshot = take_snapshot(settings)
    writer = ArchiveWriter(path, fmt)
    prefixes = tuple(f"{w}|".encode() for w in sorted(workspaces)) if workspaces else None

    def on_records(partition: int, records: list[Any]) -> None:
        writer.write(
            [
                (partition, r.offset, r.key, r.value)
                for r in records
                if r.value and (prefixes is None or (r.key or b"").startswith(prefixes))
            ]
        )
        if progress is not None:
            progress(len(records))

    try:
        asyncio.run(_scan(settings.kafka_bootstrap, snapshot, on_records))
    finally:
        writer.close()
    return writer.count, snapshot
