"""Intent rules (intent-v1) on real text.

The comment bodies come from tests/fixtures/reddit/ (real Reddit comments recorded in PRAW's test
cassettes; see SOURCE.txt there). Each sample below was labelled by hand from its meaning, by the
rules' definitions: `ask` is an explicit request to the reader (a plain question about the world
is not), `thanks` is gratitude (not "thanks to X" meaning "because of X"), `give` is offering
something (a link, a tip, a recommendation, praise), `greeting` is a bare hello. The sample
deliberately holds hard negatives the first rule set got wrong ("Why would you ...", "thanks to the
downtime", "the admins here are ...", "don't try this").
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from events.adapters.base import Draft, finish
from events.envelope import RawEnvelope
from events.intent import RULES_VERSION, STRUCTURAL, classify_intent
from events.models import Identity, Intent, Kind, dump_event, parse_event
from rapport.workspaces import WorkspaceConfig

REDDIT = Path(__file__).parents[1] / "fixtures" / "reddit"

# comment fullname -> hand label. Files: F = TestCommentForest (both), S = TestSubredditStreams,
# R = TestRedditor. The quoted words are the part of the body that decides the label.
LABELS: dict[str, str] = {
    # thanks
    "t1_cu5v6ok": "thanks",  # F "Thanks!"
    "t1_c364p58": "thanks",  # F "...back up and running. Thanks for your hard work!"
    "t1_c365zqp": "thanks",  # F "this is very elaborate and very informative. thank you."
    "t1_dbhn10p": "thanks",  # S "Thank you very much! :)"
    "t1_c367y6t": "thanks",  # F "Thanks for saving us from unnecessary googling. Appreciated!"
    "t1_c3661uk": "thanks",  # F "i appreciate that you did an explanation."
    "t1_dbhn183": "thanks",  # S "That's a good idea, thank you"
    "t1_c365q5j": "thanks",  # F "[Thanks to MODs for letting me study today!]"
    "t1_c366fk6": "thanks",  # F "Cheers for getting the site back up guys"
    # not thanks
    "t1_c36518a": "neutral",  # F "passed a Cisco certification thanks to the downtime"
    "t1_c368wv2": "neutral",  # F "Thanks to reddit being down, I overheard ..."
    "t1_dbhn13d": "neutral",  # S "More customization is always appreciated."
    # ask
    "t1_dbhn17i": "ask",  # S "Could you link the other version?"
    "t1_c3665q5": "ask",  # F "Can you recommend any books that provide explanations ..."
    "t1_c36f5io": "ask",  # F "Can you change it so that ... Thanks." (ask beats thanks)
    "t1_c369r5m": "ask",  # F "Would you mind taking the site back down ..."
    "t1_c365mds": "ask",  # F "Can someone explain why this post would get downvoted?"
    "t1_c366jxr": "ask",  # F "Please post an update when this problem gets solved."
    "t1_dbhn176": "ask",  # S "Okay, let's start there. Can you give me an example ..."
    "t1_c3672rs": "ask",  # F "Can you tell us anything about it? :D"
    "t1_c36647t": "ask",  # F "could you guys do a group-style AMA?"
    "t1_dker0cn": "ask",  # R (moderator bot) "Please review the /r/pcgaming rules"
    # not ask
    "t1_c367dap": "neutral",  # F "Why would you destroy my home?!" (rhetorical)
    "t1_c3659d1": "neutral",  # F "Not until you reach ... will you be able to get free karma."
    "t1_c364uhe": "neutral",  # F "some nerd giving you all some advice"
    "t1_dbhn15i": "neutral",  # S "Why would you do that to your own people?"
    "t1_c367ogf": "neutral",  # F "How much memory does these memcached instances have?"
    # give
    "t1_c36943u": "give",  # F "You could try using Zookeeper for locking."
    "t1_c368eck": "give",  # F "You should try SQL Diagnostic Manager"
    "t1_c366rx5": "give",  # F "Try this (if you're running chromium): https://..."
    "t1_dbhn14l": "give",  # S "Hey here's a varied list of french-speaking movies I like"
    "t1_dbhn14x": "give",  # S "[Here's a video](https://www.youtube.com/...)"
    "t1_cu5v6cc": "give",  # F "Thought you guys would appreciate this."
    "t1_c367gxj": "give",  # F "well done, chaps."
    "t1_c3665go": "give",  # F "may i suggest...AZURE?"
    # not give
    "t1_c365g8m": "neutral",  # F "the admins here are lying to you ..."
    "t1_c366uw7": "neutral",  # F "edit: just so people know, don't try this!"
    # greeting
    "t1_dbhn131": "greeting",  # S "Hi, big fan!"
    # neutral
    "t1_cu5v1jt": "neutral",  # F "Sharp kid."
    "t1_cu5zm42": "neutral",  # F "This kid is going places"
    "t1_c365e00": "neutral",  # F "It's ok reddit, I still love you."
}


def _comments() -> dict[str, str]:
    bodies: dict[str, str] = {}
    for path in sorted(REDDIT.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            bodies[row["name"]] = row["body"]
    return bodies


COMMENTS = _comments()


def test_sample_is_large_and_balanced_enough() -> None:
    assert len(LABELS) >= 30
    assert set(LABELS.values()) == {"thanks", "ask", "give", "greeting", "neutral"}
    assert set(LABELS) <= set(COMMENTS)


@pytest.mark.parametrize(("name", "label"), sorted(LABELS.items()))
def test_hand_labelled_real_comments(name: str, label: str) -> None:
    assert classify_intent(Kind.COMMENT, COMMENTS[name]) == label, COMMENTS[name][:200]


@pytest.mark.parametrize(
    ("kind", "intent"),
    [
        (Kind.SHARE, "give"),
        (Kind.REACTION, "give"),
        (Kind.INTRODUCTION, "give"),
        (Kind.FOLLOW, "give"),
        (Kind.UNFOLLOW, "neutral"),
    ],
)
def test_structural_kinds_map_directly_whatever_the_text(kind: Kind, intent: str) -> None:
    assert STRUCTURAL[kind] == intent
    for text in (None, "", "Can you send me the file?", "Thanks!", COMMENTS["t1_c36f5io"]):
        assert classify_intent(kind, text) == intent


@pytest.mark.parametrize("kind", [Kind.MESSAGE, Kind.REPLY, Kind.EMAIL, Kind.MEETING])
def test_conversational_kinds_without_text_are_neutral(kind: Kind) -> None:
    assert classify_intent(kind, None) == "neutral"
    assert classify_intent(kind, "") == "neutral"


def test_typographic_apostrophes_and_handles() -> None:
    assert classify_intent(Kind.REPLY, "@acme here\u2019s the deck") == "give"
    assert classify_intent(Kind.REPLY, "@acme could you DM me?") == "ask"


def test_deterministic_over_the_whole_corpus() -> None:
    names = sorted(COMMENTS)
    first = [classify_intent(Kind.COMMENT, COMMENTS[n]) for n in names]
    shuffled = names[:]
    random.Random(3).shuffle(shuffled)
    again = dict(
        zip(shuffled, (classify_intent(Kind.COMMENT, COMMENTS[n]) for n in shuffled), strict=True)
    )
    assert first == [again[n] for n in names]
    assert set(first) <= {i.value for i in Intent}


def test_rules_version_is_stored_on_events() -> None:
    assert RULES_VERSION == "intent-v1"
    workspace = WorkspaceConfig(name="acme")
    envelope = RawEnvelope(
        workspace="acme", source="x", received_at=datetime(2026, 1, 1, tzinfo=UTC), body=b"{}"
    )
    draft = Draft(
        platform="x",
        kind=Kind.REPLY,
        actor=Identity(platform="x", user_id="1"),
        subject=Identity(platform="x", user_id="2"),
        occurred_at=datetime(2020, 1, 1, tzinfo=UTC),
        object_key="tweet:9",
        object_id="9",
        text=COMMENTS["t1_dbhn17i"],
    )
    (event,) = finish(workspace, envelope, [draft], []).events
    assert event.intent is Intent.ASK
    assert event.intent_rules == RULES_VERSION
    stored = json.loads(dump_event(event))
    assert stored["intent_rules"] == "intent-v1"
    assert parse_event(dump_event(event)) == event
