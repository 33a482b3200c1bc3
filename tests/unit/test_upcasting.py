"""Upcasting stored events: the legacy v0 interaction in tests/fixtures/events/."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

from events.models import Direction, Identity, Interaction, Kind, dump_event, parse_event
from events.upcasting import UPCASTERS, upcast

V0 = Path(__file__).parents[1] / "fixtures" / "events" / "interaction_v0.json"


def test_registry_is_keyed_by_type_and_version() -> None:
    assert ("interaction", 0) in UPCASTERS


def test_legacy_v0_parses_to_a_current_interaction() -> None:
    event = parse_event(V0.read_bytes())
    assert isinstance(event, Interaction)
    assert event.schema_version == 1
    assert event.kind is Kind.MESSAGE
    assert event.actor == Identity(platform="x", user_id="3001969357")
    assert event.subject == Identity(platform="x", user_id="4337869213")
    assert event.direction is Direction.INBOUND
    assert event.contact == event.actor and event.account == event.subject
    assert event.occurred_at == datetime(2018, 1, 19, 23, 12, 40, 557000, tzinfo=UTC)
    assert event.received_at == datetime(2018, 1, 19, 23, 12, 41, 2000, tzinfo=UTC)
    assert event.intent_rules == "intent-v1"
    # once upcast, it stores (and reads back) as the current version
    assert parse_event(dump_event(event)) == event
    assert json.loads(dump_event(event))["schema_version"] == 1


def test_upcast_keeps_colons_in_user_ids_and_derives_outbound_parties() -> None:
    legacy = json.loads(V0.read_text())
    legacy.update(
        platform="linkedin",
        actor="linkedin:urn:li:organization:2414183",
        subject="linkedin:urn:li:person:Jk4Ab3xYz1",
        direction="outbound",
    )
    before = copy.deepcopy(legacy)
    event = parse_event(json.dumps(legacy))
    assert legacy == before  # the stored dict is not modified
    assert isinstance(event, Interaction)
    assert event.actor == Identity(platform="linkedin", user_id="urn:li:organization:2414183")
    assert event.contact == Identity(platform="linkedin", user_id="urn:li:person:Jk4Ab3xYz1")
    assert event.account == event.actor


def test_current_events_pass_through_unchanged() -> None:
    current = json.loads(dump_event(parse_event(V0.read_bytes())))
    assert upcast(current) == current
    assert upcast({"type": "identity.linked", "schema_version": 1}) == {
        "type": "identity.linked",
        "schema_version": 1,
    }
