"""Shared fixtures: a real Apache Kafka broker (KRaft) for the session, isolated settings per test.

`make test` starts the broker once and passes its address in RAPPORT_TEST_KAFKA_BOOTSTRAP; a bare
`pytest` run starts its own on free loopback ports and stops it by pid at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.kafka.local import LocalKafka
from rapport.process import free_port
from rapport.settings import Settings

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a running broker: the one `make test` started, or our own."""
    given = os.environ.get("RAPPORT_TEST_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    home = tmp_path_factory.mktemp("kafka-home")
    settings = Settings(
        home=home,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
    )
    kafka = LocalKafka(settings)
    kafka.up()
    try:
        yield settings.kafka_bootstrap
    finally:
        kafka.down()


@pytest.fixture
def isolated_settings(tmp_path: Path, kafka_bootstrap: str) -> Settings:
    """Settings with this test's own topics, consumer group, ports and embedded ClickHouse."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        home=tmp_path / "home",
        workspaces=tmp_path / "workspaces.toml",
        kafka_bootstrap=kafka_bootstrap,
        partitions=4,
        topic_raw=f"t{tag}.raw",
        topic_events=f"t{tag}.events",
        topic_relationship_events=f"t{tag}.relationship-events",
        topic_deadletters=f"t{tag}.deadletters",
        worker_id=f"rapport-test-{tag}",
        clickhouse_url=f"chdb://{tmp_path / 'clickhouse'}",
        ingest_port=free_port(),
        worker_port=free_port(),
        sink_flush_s=0.3,
    )
