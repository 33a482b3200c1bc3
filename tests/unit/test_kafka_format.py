"""KRaft storage is formatted whatever the random cluster id looks like.

A url-safe base64 cluster id starts with "-" once in 64 (the first byte is 0xF8-0xFB); Kafka's
storage tool must not read it as an option. Runs the real tool from the cached jars.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from deploy.kafka.local import LocalKafka
from rapport.process import free_port
from rapport.settings import Settings


def test_a_cluster_id_starting_with_a_dash_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dashing = uuid.UUID(bytes=bytes([0xF8]) + uuid.uuid4().bytes[1:])
    monkeypatch.setattr(uuid, "uuid4", lambda: dashing)
    settings = Settings(
        home=tmp_path, kafka_bootstrap=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port()
    )
    kafka = LocalKafka(settings)
    kafka._write_config()
    kafka._format_storage()
    meta = (kafka.data_dir / "meta.properties").read_text()
    assert "cluster.id=-" in meta
