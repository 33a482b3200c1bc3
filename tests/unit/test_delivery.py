"""The normalizing step: events out, or a dead letter with the reason and the original bytes."""

from __future__ import annotations

from datetime import UTC, datetime

from events.delivery import DeadLetter, process_delivery
from events.envelope import RawEnvelope
from events.models import RawPointer
from rapport.workspaces import WorkspaceRegistry
from tests.conftest import FIXTURES

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POINTER = RawPointer(topic="rapport.raw", partition=3, offset=42)
REGISTRY = WorkspaceRegistry.from_mapping(
    {"workspaces": {"acme": {"accounts": [{"platform": "x", "user_id": "4337869213"}]}}}
)
DM = FIXTURES / "webhooks" / "x_account_activity" / "direct_message_events.json"


def envelope(body: bytes, workspace: str = "acme", source: str = "x") -> bytes:
    return RawEnvelope(workspace=workspace, source=source, received_at=NOW, body=body).dumps()


def test_vendor_dm_becomes_one_inbound_message_pointing_at_its_raw_record() -> None:
    outcome = process_delivery(REGISTRY, envelope(DM.read_bytes()), POINTER, NOW)
    assert outcome.dead_letter is None
    (event,) = outcome.events
    assert event.actor.user_id == "3001969357" and event.direction.value == "inbound"
    assert event.occurred_at == datetime(2018, 1, 19, 23, 12, 40, 557000, tzinfo=UTC)
    assert event.raw == POINTER


def test_unknown_workspace_malformed_body_and_garbage_become_dead_letters() -> None:
    cases = {
        envelope(DM.read_bytes(), workspace="nobody"): "not configured",
        envelope(b"{not json"): "not JSON",
        envelope(b'{"direct_message_events": 7}'): "must be a list",
        envelope(b"{}", source="carrier-pigeon"): "no adapter",
        b"\x00\x01 not an envelope": "not a raw envelope",
    }
    for raw, reason in cases.items():
        outcome = process_delivery(REGISTRY, raw, POINTER, NOW)
        assert outcome.events == ()
        letter = outcome.dead_letter
        assert letter is not None and reason in letter.reason, letter
        assert letter.raw == POINTER
        assert DeadLetter.loads(letter.dumps()) == letter


def test_dead_letter_keeps_the_exact_body_for_redrive() -> None:
    body = b'{"direct_message_events": 7, "x": "\xc3\xa9"}'
    letter = process_delivery(REGISTRY, envelope(body), POINTER, NOW).dead_letter
    assert letter is not None
    assert letter.envelope().body == body
