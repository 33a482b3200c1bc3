"""`rapport deadletters list|redrive` against the real broker: poison deliveries become dead
letters (through the worker's own normalizing step), are listed with their reasons, redriven to
the raw topic once, and a second redrive sends nothing new.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka import KafkaProducer

from events.delivery import DeadLetter, process_delivery
from events.envelope import RawEnvelope
from events.models import RawPointer
from rapport.settings import Settings
from rapport.stack import settings_env
from rapport.workspaces import WorkspaceRegistry
from streams.deadletters import ledger_topic, read_topic
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

REGISTRY = WorkspaceRegistry.from_mapping(
    {"workspaces": {"college": {"accounts": [{"platform": "x", "user_id": "323"}]}, "other": {}}}
)
NOW = datetime(2026, 3, 1, tzinfo=UTC)
X_POISON = b'{"for_user_id": "323", "direct_message_events": "not a list"}'
GENERIC_POISON = b'{"id": "1", "platform": "email", "kind": "email", "colour": "blue"}'
NOT_AN_ENVELOPE = b"\x00\x01 not an envelope"


def envelope(workspace: str, source: str, body: bytes) -> bytes:
    return RawEnvelope(
        workspace=workspace,
        source=source,
        received_at=NOW,
        headers={"content-type": "application/json", "user-agent": "poison/1"},
        body=body,
    ).dumps()


def poison(settings: Settings) -> list[DeadLetter]:
    """Put poison deliveries in raw, and their dead letters where the worker would put them."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        letters = []
        for raw in (
            envelope("college", "x", X_POISON),
            envelope("other", "generic", GENERIC_POISON),
            NOT_AN_ENVELOPE,
        ):
            meta = producer.send(settings.topic_raw, value=raw).get(timeout=30)
            pointer = RawPointer(topic=meta.topic, partition=meta.partition, offset=meta.offset)
            letter = process_delivery(REGISTRY, raw, pointer, NOW).dead_letter
            assert letter is not None
            letters.append(letter)
        # The worker is at-least-once: the same raw record may be dead-lettered twice.
        for letter in [*letters, letters[0]]:
            producer.send(
                settings.topic_deadletters, key=letter.workspace.encode(), value=letter.dumps()
            ).get(timeout=30)
        return letters
    finally:
        producer.close()


def cli(settings: Settings, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "rapport", "deadletters", *args],
        capture_output=True,
        text=True,
        env=settings_env(settings),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def listed(settings: Settings, *args: str) -> list[dict[str, Any]]:
    out = json.loads(cli(settings, "list", "--format", "json", *args))
    assert isinstance(out, list)
    return out


def raw_values(settings: Settings) -> list[bytes]:
    return [r.value for r in read_topic(settings.kafka_bootstrap, settings.topic_raw)]


def test_list_then_redrive_once(isolated_settings: Settings) -> None:
    settings = isolated_settings
    ensure_topics(settings)
    x_letter, generic_letter, garbage_letter = poison(settings)
    raw_before = raw_values(settings)
    assert len(raw_before) == 3

    # list: every dead letter, with its reason, from the beginning of the topic
    everything = listed(settings)
    assert len(everything) == 4
    reasons = sorted({row["reason"] for row in everything})
    assert reasons == sorted({x_letter.reason, generic_letter.reason, garbage_letter.reason})
    assert "direct_message_events must be a list" in x_letter.reason
    assert "not a raw envelope" in garbage_letter.reason
    assert not any(row["redriven"] for row in everything)
    college = listed(settings, "--workspace", "college")
    assert len(college) == 2 and {r["source"] for r in college} == {"x"}
    assert college[0]["body_preview"] == X_POISON.decode()
    table = cli(settings, "list", "--workspace", "other")
    assert "generic" in table and "1 dead letters" in table

    # dry run: three distinct deliveries would go (the duplicate dead letter once); nothing sent
    dry = cli(settings, "redrive", "--dry-run")
    assert "would redrive 3 dead letters" in dry
    assert raw_values(settings) == raw_before

    # a filtered redrive sends only the selected letter, its original envelope verbatim
    out = cli(settings, "redrive", "--workspace", "college", "--reason-contains", "MUST BE A LIST")
    assert "redrove 1 dead letters" in out
    added = Counter(raw_values(settings)) - Counter(raw_before)
    assert list(added.values()) == [1]
    redriven = RawEnvelope.loads(next(iter(added)))
    assert redriven == x_letter.envelope()  # the original envelope, byte for byte
    assert redriven.body == X_POISON and redriven.headers["user-agent"] == "poison/1"

    # the rest, then nothing new
    out = cli(settings, "redrive")
    assert "redrove 2 dead letters" in out and "2 already redriven" in out
    assert "redrove 0 dead letters" in cli(settings, "redrive")
    assert "redrove 0 dead letters" in cli(settings, "redrive", "--workspace", "college")
    added = Counter(raw_values(settings)) - Counter(raw_before)
    assert added == Counter(
        [x_letter.envelope().dumps(), generic_letter.envelope().dumps(), NOT_AN_ENVELOPE]
    )
    assert all(row["redriven"] for row in listed(settings))

    # the ledger is a compacted topic keyed by the raw record each letter came from
    ledger = read_topic(settings.kafka_bootstrap, ledger_topic(settings))
    assert sorted(r.key for r in ledger if r.key) == sorted(
        f"{x.raw.topic}:{x.raw.partition}:{x.raw.offset}".encode()
        for x in (x_letter, generic_letter, garbage_letter)
    )
