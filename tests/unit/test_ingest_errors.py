"""The ingest's refusals happen before Kafka is involved: 404, 401, 413, 415 with a JSON reason."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from rapport.process import free_port
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry
from streams.ingest import create_ingest_app
from streams.webhooks.x import SIGNATURE_HEADER, signature

SECRET = "s3cr3t-value"
REGISTRY = WorkspaceRegistry.from_mapping(
    {"workspaces": {"acme": {"secrets": {"x_consumer_secret": SECRET}}}}
)
SETTINGS = Settings(
    kafka_bootstrap=f"127.0.0.1:{free_port()}", max_body_bytes=1024, produce_timeout_s=0.5
)
JSON = {"content-type": "application/json"}


def call(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        client = TestClient(TestServer(create_ingest_app(SETTINGS, REGISTRY)))
        await client.start_server()
        try:
            response = await client.request(method, path, data=body, headers=headers or {})
            return response.status, await response.json()
        finally:
            await client.close()

    return asyncio.run(go())


def signed(body: bytes) -> dict[str, str]:
    return {**JSON, SIGNATURE_HEADER: signature(SECRET, body)}


def test_unknown_workspace_and_platform_are_404() -> None:
    assert call("POST", "/webhooks/nobody/x", b"{}", signed(b"{}"))[0] == 404
    status, payload = call("POST", "/webhooks/acme/myspace", b"{}", signed(b"{}"))
    assert status == 404 and "x" in payload["error"]


def test_bad_signature_is_401_and_does_not_leak_the_secret() -> None:
    status, payload = call(
        "POST", "/webhooks/acme/x", b"{}", {**JSON, SIGNATURE_HEADER: "sha256=nope"}
    )
    assert status == 401
    assert SECRET not in str(payload)


def test_oversize_body_is_413() -> None:
    body = b'{"pad": "' + b"x" * 2048 + b'"}'
    status, payload = call("POST", "/webhooks/acme/x", body, signed(body))
    assert status == 413 and "1024" in payload["error"]


def test_wrong_content_type_is_415() -> None:
    status, payload = call("POST", "/webhooks/acme/x", b"a=b", {"content-type": "text/plain"})
    assert status == 415 and "application/json" in payload["error"]


def test_crc_get_and_non_handshake_get() -> None:
    status, payload = call("GET", "/webhooks/acme/x?crc_token=t")
    assert status == 200 and payload["response_token"].startswith("sha256=")
    assert call("GET", "/webhooks/acme/x")[0] == 400


def test_authentic_delivery_without_kafka_is_503_with_retry_after() -> None:
    status, payload = call("POST", "/webhooks/acme/x", b"{}", signed(b"{}"))
    assert status == 503 and "retry" in payload["error"]


def test_health_metrics_and_readiness() -> None:
    assert call("GET", "/healthz") == (200, {"status": "ok"})
    assert call("GET", "/readyz")[0] == 503

    async def metrics() -> str:
        client = TestClient(TestServer(create_ingest_app(SETTINGS, REGISTRY)))
        await client.start_server()
        try:
            await client.post(
                "/webhooks/acme/x", data=b"{}", headers={**JSON, SIGNATURE_HEADER: "x"}
            )
            return await (await client.get("/metrics")).text()
        finally:
            await client.close()

    text = asyncio.run(metrics())
    assert 'rapport_ingest_requests_total{platform="x",status="401"} 1.0' in text
