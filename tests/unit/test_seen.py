"""The seen-set: one fingerprint per applied event, stored as the earlier form was."""

from __future__ import annotations

import re
import secrets
import sys
from array import array

from hypothesis import given
from hypothesis import strategies as st

from events.ids import event_id
from projections import seen


def test_ids_made_by_event_id_keep_their_first_16_digits() -> None:
    eid = event_id("w", "x", "obj:1")
    assert seen.fingerprint(eid) == int(eid[:16], 16)


def test_other_ids_are_hashed_whole_so_short_and_shared_prefix_ids_stay_apart() -> None:
    ids = ["short-01", "import-event-000001", "import-event-000002", "ABCDEF0123456789" * 2]
    prints = [seen.fingerprint(i) for i in ids]
    assert len(set(prints)) == len(ids)
    assert prints[3] != int("ABCDEF0123456789", 16)  # upper case is not what event_id makes
    assert all(0 <= p < 2**64 for p in prints)


@given(st.text(alphabet="0123456789abcdefABCDEF-g ", min_size=30, max_size=33))
def test_only_32_lowercase_hex_digits_keep_their_prefix(text: str) -> None:
    ours = len(text) == 32 and re.fullmatch(r"[0-9a-f]{32}", text) is not None
    expected = int(text[:16], 16) if ours else seen._hashed(text)
    assert seen.fingerprint(text) == expected


_ID_PARTS = st.one_of(
    st.builds(lambda n: event_id("w", "x", f"obj:{n}"), st.integers(0, 10**6)),
    st.text(alphabet="0123456789abcdef", min_size=0, max_size=48),  # hex, any length
    st.text(alphabet="0123456789abcdefABCDEF-g", min_size=30, max_size=34),
)


@given(st.lists(_ID_PARTS, max_size=40))
def test_fingerprints_in_bulk_are_each_ids_fingerprint_in_order(ids: list[str]) -> None:
    """Lengths that add up to 32 per id (31 + 33), upper case, repeats: the bulk path takes
    only lists of ids that are all ours, the rest id by id."""
    assert list(seen.fingerprints(ids)) == [seen.fingerprint(i) for i in ids]


def test_fingerprints_in_bulk_of_ids_whose_lengths_only_add_up() -> None:
    ours = event_id("w", "x", "obj:1")
    ids = [ours[:31], ours + "0"]  # 63 + 1 = 64 hex digits, two ids, neither ours
    assert list(seen.fingerprints(ids)) == [seen._hashed(i) for i in ids]
    assert list(seen.fingerprints([ours, ours])) == [int(ours[:16], 16)] * 2


def test_the_stored_form_is_the_earlier_one_for_event_ids() -> None:
    ids = [event_id("w", "x", f"obj:{n}") for n in range(50)]
    values = seen.merged(seen.empty(), {seen.fingerprint(i) for i in ids})
    assert seen.packed(values) == "".join(sorted(i[:16] for i in ids))
    arrival_order = "".join(i[:16] for i in ids)  # how a state appended them before
    assert seen.unpacked(arrival_order) == values
    assert seen.unpacked([i[:16] for i in ids]) == values  # the first encoding, a list


def test_an_earlier_non_hex_prefix_reads_back_as_a_fingerprint() -> None:
    stored = "0123456789abcdef" + "import-event-000"
    back = seen.unpacked(stored)
    assert len(back) == 2 and seen.contains(back, 0x0123456789ABCDEF)


def test_a_torn_stored_form_is_refused() -> None:
    try:
        seen.unpacked("0123456789abcdef01")
    except ValueError as e:
        assert "16 each" in str(e)
    else:
        raise AssertionError("a stored seen-set of 18 hex digits was accepted")


def test_an_array_takes_eight_bytes_a_fingerprint() -> None:
    values = seen.merged(seen.empty(), range(0, 10_000 * 7, 7))
    assert values.itemsize == 8 and sys.getsizeof(values) < 8 * 10_000 + 200


@given(st.lists(st.lists(st.integers(min_value=0, max_value=2**64 - 1), max_size=150), max_size=6))
def test_merging_batches_is_the_sorted_set_and_leaves_the_input_alone(
    batches: list[list[int]],
) -> None:
    values = seen.empty()
    everything: set[int] = set()
    for batch in batches:
        added = {v for v in batch if not seen.contains(values, v)}
        before = array("Q", values)
        out = seen.merged(values, added)
        assert values == before  # a state that holds `values` never sees it change
        values = out
        everything |= set(batch)
        assert list(values) == sorted(everything)
        assert all(seen.contains(values, v) for v in batch)
    assert seen.unpacked(seen.packed(values)) == values


def test_random_ids_round_trip_through_the_stored_form() -> None:
    ids = [secrets.token_hex(16) for _ in range(300)] + [f"ext-{n}" for n in range(300)]
    values = seen.merged(seen.empty(), {seen.fingerprint(i) for i in ids})
    assert len(values) == 600
    assert seen.unpacked(seen.packed(values)) == values
