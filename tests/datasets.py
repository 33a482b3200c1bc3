"""Real interaction data as canonical events: SNAP CollegeMsg DMs and Reddit comment trees.

CollegeMsg (data/snap_collegemsg/) is read as X direct messages; the Reddit files
(tests/fixtures/reddit/, derived from PRAW's recorded cassettes) as replies in one thread each.
See the SOURCE.txt next to each file for provenance and licence.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from events.ids import event_id
from events.intent import classify_intent
from events.models import Direction, Identity, Interaction, Kind

REPO = Path(__file__).resolve().parent.parent
COLLEGEMSG = REPO / "data" / "snap_collegemsg" / "CollegeMsg.txt"
REDDIT_DIR = Path(__file__).resolve().parent / "fixtures" / "reddit"
REDDIT_THREADS = (
    REDDIT_DIR / "TestCommentForest.test_replace__all.comments.jsonl",
    REDDIT_DIR / "TestCommentForest.test_replace__all_large.comments.jsonl",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DELETED = "[deleted]"


def _at_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _parties(platform: str, sender: str, recipient: str, owned: set[str]) -> dict[str, Any]:
    """Direction, contact, account and member of sender -> recipient, seen from `owned`."""
    sender_id = Identity(platform=platform, user_id=sender)
    recipient_id = Identity(platform=platform, user_id=recipient)
    sender_owned, recipient_owned = sender in owned, recipient in owned
    if sender_owned and not recipient_owned:
        return {
            "direction": Direction.OUTBOUND,
            "contact": recipient_id,
            "account": sender_id,
            "member": f"m{sender}",
        }
    if recipient_owned and not sender_owned:
        return {
            "direction": Direction.INBOUND,
            "contact": sender_id,
            "account": recipient_id,
            "member": f"m{recipient}",
        }
    if sender_owned:
        return {
            "direction": Direction.INTERNAL,
            "contact": None,
            "account": sender_id,
            "member": f"m{sender}",
        }
    return {"direction": Direction.EXTERNAL, "contact": None, "account": None, "member": None}


def collegemsg_rows(limit: int | None = None) -> list[tuple[str, str, int]]:
    """(sender, recipient, unix seconds) per line, in file order."""
    rows = []
    with COLLEGEMSG.open() as f:
        for line in f:
            if limit is not None and len(rows) >= limit:
                break
            src, dst, ts = line.split()
            rows.append((src, dst, int(ts)))
    return rows


def collegemsg_most_active(n: int) -> list[str]:
    """The `n` users with the most messages sent plus received (ties by user id)."""
    counts: Counter[str] = Counter()
    for src, dst, _ in collegemsg_rows():
        counts[src] += 1
        counts[dst] += 1
    return sorted(counts, key=lambda user: (-counts[user], user))[:n]


def collegemsg_interactions(
    owned: set[str], workspace: str = "college", limit: int | None = None
) -> list[Interaction]:
    """Each CollegeMsg line n as the X direct message with id n, seen from `owned`."""
    events = []
    for n, (src, dst, ts) in enumerate(collegemsg_rows(limit), start=1):
        at = _at_ms(ts * 1000)
        events.append(
            Interaction(
                event_id=event_id(workspace, "x", f"dm:{n}"),
                workspace=workspace,
                occurred_at=at,
                received_at=at,
                platform="x",
                kind=Kind.MESSAGE,
                intent="neutral",
                actor=Identity(platform="x", user_id=src),
                subject=Identity(platform="x", user_id=dst),
                conversation_id=None,
                object_id=str(n),
                **_parties("x", src, dst, owned),
            )
        )
    return events


def reddit_comments(path: Path | str) -> list[dict[str, Any]]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def reddit_replies(path: Path | str) -> list[tuple[dict[str, Any], str]]:
    """(comment, parent author) for each reply to a comment in the file, between two people."""
    comments = reddit_comments(path)
    author_of = {c["name"]: c["author"] for c in comments}
    replies = []
    for comment in comments:
        parent = comment["parent_id"]
        if not parent.startswith("t1_") or parent not in author_of:
            continue
        author, parent_author = comment["author"], author_of[parent]
        if DELETED in (author, parent_author) or author == parent_author:
            continue
        replies.append((comment, parent_author))
    return replies


def most_replied_authors(path: Path | str, n: int = 3) -> list[str]:
    """The `n` authors who receive the most replies in the file (ties by name)."""
    counts = Counter(parent_author for _, parent_author in reddit_replies(path))
    return sorted(counts, key=lambda author: (-counts[author], author))[:n]


def reddit_interactions(
    path: Path | str, owned: set[str], workspace: str = "reddit", *, object_key_prefix: str = ""
) -> list[Interaction]:
    """Every reply to a comment as a `reply` interaction on platform `reddit`.

    The event id is `event_id(workspace, "reddit", name)`. The generic webhook keys its events
    `generic:<id>`: pass `object_key_prefix="generic:"` for the ids `reddit_generic_bodies`
    get through it (only the ids differ; no two replies of one relationship share a time).
    """
    events = []
    for comment, parent_author in reddit_replies(path):
        at = _at_ms(round(comment["created_utc"] * 1000))
        body = comment["body"]
        events.append(
            Interaction(
                event_id=event_id(workspace, "reddit", object_key_prefix + comment["name"]),
                workspace=workspace,
                occurred_at=at,
                received_at=at,
                platform="reddit",
                kind=Kind.REPLY,
                intent=classify_intent(Kind.REPLY, body),
                actor=Identity(platform="reddit", user_id=comment["author"]),
                subject=Identity(platform="reddit", user_id=parent_author),
                conversation_id=comment["link_id"],
                in_reply_to=comment["parent_id"],
                object_id=comment["name"],
                text=body,
                **_parties("reddit", comment["author"], parent_author, owned),
            )
        )
    return events


def reddit_generic_bodies(path: Path | str, owned: set[str], chunk: int = 200) -> list[bytes]:
    """The same replies as generic-webhook bodies (`{"events": [...]}`), `chunk` per body.

    `owned` is not part of a body (direction comes from the workspace's owned accounts); it is
    taken so callers pass the same arguments as to `reddit_interactions`.
    """
    del owned
    items = [
        {
            "id": comment["name"],
            "platform": "reddit",
            "kind": "reply",
            "occurred_at": comment["created_utc"],
            "actor": comment["author"],
            "subject": parent_author,
            "conversation_id": comment["link_id"],
            "in_reply_to": comment["parent_id"],
            "text": comment["body"],
        }
        for comment, parent_author in reddit_replies(path)
    ]
    return [
        json.dumps({"events": items[i : i + chunk]}).encode() for i in range(0, len(items), chunk)
    ]
