"""Which of a post's relations an adapter keeps: the first that counts, else the first."""

from __future__ import annotations

from events.direction import counting_relation, one_side_owned
from events.models import Identity, Kind
from rapport.workspaces import WorkspaceConfig

ACME = WorkspaceConfig(name="acme", accounts=({"platform": "x", "user_id": "783214"},))
BRAND = Identity(platform="x", user_id="783214")
ALICE = Identity(platform="x", user_id="1001")
BOB = Identity(platform="x", user_id="1002")


def test_a_reply_to_a_stranger_that_mentions_the_brand_counts_as_the_mention() -> None:
    relations = [(Kind.REPLY, BOB, "900"), (Kind.MENTION, BRAND, "900")]
    assert counting_relation(ACME, ALICE, relations) == (Kind.MENTION, BRAND, "900")


def test_the_first_counting_relation_wins() -> None:
    relations = [(Kind.REPLY, BRAND), (Kind.MENTION, BRAND)]
    assert counting_relation(ACME, ALICE, relations) == (Kind.REPLY, BRAND)


def test_none_counting_keeps_the_first() -> None:
    relations = [(Kind.REPLY, BOB), (Kind.QUOTE, ALICE)]
    assert counting_relation(ACME, ALICE, relations) == (Kind.REPLY, BOB)
    # the brand talking to itself counts neither way
    assert counting_relation(ACME, BRAND, [(Kind.MENTION, BRAND)]) == (Kind.MENTION, BRAND)
    assert not one_side_owned(ACME, BRAND, BRAND)
    assert one_side_owned(ACME, BRAND, ALICE)
