"""A worker stopped (SIGTERM) right after a burst of events ends promptly and loses nothing.

Faust waits, unbounded, for every message it handed to agents before it commits at a stop; a
message it dropped from an agent's queue could keep that wait going until the worker was killed
(streams/offsets.py). Each round appends a burst, stops the worker at a different moment of its
processing, and starts it again; at the end every event is in ClickHouse exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator

import pytest

from projections.store import WorkerQueryClient
from rapport.process import pid_alive, read_pid
from rapport.settings import Settings
from rapport.stack import Stack
from streams.eventlog import append_events
from tests.datasets import collegemsg_interactions
from tests.services import services_running

pytestmark = pytest.mark.integration

WORKSPACES = """
[workspaces.college]
accounts = [{ platform = "x", user_id = "323", member = "brand" }]
[workspaces.college.secrets]
x_consumer_secret = "s"
"""
ROUNDS, BURST = 4, 1500
DRAIN_S = 5.0


@pytest.fixture
def stack(isolated_settings: Settings) -> Iterator[Settings]:
    settings = isolated_settings.model_copy(update={"worker_drain_timeout_s": DRAIN_S})
    with services_running(settings, WORKSPACES) as running:
        yield running


def test_sigterm_after_a_burst_stops_promptly_and_loses_nothing(stack: Settings) -> None:
    settings = stack
    services = Stack(settings)
    events = collegemsg_interactions({"323"}, limit=ROUNDS * BURST)
    pause = random.Random(7)
    stops = []
    for n in range(ROUNDS):
        append_events(settings, events[n * BURST : (n + 1) * BURST])
        time.sleep(pause.uniform(0.0, 1.5))  # somewhere in the middle of folding and sinking
        pid = read_pid(settings.run_dir / "worker.pid")
        assert pid is not None
        began = time.monotonic()
        os.killpg(pid, signal.SIGTERM)
        while pid_alive(pid) and time.monotonic() - began < 45:
            time.sleep(0.05)
        stops.append(time.monotonic() - began)
        assert not pid_alive(pid), f"worker still running {stops[-1]:.0f} s after SIGTERM"
        services.start_services()
    # Bounded by the drain timeout plus the ordinary stop work, never the 60 s kill.
    assert max(stops) < DRAIN_S + 20, stops

    reader = WorkerQueryClient(settings.worker_url)
    want = len({e.event_id for e in events})
    deadline = time.monotonic() + 90
    while True:
        distinct, rows = reader.query(
            "SELECT uniqExact(event_id), count() FROM rapport.interactions FINAL"
        ).rows[0]
        if distinct == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (distinct, rows) == (want, want)
    counted = sum(1 for e in events if e.contact is not None and e.direction.counts)
    while True:
        total = reader.query(
            "SELECT sum(interactions) FROM rapport.relationships FINAL WHERE workspace = 'college'"
        ).rows[0][0]
        if total == counted or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert total == counted
