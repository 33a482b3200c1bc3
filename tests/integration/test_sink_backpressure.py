"""ClickHouse refuses inserts -> the worker stops committing -> ClickHouse is back -> it catches
up with nothing lost and nothing twice.

The worker owns the embedded engine, so the failure is injected through it: with
`RAPPORT_WORKER_ADMIN_SQL=true` (off by default) it runs `POST /admin/sql` statements on its
ClickHouse thread. `ALTER TABLE rapport.interactions ADD CONSTRAINT block CHECK 0` makes every
insert into `interactions` fail for real (VIOLATED_CONSTRAINT) until the constraint is dropped.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from projections.store import WorkerQueryClient
from rapport.settings import Settings
from streams.eventlog import append_events
from tests.datasets import collegemsg_interactions
from tests.services import services_running

pytestmark = pytest.mark.integration

OWNED = {"323", "9", "12"}
WORKSPACES = """
[workspaces.college]
accounts = [{ platform = "x", user_id = "323", member = "brand" }]
[workspaces.college.secrets]
x_consumer_secret = "s"
"""
EVENTS = 3000


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def eventually(probe: Callable[[], Any], want: Callable[[Any], bool], timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    value = probe()
    while not want(value) and time.monotonic() < deadline:
        time.sleep(0.5)
        value = probe()
    return value


def committed(settings: Settings) -> int:
    """Sum of the worker group's committed offsets on the event log (0 if none yet)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        if hasattr(admin, "list_consumer_group_offsets"):  # kafka-python 2.x
            offsets = admin.list_consumer_group_offsets(settings.worker_id)
        else:  # kafka-python 3.x
            offsets = admin.list_group_offsets(settings.worker_id).get(settings.worker_id, {})
    finally:
        admin.close()
    return sum(
        max(meta.offset, 0) for tp, meta in offsets.items() if tp.topic == settings.topic_events
    )


def end_offsets(settings: Settings) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        parts = [TopicPartition(settings.topic_events, p) for p in range(settings.partitions)]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


@pytest.fixture
def worker(isolated_settings: Settings) -> Iterator[Settings]:
    settings = isolated_settings.model_copy(
        update={"worker_admin_sql": True, "sink_retry_max_s": 1.0}
    )
    with services_running(settings, WORKSPACES) as running:
        yield running


def test_clickhouse_down_stops_commits_and_the_worker_catches_up(worker: Settings) -> None:
    settings = worker
    admin_sql = f"{settings.worker_url}/admin/sql"
    reader = WorkerQueryClient(settings.worker_url)
    assert get_json(f"{settings.worker_url}/admin/sink")["failures"] == 0

    post_json(admin_sql, {"sql": "ALTER TABLE rapport.interactions ADD CONSTRAINT block CHECK 0"})
    events = collegemsg_interactions(OWNED, limit=EVENTS)
    assert append_events(settings, events) == EVENTS
    end = end_offsets(settings)
    assert end == EVENTS

    # The sink fails for real and retries with backoff ...
    status = eventually(
        lambda: get_json(f"{settings.worker_url}/admin/sink"), lambda s: s["failures"] >= 3
    )
    assert status["failures"] >= 3
    assert "VIOLATED_CONSTRAINT" in status["failing"]["interactions"]
    # ... and holds the whole batch: its relationships wait with its interactions, and nothing
    # of the event log is committed (Faust commits every 2.8 s: wait past two).
    time.sleep(6.5)
    assert committed(settings) == 0
    assert reader.query("SELECT count() FROM rapport.interactions").rows[0][0] == 0
    assert reader.query("SELECT count() FROM rapport.relationships").rows[0][0] == 0

    post_json(admin_sql, {"sql": "ALTER TABLE rapport.interactions DROP CONSTRAINT block"})
    count_sql = "SELECT count(), uniqExact(event_id) FROM rapport.interactions"
    landed = eventually(lambda: reader.query(count_sql).rows[0], lambda r: r[1] == EVENTS)
    assert tuple(landed) == (EVENTS, EVENTS)  # nothing lost, nothing twice
    assert eventually(lambda: committed(settings), lambda c: c == end) == end
    assert get_json(f"{settings.worker_url}/admin/sink")["failing"] == {}
    with_contact = sum(1 for e in events if e.contact is not None and e.direction.counts)
    total_sql = "SELECT toInt64(sum(interactions)) FROM rapport.relationships FINAL"
    assert int(reader.query(total_sql).rows[0][0] or 0) == with_contact
    daily = reader.query("SELECT uniqExactMerge(interactions) FROM rapport.workspace_daily")
    assert daily.rows[0][0] == EVENTS
