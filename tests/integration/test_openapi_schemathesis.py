"""Schemathesis against the live ingest (real broker): no 5xx but the documented 503, and every
response conforms to the OpenAPI document the ingest serves at /openapi.json.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rapport.process import free_port
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry
from streams.ingest import OPENAPI, create_ingest_app
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

# "acme" is the workspace the document's examples name, with a secret for every platform, so
# generated requests reach the signature checks instead of stopping at 404.
REGISTRY = WorkspaceRegistry.from_mapping(
    {
        "workspaces": {
            "acme": {
                "secrets": {
                    "x_consumer_secret": "x",
                    "meta_app_secret": "m",
                    "meta_verify_token": "t",
                    "linkedin_client_secret": "l",
                    "slack_signing_secret": "s",
                    "mastodon_secret": "d",
                    "generic_secret": ["whsec_c2VjcmV0", "plain"],
                }
            }
        }
    }
)
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


class LiveIngest:
    """The ingest app served by a thread of its own on a free loopback port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base = f"http://127.0.0.1:{settings.ingest_port}"
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        deadline = time.monotonic() + 60
        while not self._ready():
            assert time.monotonic() < deadline, "the ingest never reached Kafka"
            time.sleep(0.2)

    async def _start(self) -> None:
        self._runner = web.AppRunner(create_ingest_app(self.settings, REGISTRY))
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.settings.ingest_port).start()

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/readyz", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def live_ingest(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tag = uuid.uuid4().hex[:8]
    home: Path = tmp_path_factory.mktemp("schemathesis")
    settings = Settings(
        home=home,
        kafka_bootstrap=kafka_bootstrap,
        partitions=1,
        topic_raw=f"s{tag}.raw",
        topic_events=f"s{tag}.events",
        topic_deadletters=f"s{tag}.deadletters",
        ingest_port=free_port(),
        max_body_bytes=64 * 1024,
    )
    ensure_topics(settings)
    live = LiveIngest(settings)
    live.start()
    try:
        yield live.base
    finally:
        live.stop()


# Loaded from the file the ingest serves (the schemathesis lazy fixture loader does not run on
# this pytest); the served copy is compared with it below.
schema = schemathesis.openapi.from_path(OPENAPI)


def test_the_served_document_is_the_file(live_ingest: str) -> None:
    with urllib.request.urlopen(f"{live_ingest}/openapi.json", timeout=10) as response:
        assert json.loads(response.read()) == json.loads(OPENAPI.read_text())


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_ingest_conforms_to_its_openapi_document(case: Any, live_ingest: str) -> None:
    response = case.call(base_url=live_ingest, timeout=30)
    if response.status_code >= 500:
        assert response.status_code == 503, f"undocumented server error: {response.text[:300]}"
        assert "Retry-After" in response.headers
    case.validate_response(response, checks=CHECKS)
