"""The `rapport relationships` table: every shown cell whole (columns left out and named on a
narrow console), durations in units people read; json and csv keep SPEC names and raw values."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from projections.readmodel import RELATIONSHIP_FIELDS, TIME_FIELDS
from rapport.cli.read import (
    _CONTACT_WIDTH,
    _HIDDEN_FIRST,
    TABLE_COLUMNS,
    TABLE_FIELDS,
    duration,
    render,
)

_SIZES = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}


def _row(contact: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in RELATIONSHIP_FIELDS}
    row.update(
        workspace="college", contact_id=contact, stage="attraction", interactions=171,
        last_contact_at="2004-10-01T21:05:12.345Z", our_latency_p50_s=705_965.0,
        their_latency_p50_s=9_836.0, awaiting_reply_since="2004-07-28T22:02:00.000Z",
        balance=-1234.5, reciprocity=0.0123, strength=111.456, qualified_conversations=12,
        touch_due_at="2004-10-31T21:05:12.345Z", qualified_at=[], platforms=["x"], members=[],
    )  # fmt: skip
    row.update(values)
    return row


def _text(rows: list[dict[str, Any]], width: int = 160) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(render(rows, "table", width))
    return console.export_text()


def test_table_cells_are_whole_and_durations_readable() -> None:
    out = _text([_row("x:1312"), _row("x:8", stage="audience", our_latency_p50_s=None)])
    assert "…" not in out
    assert "not shown" not in out  # everything fits 160 columns
    for cell in (
        "x:1312", "x:8", "attraction", "audience", "2004-10-01 21:05", "2004-07-28 22:02",
        "2004-10-31", "8d 4h", "2h 44m", "-1,234.5", "0.01", "111.5", "171", "12",
    ):  # fmt: skip
        assert cell in out, cell
    assert "705,965" not in out  # no raw seconds
    header = out.split("2004-")[0]
    for label in TABLE_COLUMNS.values():
        assert label.split("\n")[0] in header, label


def test_a_long_contact_id_folds_whole() -> None:
    urn = "linkedin:urn:li:person:ACoAAB1234BCDEFGHIJKLMN"
    out = _text([_row(urn)])
    assert "…" not in out
    assert urn[:_CONTACT_WIDTH] in out and urn[_CONTACT_WIDTH:] in out


@pytest.mark.parametrize("width", [140, 120, 100, 80, 60, 40])
def test_narrow_consoles_leave_columns_out_and_name_them(width: int) -> None:
    out = _text([_row("x:1312"), _row("x:8")], width)
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= width
    caption = " ".join(out.split("not shown at this width:")[1].split())
    hidden = caption.split(" (--format")[0].split(", ")
    assert hidden == list(_HIDDEN_FIRST[: len(hidden)])  # in the order they go
    assert "x:1312" in out and "attraction" in out  # contact and stage stay
    header = out.split("x:1312")[0]
    for field in TABLE_FIELDS:
        assert (field in hidden) != (TABLE_COLUMNS[field].split("\n")[0] in header), field


def test_json_and_csv_keep_every_field_and_raw_values() -> None:
    rows = [_row("x:8")]
    decoded = json.loads(str(render(rows, "json")))
    assert decoded == rows
    parsed = list(csv.DictReader(io.StringIO(str(render(rows, "csv")))))
    assert tuple(parsed[0]) == RELATIONSHIP_FIELDS
    assert parsed[0]["our_latency_p50_s"] == "705965.0"
    assert set(TABLE_FIELDS) <= set(RELATIONSHIP_FIELDS)
    assert {f for f in TABLE_FIELDS if f.endswith("_at")} <= TIME_FIELDS


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"), (0.4, "0s"), (45, "45s"), (59.6, "1m"), (200, "3m 20s"), (3_599, "1h"),
        (9_836, "2h 44m"), (86_399, "1d"), (705_965, "8d 4h"), (-30, "-30s"),
    ],
)  # fmt: skip
def test_duration_examples(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def _seconds_of(text: str) -> int:
    return sum(int(part[:-1]) * _SIZES[part[-1]] for part in text.split())


@given(st.floats(min_value=0, max_value=10 * 365 * 86_400))
def test_duration_is_within_half_its_smallest_unit(seconds: float) -> None:
    text = duration(seconds)
    parts = text.split()
    assert 1 <= len(parts) <= 2
    smallest = _SIZES[parts[-1][-1]]
    assert abs(_seconds_of(text) - seconds) <= smallest / 2 + 1e-6
    # the larger unit is the largest that fits, and the smaller one stays below it
    if len(parts) == 2:
        assert int(parts[1][:-1]) < _SIZES[parts[0][-1]] // smallest


def test_late_events_are_counted_under_the_table_with_the_way_out() -> None:
    quiet = _text([_row("x:1", late_events=0), _row("x:2", late_events=0)])
    assert "lateness" not in quiet and "replay" not in quiet
    out = " ".join(_text([_row("x:1", late_events=1200), _row("x:2", late_events=34)]).split())
    assert "1,234 interactions of these relationships arrived after their lateness window" in out
    assert "rapport replay --swap" in out
    narrow = " ".join(_text([_row("x:1", late_events=3)], 80).split())
    assert "not shown at this width:" in narrow and "3 interactions" in narrow
