"""The local broker and topic administration against the real Apache Kafka process."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.kafka.local import KafkaRuntimeError, LocalKafka, kafka_version
from rapport.process import free_port, pid_alive
from rapport.settings import Settings
from streams.topics import TopicMismatch, ensure_topics, topic_specs

pytestmark = pytest.mark.integration


def test_up_status_down_by_pid(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, kafka_bootstrap=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port()
    )
    kafka = LocalKafka(settings)
    assert kafka.version == kafka_version() == "3.9.1"
    status = kafka.up()
    try:
        assert status.running and status.answering and status.pid is not None
        assert pid_alive(status.pid)
        assert kafka.up().pid == status.pid  # idempotent: no second broker
        config = kafka.config_file.read_text()
        assert "auto.create.topics.enable=false" in config
        assert "process.roles=broker,controller" in config
    finally:
        assert kafka.down() == status.pid
    assert not pid_alive(status.pid)
    assert not kafka.status().running
    assert kafka.down() is None


def test_port_taken_by_a_stranger_is_refused(tmp_path: Path, kafka_bootstrap: str) -> None:
    settings = Settings(
        home=tmp_path, kafka_bootstrap=kafka_bootstrap, kafka_controller_port=free_port()
    )
    with pytest.raises(KafkaRuntimeError, match="taken"):
        LocalKafka(settings).up()


def test_topics_are_created_once_with_equal_partitions(isolated_settings: Settings) -> None:
    created = ensure_topics(isolated_settings)
    assert sorted(created) == sorted(s.name for s in topic_specs(isolated_settings))
    assert ensure_topics(isolated_settings) == []
    wrong = isolated_settings.model_copy(update={"partitions": isolated_settings.partitions + 2})
    with pytest.raises(TopicMismatch, match="partitions"):
        ensure_topics(wrong)
