"""Dead letters: read them back, and redrive them into `rapport.raw` once an adapter is fixed.

Redrive bookkeeping: a small compacted topic, `<topic_deadletters>.redriven` (created on first
use, one partition), holds one record per redriven dead letter, keyed by the raw record the
letter came from (`topic:partition:offset` of its `raw` pointer). A redrive reads that ledger,
skips letters already in it, re-produces the rest (their original envelope) to `topic_raw` with
acks=all, and only after the broker acknowledged them writes their ledger records. So a second
redrive sends nothing new, a letter the worker dead-lettered twice (at-least-once) is sent once,
filters (`--workspace`, `--reason-contains`) leave unselected letters redrivable later, and a
letter that fails again after its redrive is a new dead letter (new raw pointer) that can be
redriven after the next fix. A crash between the produce and the ledger write re-sends those
letters next time, which the worker's deterministic event ids collapse.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from events.delivery import DeadLetter
from rapport.settings import Settings

LEDGER_SUFFIX = ".redriven"


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class StoredLetter:
    """One record of the dead-letter topic, decoded."""

    partition: int
    offset: int
    letter: DeadLetter

    @property
    def raw_key(self) -> str:
        """The identity of the delivery: where its raw record sits."""
        raw = self.letter.raw
        return f"{raw.topic}:{raw.partition}:{raw.offset}"

    def original(self) -> bytes:
        """The bytes to put back into `rapport.raw`: the delivery's original envelope.

        A letter with no workspace was a raw record that was not an envelope at all; its body is
        that record, byte for byte.
        """
        if not self.letter.workspace and not self.letter.source:
            return self.letter.body
        return self.letter.envelope().dumps()

    def as_dict(self, redriven: bool) -> dict[str, Any]:
        letter = self.letter
        return {
            "partition": self.partition,
            "offset": self.offset,
            "workspace": letter.workspace,
            "source": letter.source,
            "reason": letter.reason,
            "received_at": letter.received_at.isoformat(),
            "failed_at": letter.failed_at.isoformat(),
            "raw": letter.raw.model_dump(),
            "headers": letter.headers,
            "body_bytes": len(letter.body),
            "body_preview": letter.body[:200].decode("utf-8", "replace"),
            "redriven": redriven,
        }


@dataclass(frozen=True)
class RedriveResult:
    sent: list[StoredLetter]
    already: int  # selected letters skipped because an earlier redrive sent them
    unreadable: int  # records of the dead-letter topic that are not dead letters


def ledger_topic(settings: Settings) -> str:
    return settings.topic_deadletters + LEDGER_SUFFIX


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Record]:
    """Every record of `topic` from the beginning to its current end, without a consumer group."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        client_id="rapport-cli",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end in {timeout_s:.0f} s")
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(Record(m.partition, m.offset, m.key, m.value) for m in batch)
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def read_letters(settings: Settings) -> tuple[list[StoredLetter], int]:
    """The dead letters in `topic_deadletters`, and how many records were not dead letters."""
    letters: list[StoredLetter] = []
    unreadable = 0
    for record in read_topic(settings.kafka_bootstrap, settings.topic_deadletters):
        try:
            letters.append(
                StoredLetter(record.partition, record.offset, DeadLetter.loads(record.value))
            )
        except ValidationError:
            unreadable += 1
    return letters, unreadable


def ensure_ledger(settings: Settings) -> None:
    """Create the compacted redrive ledger if it is missing (the broker never auto-creates)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="rapport-cli")
    try:
        name = ledger_topic(settings)
        if name in set(admin.list_topics()):
            return
        spec = NewTopic(
            name,
            1,
            settings.replication_factor,
            topic_configs={"cleanup.policy": "compact", "retention.ms": "-1"},
        )
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([spec])
    finally:
        admin.close()


def redriven_keys(settings: Settings) -> set[str]:
    """The raw keys of every dead letter redriven so far (the ledger, latest record per key)."""
    done: set[str] = set()
    for record in read_topic(settings.kafka_bootstrap, ledger_topic(settings)):
        if record.key is None:
            continue
        key = record.key.decode()
        if record.value:
            done.add(key)
        else:
            done.discard(key)  # a tombstone makes a letter redrivable again
    return done


def select(
    letters: Iterable[StoredLetter], workspace: str | None, reason_contains: str | None
) -> list[StoredLetter]:
    return [
        s
        for s in letters
        if (workspace is None or s.letter.workspace == workspace)
        and (reason_contains is None or reason_contains.lower() in s.letter.reason.lower())
    ]


def redrive(
    settings: Settings,
    *,
    workspace: str | None = None,
    reason_contains: str | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> RedriveResult:
    """Re-produce the selected, not yet redriven dead letters to `topic_raw`; see the module doc."""
    ensure_ledger(settings)
    done = redriven_keys(settings)
    letters, unreadable = read_letters(settings)
    todo: list[StoredLetter] = []
    already = 0
    seen: set[str] = set()
    for stored in select(letters, workspace, reason_contains):
        if stored.raw_key in done:
            already += 1
        elif stored.raw_key not in seen:  # the same delivery dead-lettered twice goes once
            seen.add(stored.raw_key)
            todo.append(stored)
    if dry_run or not todo:
        return RedriveResult(todo, already, unreadable)

    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id="rapport-redrive",
        acks="all",
        enable_idempotence=True,
        max_request_size=8 * 1024 * 1024,
    )
    try:
        futures = [producer.send(settings.topic_raw, value=s.original()) for s in todo]
        producer.flush()
        placed = []
        for stored, future in zip(todo, futures, strict=True):
            meta = future.get(timeout=30)
            placed.append((stored, meta.partition, meta.offset))
            if progress is not None:
                progress(1)
        now = datetime.now(UTC).isoformat()
        for stored, partition, offset in placed:
            producer.send(
                ledger_topic(settings),
                key=stored.raw_key.encode(),
                value=json.dumps(
                    {
                        "redriven_at": now,
                        "to": f"{settings.topic_raw}:{partition}:{offset}",
                        "deadletter": f"{stored.partition}:{stored.offset}",
                        "workspace": stored.letter.workspace,
                        "reason": stored.letter.reason,
                    }
                ).encode(),
            )
        producer.flush()
    finally:
        producer.close()
    return RedriveResult(todo, already, unreadable)
