"""What benchmarks share: a private broker on free loopback ports, stopped by pid at the end."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from deploy.kafka.local import LocalKafka
from rapport.process import free_port
from rapport.settings import Settings


@contextlib.contextmanager
def private_broker(partitions: int = 8) -> Iterator[tuple[Settings, Path]]:
    """A fresh broker and settings pointing at it; everything lives in a temp dir."""
    with tempfile.TemporaryDirectory(prefix="rapport-bench-") as tmp:
        root = Path(tmp)
        settings = Settings(
            home=root / "home",
            workspaces=root / "workspaces.toml",
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            kafka_controller_port=free_port(),
            partitions=partitions,
            ingest_port=free_port(),
            worker_port=free_port(),
            clickhouse_url=f"chdb://{root / 'clickhouse'}",
        )
        kafka = LocalKafka(settings)
        kafka.up()
        try:
            yield settings, root
        finally:
            kafka.down()


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds > 0 else "inf"
