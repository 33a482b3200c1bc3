"""The demo: real CollegeMsg messages as signed X Account Activity DM deliveries.

Each message between an owned account and a student becomes one `direct_message_events`
delivery, sent once per owned party as X does (a message between two owned accounts arrives
twice, with different `for_user_id`, and must count once).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from streams.webhooks.x import SIGNATURE_HEADER, signature

REPO = Path(__file__).resolve().parent.parent
COLLEGEMSG = REPO / "data" / "snap_collegemsg" / "CollegeMsg.txt"
DEMO_WORKSPACES = REPO / "demo" / "workspaces.toml"


@dataclass(frozen=True)
class Message:
    """One CollegeMsg row; its 1-based line number is the DM id."""

    line: int
    sender: str
    recipient: str
    at_s: int


def read_collegemsg(path: Path = COLLEGEMSG) -> Iterator[Message]:
    with path.open() as fh:
        for number, line in enumerate(fh, start=1):
            src, dst, ts = line.split()
            yield Message(number, src, dst, int(ts))


def x_dm_delivery(message: Message, for_user_id: str) -> bytes:
    """An Account Activity body shaped like X's documented `direct_message_events` example."""
    body = {
        "for_user_id": for_user_id,
        "direct_message_events": [
            {
                "type": "message_create",
                "id": str(message.line),
                "created_timestamp": str(message.at_s * 1000),
                "message_create": {
                    "target": {"recipient_id": message.recipient},
                    "sender_id": message.sender,
                    "message_data": {"text": "", "entities": {}},
                },
            }
        ],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def deliveries(messages: Iterable[Message], owned: set[str]) -> list[tuple[Message, bytes]]:
    """One delivery per owned party of each message that involves an owned account."""
    out: list[tuple[Message, bytes]] = []
    for message in messages:
        for party in (message.sender, message.recipient):
            if party in owned:
                out.append((message, x_dm_delivery(message, party)))
    return out


@dataclass
class PostResult:
    sent: int
    statuses: dict[int, int]
    seconds: float


async def post_signed(
    url: str, bodies: list[bytes], secret: str, concurrency: int = 32, retries: int = 20
) -> PostResult:
    """POST every body with a valid X signature; retry 503s as X would."""
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    started = time.perf_counter()

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            headers = {
                "content-type": "application/json",
                SIGNATURE_HEADER: signature(secret, body),
            }
            for attempt in range(retries):
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
                if status != 503:
                    break
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
            statuses[status] = statuses.get(status, 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return PostResult(len(bodies), statuses, time.perf_counter() - started)
