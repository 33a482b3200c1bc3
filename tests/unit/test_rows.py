"""The sink's fast JSON-to-row path equals the validated one on real adapter output."""

from __future__ import annotations

from datetime import UTC, date, datetime

from events.adapters import normalize
from events.envelope import RawEnvelope
from events.models import RawPointer, dump_event, parse_event
from projections.rows import interaction_row, interaction_row_from_json, relationship_date
from rapport.workspaces import WorkspaceConfig
from tests.conftest import FIXTURES


def test_fast_rows_equal_validated_rows_on_vendor_bodies() -> None:
    workspace = WorkspaceConfig(
        name="w",
        accounts=[
            {"platform": "facebook", "user_id": "1067280970047460"},
            {"platform": "x", "user_id": "4337869213"},
        ],
    )
    seen = 0
    for source, folder in (("meta", "meta_restfb"), ("x", "x_account_activity")):
        for path in sorted((FIXTURES / "webhooks" / folder).rglob("*.json")):
            envelope = RawEnvelope(
                workspace="w", source=source, received_at=datetime.now(UTC), body=path.read_bytes()
            )
            try:
                result = normalize(
                    workspace, envelope, RawPointer(topic="t", partition=1, offset=7)
                )
            except ValueError:
                continue
            for event in result.events:
                data = dump_event(event)
                parsed = parse_event(data)
                for contact in ("", "x:1"):
                    assert interaction_row_from_json(data, contact) == interaction_row(
                        parsed,
                        contact,  # type: ignore[arg-type]
                    ), path.name
                seen += 1
    assert seen > 50


def test_touch_from_json_equals_touch_of_the_validated_event() -> None:
    import json

    from events.models import Interaction
    from projections.relationship import touch_from_doc, touch_of

    pages = ("1234567890321", "12345654332", "101809759215303", "349489628480201")
    workspace = WorkspaceConfig(
        name="w",
        accounts=[
            {"platform": p, "user_id": page} for page in pages for p in ("facebook", "instagram")
        ],
    )
    compared = 0
    for path in sorted((FIXTURES / "webhooks" / "meta_restfb").rglob("*.json")):
        envelope = RawEnvelope(
            workspace="w", source="meta", received_at=datetime.now(UTC), body=path.read_bytes()
        )
        try:
            events = normalize(workspace, envelope).events
        except ValueError:
            continue
        for event in events:
            doc = json.loads(dump_event(event))
            assert isinstance(event, Interaction)
            counts = event.contact is not None and event.direction.counts
            assert touch_from_doc(doc) == (touch_of(event) if counts else None), path.name
            compared += counts
    assert compared > 10


def test_a_relationship_counts_on_the_utc_day_of_its_last_event() -> None:
    """The first column of a `relationships_daily` row: the UTC date, at both edges of a day."""
    at = int(datetime(2024, 2, 29, tzinfo=UTC).timestamp() * 1000)
    assert relationship_date({"last_contact_at": at}) == date(2024, 2, 29)
    assert relationship_date({"last_contact_at": at - 1}) == date(2024, 2, 28)
    assert relationship_date({"last_contact_at": 0}) == date(1970, 1, 1)
    assert relationship_date({"last_contact_at": None}) is None
