"""Backfill: canonical events from files, with the ids the adapters give the same objects.

Three formats (`rapport import FILE --workspace W --format ...`):

* `ndjson`: one JSON object a line, either a canonical event (as `rapport export` writes it:
  it has a `type`) kept as it is, or a generic-webhook item (docs/generic-webhook.md) turned into
  an interaction exactly as the generic webhook does (id `generic:<id>`).
* `csv`: SPEC section 4: a header with at least `platform, object_id, occurred_at` (ISO 8601 or
  epoch seconds), `actor_id, subject_id, kind`, optionally `conversation_id, in_reply_to, text`
  (and `intent`). A row is the generic webhook item with the same values, so its event id is
  `event_id(workspace, platform, "generic:<object_id>")`: a CSV backfill and a live generic feed
  of the same system collapse.
* `x-archive`: an X "download your data" archive (directory or .zip): `data/account.js` names
  the owned account, `data/tweets.js` (or the older `tweet.js`) and `data/direct-messages.js`
  hold `window.YTD.<name>.part0 = [...]`. DMs become `message`s keyed `dm:<id>` and the owner's
  replies, retweets and mentions `reply`/`share`/`mention`s keyed `tweet:<id>`: the X adapter's
  keys, so an archive and the webhooks that delivered the same objects collapse.

Direction, contact, member, intent and ids come from `events.adapters.base.finish` with the
workspace's owned accounts, as for every webhook. A line or row that cannot be read is reported
(`Problem`) and skipped; the others are imported. Re-importing a file yields the same event ids,
which every projection counts once.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from events.adapters.base import Draft, NotAnInteraction, RejectedPayload, finish
from events.adapters.generic import GenericEvent, _draft
from events.adapters.x import parse_twitter_time
from events.envelope import RawEnvelope
from events.models import Event, Identity, Intent, Kind, parse_event
from rapport.workspaces import WorkspaceConfig

FORMATS = ("ndjson", "csv", "x-archive")
CSV_REQUIRED = ("platform", "object_id", "occurred_at", "actor_id", "subject_id", "kind")
CSV_OPTIONAL = ("conversation_id", "in_reply_to", "text", "intent")
CHUNK = 1000  # drafts finished at once


class UnreadableFile(ValueError):
    """The file as a whole cannot be imported (wrong format, missing header, foreign archive)."""


@dataclass(frozen=True)
class Problem:
    where: str  # "line 12", "row 7", "tweets.js[3]"
    reason: str


Progress = Callable[[int], None]


def _envelope(workspace: WorkspaceConfig, received_at: datetime, source: str) -> RawEnvelope:
    return RawEnvelope(workspace=workspace.name, source=source, received_at=received_at, body=b"")


def _finish(
    workspace: WorkspaceConfig,
    drafts: list[tuple[str, Draft]],
    received_at: datetime,
    source: str,
    problems: list[Problem],
) -> list[Event]:
    """Interactions of drafts; a draft the models reject is reported, the rest still go."""
    envelope = _envelope(workspace, received_at, source)
    try:
        return list(finish(workspace, envelope, [d for _, d in drafts], []).events)
    except ValidationError:
        out: list[Event] = []
        for where, draft in drafts:
            try:
                out.extend(finish(workspace, envelope, [draft], []).events)
            except ValidationError as exc:
                problems.append(Problem(where, _reason(exc)))
        return out


def _reason(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "value"
    return f"{where}: {error['msg']}"


def _chunked(
    workspace: WorkspaceConfig,
    items: Iterable[tuple[str, Draft | NotAnInteraction | Event | Problem]],
    received_at: datetime,
    source: str,
    problems: list[Problem],
) -> Iterator[Event]:
    pending: list[tuple[str, Draft]] = []
    for where, item in items:
        if isinstance(item, Draft):
            pending.append((where, item))
            if len(pending) >= CHUNK:
                yield from _finish(workspace, pending, received_at, source, problems)
                pending = []
        elif isinstance(item, Problem):
            problems.append(item)
        elif not isinstance(item, NotAnInteraction):
            yield item
    if pending:
        yield from _finish(workspace, pending, received_at, source, problems)


# --- NDJSON -----------------------------------------------------------------------------------


def ndjson_events(
    workspace: WorkspaceConfig,
    lines: Iterable[bytes],
    problems: list[Problem],
    received_at: datetime | None = None,
    progress: Progress | None = None,
) -> Iterator[Event]:
    """Canonical events and generic-webhook items, one JSON object a line."""
    received_at = received_at or datetime.now(UTC)

    def items() -> Iterator[tuple[str, Draft | NotAnInteraction | Event | Problem]]:
        for number, line in enumerate(lines, start=1):
            if progress is not None:
                progress(len(line))
            where = f"line {number}"
            text = line.strip()
            if not text:
                continue
            try:
                doc = json.loads(text)
            except ValueError as exc:
                yield where, Problem(where, f"not JSON: {exc}")
                continue
            if not isinstance(doc, dict):
                yield where, Problem(where, "a line holds one JSON object")
                continue
            if "type" in doc:
                try:
                    event = parse_event(text)
                except (ValidationError, ValueError) as exc:
                    yield where, Problem(where, f"not a canonical event: {exc}".splitlines()[0])
                    continue
                if event.workspace != workspace.name:
                    yield (
                        where,
                        Problem(
                            where,
                            f"event of workspace {event.workspace!r}, importing into "
                            f"{workspace.name!r}",
                        ),
                    )
                    continue
                yield where, event
                continue
            try:
                yield where, _draft(GenericEvent.model_validate(doc))
            except ValidationError as exc:
                yield where, Problem(where, _reason(exc))

    return _chunked(workspace, items(), received_at, "import.ndjson", problems)


# --- CSV --------------------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """ISO 8601 (no zone = UTC) or epoch seconds."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"not a time: {text!r}")
        return datetime.fromtimestamp(seconds, tz=UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _csv_draft(row: dict[str, str]) -> Draft:
    def opt(name: str) -> str | None:
        value = (row.get(name) or "").strip()
        return value or None

    platform = (row.get("platform") or "").strip()
    object_id = (row.get("object_id") or "").strip()
    actor = (row.get("actor_id") or "").strip()
    if not object_id or not actor:
        raise ValueError("object_id and actor_id must not be empty")
    try:
        kind = Kind((row.get("kind") or "").strip())
    except ValueError:
        raise ValueError(
            f"unknown kind {row.get('kind')!r} (one of: {', '.join(k.value for k in Kind)})"
        ) from None
    intent = opt("intent")
    subject = opt("subject_id")
    return Draft(
        platform=platform,
        kind=kind,
        actor=Identity(platform=platform, user_id=actor),
        subject=Identity(platform=platform, user_id=subject) if subject else None,
        occurred_at=parse_time(row.get("occurred_at") or ""),
        object_key=f"generic:{object_id}",
        object_id=object_id,
        conversation_id=opt("conversation_id"),
        in_reply_to=opt("in_reply_to"),
        text=opt("text"),
        intent=Intent(intent) if intent else None,
    )


def csv_events(
    workspace: WorkspaceConfig,
    text: Iterable[str],
    problems: list[Problem],
    received_at: datetime | None = None,
    progress: Progress | None = None,
) -> Iterator[Event]:
    """Interactions of a CSV file's rows (SPEC section 4)."""
    received_at = received_at or datetime.now(UTC)

    def counted() -> Iterator[str]:
        for line in text:
            if progress is not None:
                progress(len(line.encode()))
            yield line

    reader = csv.DictReader(counted())
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise UnreadableFile(
            f"the CSV header lacks {', '.join(missing)} (needs {', '.join(CSV_REQUIRED)}; "
            f"optional {', '.join(CSV_OPTIONAL)})"
        )
    reader.fieldnames = header

    def items() -> Iterator[tuple[str, Draft | NotAnInteraction | Event | Problem]]:
        for number, row in enumerate(reader, start=2):
            where = f"row {number}"
            try:
                yield where, _csv_draft(row)
            except ValidationError as exc:
                yield where, Problem(where, _reason(exc))
            except ValueError as exc:
                yield where, Problem(where, str(exc))

    return _chunked(workspace, items(), received_at, "import.csv", problems)


# --- X archive --------------------------------------------------------------------------------


class XArchive:
    """The files of an X data archive, from its directory or its .zip."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip = zipfile.ZipFile(path) if path.is_file() else None
        self._names = self._list()

    def _list(self) -> dict[str, str]:
        if self._zip is not None:
            names = self._zip.namelist()
        else:
            names = [str(p.relative_to(self.path)) for p in self.path.rglob("*.js")]
        return {n.rsplit("/", 1)[-1]: n for n in names if n.endswith(".js")}

    def has(self, *names: str) -> str | None:
        return next((n for n in names if n in self._names), None)

    def read(self, name: str) -> list[Any]:
        """The array a `window.YTD.<name>.part0 = [...]` file assigns."""
        member = self._names[name]
        if self._zip is not None:
            text = self._zip.read(member).decode("utf-8-sig")
        else:
            text = (self.path / member).read_text(encoding="utf-8-sig")
        _, sep, body = text.partition("=")
        if not sep:
            raise UnreadableFile(f"{name} is not a window.YTD.<name>.part0 = [...] file")
        data = json.loads(body.strip().rstrip(";"))
        if not isinstance(data, list):
            raise UnreadableFile(f"{name} does not hold an array")
        return data

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _account(archive: XArchive) -> tuple[str, str]:
    name = archive.has("account.js")
    if name is None:
        raise UnreadableFile(f"{archive.path} has no data/account.js: not an X data archive?")
    entries = archive.read(name)
    try:
        account = entries[0]["account"]
        return str(account["accountId"]), str(account.get("username") or "")
    except (IndexError, KeyError, TypeError) as exc:
        raise UnreadableFile(f"account.js has no account.accountId ({exc})") from None


def _tweet_draft(
    workspace: WorkspaceConfig, owner: Identity, tweet: dict[str, Any]
) -> Draft | NotAnInteraction:
    tweet_id = str(tweet["id_str"])
    occurred_at = parse_twitter_time(tweet["created_at"])
    text = tweet.get("full_text") if isinstance(tweet.get("full_text"), str) else None
    mentions = [
        Identity(platform="x", user_id=str(m["id_str"]))
        for m in (tweet.get("entities") or {}).get("user_mentions") or []
        if isinstance(m, dict) and m.get("id_str") and str(m["id_str"]) != owner.user_id
    ]
    if text is not None and text.startswith("RT @") and mentions:
        return Draft(
            platform="x", kind=Kind.SHARE, actor=owner, subject=mentions[0],
            occurred_at=occurred_at, object_key=f"tweet:{tweet_id}", object_id=tweet_id,
        )  # fmt: skip
    replied_user = tweet.get("in_reply_to_user_id_str")
    if replied_user and str(replied_user) != owner.user_id:
        return Draft(
            platform="x",
            kind=Kind.REPLY,
            actor=owner,
            subject=Identity(platform="x", user_id=str(replied_user)),
            occurred_at=occurred_at,
            object_key=f"tweet:{tweet_id}",
            object_id=tweet_id,
            in_reply_to=tweet.get("in_reply_to_status_id_str") or None,
            text=text,
        )
    contact = next((m for m in mentions if workspace.owned("x", m.user_id) is None), None)
    if contact is not None:
        return Draft(
            platform="x", kind=Kind.MENTION, actor=owner, subject=contact,
            occurred_at=occurred_at, object_key=f"tweet:{tweet_id}", object_id=tweet_id,
            in_reply_to=tweet.get("in_reply_to_status_id_str") or None, text=text,
        )  # fmt: skip
    return NotAnInteraction("x.own_tweet", tweet_id)


def _dm_draft(message: dict[str, Any]) -> Draft | NotAnInteraction:
    create = message.get("messageCreate")
    if not isinstance(create, dict):
        return NotAnInteraction("x.dm_event", ",".join(sorted(message)))
    recipient = create.get("recipientId")
    if not recipient:
        return NotAnInteraction("x.group_dm", str(create.get("id")))
    dm_id = str(create["id"])
    return Draft(
        platform="x",
        kind=Kind.MESSAGE,
        actor=Identity(platform="x", user_id=str(create["senderId"])),
        subject=Identity(platform="x", user_id=str(recipient)),
        occurred_at=parse_time(str(create["createdAt"])),
        object_key=f"dm:{dm_id}",
        object_id=dm_id,
        text=create.get("text") if isinstance(create.get("text"), str) else None,
    )


def x_archive_events(
    workspace: WorkspaceConfig,
    path: Path,
    problems: list[Problem],
    received_at: datetime | None = None,
    progress: Progress | None = None,
) -> Iterator[Event]:
    """Interactions of an X data archive: DMs, and the owner's replies, retweets, mentions."""
    received_at = received_at or datetime.now(UTC)
    archive = XArchive(path)
    account_id, username = _account(archive)
    if workspace.owned("x", account_id) is None:
        archive.close()
        raise UnreadableFile(
            f"the archive belongs to X account {account_id} (@{username}), which workspace "
            f"{workspace.name!r} does not own; add it to its accounts first: "
            f'{{ platform = "x", user_id = "{account_id}", member = "brand" }}'
        )
    owner = Identity(platform="x", user_id=account_id)

    def items() -> Iterator[tuple[str, Draft | NotAnInteraction | Event | Problem]]:
        try:
            tweets = archive.has("tweets.js", "tweet.js")
            for index, entry in enumerate(archive.read(tweets) if tweets else []):
                where = f"{tweets}[{index}]"
                if progress is not None:
                    progress(1)
                try:
                    tweet = entry.get("tweet", entry)
                    yield where, _tweet_draft(workspace, owner, tweet)
                except (KeyError, TypeError, ValueError, RejectedPayload) as exc:
                    yield where, Problem(where, f"unreadable tweet: {exc}")
            dms = archive.has("direct-messages.js", "direct-message.js")
            for index, entry in enumerate(archive.read(dms) if dms else []):
                conversation = (entry or {}).get("dmConversation") or {}
                for number, message in enumerate(conversation.get("messages") or []):
                    where = f"{dms}[{index}].messages[{number}]"
                    if progress is not None:
                        progress(1)
                    try:
                        yield where, _dm_draft(message)
                    except (KeyError, TypeError, ValueError) as exc:
                        yield where, Problem(where, f"unreadable message: {exc}")
        finally:
            archive.close()

    return _chunked(workspace, items(), received_at, "import.x-archive", problems)


def x_archive_size(path: Path) -> int:
    """Tweets plus DMs in an archive (for a progress bar)."""
    archive = XArchive(path)
    try:
        total = 0
        tweets = archive.has("tweets.js", "tweet.js")
        if tweets:
            total += len(archive.read(tweets))
        dms = archive.has("direct-messages.js", "direct-message.js")
        if dms:
            for entry in archive.read(dms):
                total += len(((entry or {}).get("dmConversation") or {}).get("messages") or [])
        return total
    finally:
        archive.close()


def events_from_file(
    workspace: WorkspaceConfig,
    path: Path,
    fmt: str,
    problems: list[Problem],
    progress: Progress | None = None,
    received_at: datetime | None = None,
) -> Iterator[Event]:
    """The events of FILE in format `fmt` (one of FORMATS)."""
    if fmt == "ndjson":

        def lines() -> Iterator[bytes]:
            with path.open("rb") as fh:
                yield from fh

        return ndjson_events(workspace, lines(), problems, received_at, progress)
    if fmt == "csv":

        def text() -> Iterator[str]:
            with path.open(encoding="utf-8-sig", newline="") as fh:
                yield from fh

        return csv_events(workspace, text(), problems, received_at, progress)
    if fmt == "x-archive":
        return x_archive_events(workspace, path, problems, received_at, progress)
    raise UnreadableFile(f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})")


def csv_text(rows: Iterable[dict[str, Any]]) -> str:
    """A CSV file of rows with the SPEC columns (what tests and tools write)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=[*CSV_REQUIRED, *CSV_OPTIONAL[:3]], lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in writer.fieldnames})
    return buffer.getvalue()
