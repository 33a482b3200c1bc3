"""A webhook sender that behaves like a platform: retries until the ingest says 2xx.

It runs in a thread with its own event loop, so a scenario can kill processes while it sends.
A 503 (the event log is unavailable), another 5xx, a 429 or a connection failure is retried
with exponential backoff and a fresh signature (the same webhook-id), for up to `give_up_s` per
delivery; any other answer is final and recorded. Optional pacing (`rate` events/s) stretches
the stream so that failures land in the middle of it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from chaos.generator import WORKSPACE, Delivery

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass
class SendStats:
    """What the sender saw; read from the scenario's thread while it runs (ints only)."""

    deliveries: int = 0  # answered 2xx
    events: int = 0  # events in deliveries answered 2xx
    attempts: int = 0
    statuses: Counter[int] = field(default_factory=Counter)  # every answer, retries included
    errors: Counter[str] = field(default_factory=Counter)  # connection failures by type
    refused: list[tuple[str, int, str]] = field(default_factory=list)  # final non-2xx
    gave_up: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def retries(self) -> int:
        return self.attempts - self.deliveries - len(self.refused) - len(self.gave_up)


class Sender:
    """POST `deliveries` to the ingest at `ingest_url`, in order, `concurrency` at a time."""

    def __init__(
        self,
        ingest_url: str,
        deliveries: Sequence[Delivery],
        *,
        concurrency: int = 16,
        rate: float | None = None,
        give_up_s: float = 300.0,
    ) -> None:
        self.base = ingest_url.rstrip("/")
        self.deliveries = list(deliveries)
        self.concurrency = concurrency
        self.rate = rate
        self.give_up_s = give_up_s
        self.stats = SendStats()
        self.total_events = sum(d.events for d in self.deliveries)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()

    # --- control from the scenario ----------------------------------------------------------

    def start(self) -> Sender:
        self._thread = threading.Thread(target=self._run, name="chaos-sender", daemon=True)
        self._thread.start()
        return self

    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def fraction(self) -> float:
        """Share of the planned deliveries answered so far (0..1)."""
        return self.stats.deliveries / max(len(self.deliveries), 1)

    def wait_fraction(self, fraction: float, timeout_s: float = 600.0) -> None:
        """Block until `fraction` of the deliveries were answered 2xx (or the sender ended)."""
        deadline = time.monotonic() + timeout_s
        while self.fraction() < fraction and not self.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"sender did not reach {fraction:.0%} in {timeout_s:.0f} s")
            time.sleep(0.1)

    def join(self, timeout_s: float = 900.0) -> SendStats:
        """Wait for the end; re-raises what broke the sender itself."""
        if self._thread is None:
            raise RuntimeError("sender not started")
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(30)
            raise TimeoutError(f"sender still running after {timeout_s:.0f} s")
        if self._error is not None:
            raise RuntimeError(f"sender failed: {self._error!r}") from self._error
        return self.stats

    def stop(self) -> None:
        """Ask the sender to stop early (on a scenario failure)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    # --- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._send_all())
        except BaseException as exc:  # reported by join()
            self._error = exc

    async def _send_all(self) -> None:
        started = time.monotonic()
        queue: asyncio.Queue[Delivery] = asyncio.Queue()
        for delivery in self.deliveries:
            queue.put_nowait(delivery)
        paced = 0  # events released so far (poison bodies count as one)
        lock = asyncio.Lock()

        async def pace(weight: int) -> None:
            nonlocal paced
            if not self.rate:
                return
            async with lock:
                paced += weight
                due = started + paced / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

        async def worker(session: aiohttp.ClientSession) -> None:
            while not self._stop.is_set():
                try:
                    delivery = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await pace(max(delivery.events, 1))
                await self._deliver(session, delivery)

        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(worker(session) for _ in range(self.concurrency)))
        self.stats.seconds = time.monotonic() - started

    async def _deliver(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        url = f"{self.base}/webhooks/{WORKSPACE}/{delivery.platform}"
        first = time.monotonic()
        backoff = 0.2
        while not self._stop.is_set():
            self.stats.attempts += 1
            try:
                async with session.post(
                    url, data=delivery.body, headers=delivery.headers()
                ) as response:
                    text = await response.text()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.stats.errors[type(exc).__name__] += 1
                status, text = 0, str(exc)
            if status:
                self.stats.statuses[status] += 1
            if 200 <= status < 300:
                self.stats.deliveries += 1
                self.stats.events += delivery.events
                return
            if status and status not in RETRY_STATUSES:
                self.stats.refused.append((delivery.msg_id, status, text[:200]))
                return
            if time.monotonic() - first > self.give_up_s:
                self.stats.gave_up.append(delivery.msg_id)
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
