"""The events a relationship has applied, as 64-bit fingerprints: what makes a duplicate count once.

A relationship keeps a fingerprint of every event it ever applied, so its seen-set is the one
part of a state that grows with the whole history, not only with the lateness window. It is a
sorted `array` of unsigned 64-bit integers (8 bytes each; a set of strings took about 110), looked
up by bisection and copied once per batch (a `memcpy`). It is stored as the fingerprints' 16
lowercase hex digits each, in ascending order: for ids made by `events.ids.event_id` (32 hex
digits) the same text as the earlier stored form, a set of their first 16 digits sorted, so
states written before read back unchanged.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import sys
from array import array
from collections.abc import Iterable, Sequence
from typing import TypeAlias

Seen: TypeAlias = "array[int]"  # typecode "Q", ascending, never modified once a state holds it

_EVENT_ID = re.compile(r"[0-9a-f]{32}")  # what `events.ids.event_id` makes
_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX_RUN = re.compile(r"[0-9a-f]*")


def fingerprint(event_id: str) -> int:
    """64 bits of an event id: the first 16 hex digits of an id from `event_id` (random
    already), a hash of the whole id for any other (an imported canonical event may carry its
    own: ids that share their first 16 characters, or have fewer, must stay apart)."""
    if len(event_id) == 32 and _EVENT_ID.fullmatch(event_id):
        return int(event_id[:16], 16)
    return _hashed(event_id)


def fingerprints(event_ids: Sequence[str]) -> Seen:
    """`fingerprint` of each id, in order (not a seen-set: unsorted, repeats kept).

    When every id is one of ours (32 lowercase hex digits), all at once: their hex decoded in
    one go and the first 8 bytes of each taken, with no Python work per id. A replay takes the
    fingerprints of every event it folds (`projections.relationship.replayed`).
    """
    joined = "".join(event_ids)
    if (
        len(joined) == 32 * len(event_ids)
        and _HEX_RUN.fullmatch(joined)
        and all(map((32).__eq__, map(len, event_ids)))
    ):
        words = array("Q")
        words.frombytes(bytes.fromhex(joined))  # two words per id, the first is its print
        prints = words[::2]
        if sys.byteorder == "little":
            prints.byteswap()
        return prints
    return array("Q", map(fingerprint, event_ids))


def _hashed(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def empty() -> Seen:
    return array("Q")


def of(values: Iterable[int]) -> Seen:
    """A seen-set of these fingerprints (each once)."""
    return array("Q", sorted(set(values)))


def contains(seen: Seen, value: int) -> bool:
    i = bisect.bisect_left(seen, value)
    return i < len(seen) and seen[i] == value


def merged(seen: Seen, added: Iterable[int]) -> Seen:
    """A new array with `added` (fingerprints not in `seen`) in place; `seen` is untouched.

    A few (a live batch) are inserted into a copy; many (a replay folding a whole history at
    once) are sorted in with the rest, which keeps both linear-ish.
    """
    more = list(added)
    if not more:
        return seen
    if len(more) <= 64:
        out = array("Q", seen)
        for value in more:
            bisect.insort(out, value)
        return out
    return array("Q", sorted([*seen, *more]))


def packed(seen: Seen) -> str:
    """The stored form: 16 hex digits per fingerprint, ascending."""
    if sys.byteorder == "little":
        big = array("Q", seen)
        big.byteswap()
        return big.tobytes().hex()
    return seen.tobytes().hex()


def unpacked(stored: str | list[str]) -> Seen:
    """The stored form back, and the earlier ones: a list of fingerprint strings (the first
    encoding), or 16-character chunks in any order, which for an id not made by `event_id` were
    its first 16 characters (those read back as a hash that the whole id no longer matches: a
    replay recalculates such states)."""
    if isinstance(stored, str):
        try:
            raw = bytes.fromhex(stored)
        except ValueError:  # a chunk that is not hex: an imported id, stored as its prefix
            chunks = [stored[i : i + 16] for i in range(0, len(stored), 16)]
            return array("Q", sorted({_chunk(c) for c in chunks}))
        if len(raw) % 8:
            raise ValueError(f"a packed seen-set of {len(stored)} hex digits, not 16 each")
        values = array("Q")
        values.frombytes(raw)
        if sys.byteorder == "little":
            values.byteswap()
        return array("Q", sorted(values))
    return array("Q", sorted({_chunk(c) for c in stored}))


def _chunk(text: str) -> int:
    return int(text, 16) if _HEX16.fullmatch(text) else _hashed(text)
