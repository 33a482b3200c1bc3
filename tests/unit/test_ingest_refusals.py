"""Refusals per platform, counted by class in /metrics, and the served OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from rapport.process import free_port
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry
from streams import webhooks
from streams.ingest import OPENAPI, create_ingest_app
from streams.webhooks import generic, linkedin, mastodon, meta, slack, x

SECRETS = {
    "x_consumer_secret": "x-s3cret",
    "meta_app_secret": "meta-s3cret",
    "meta_verify_token": "meta-t0ken",
    "linkedin_client_secret": "li-s3cret",
    "slack_signing_secret": "slack-s3cret",
    "mastodon_secret": "masto-s3cret",
    "generic_secret": "generic-s3cret",
}
REGISTRY = WorkspaceRegistry.from_mapping({"workspaces": {"acme": {"secrets": SECRETS}}})
SETTINGS = Settings(
    kafka_bootstrap=f"127.0.0.1:{free_port()}", max_body_bytes=1024, produce_timeout_s=0.5
)
JSON = {"content-type": "application/json"}

Call = tuple[str, str, bytes, dict[str, str]]


def run(calls: list[Call]) -> tuple[list[tuple[int, Any, dict[str, str]]], str]:
    async def go() -> tuple[list[tuple[int, Any, dict[str, str]]], str]:
        client = TestClient(TestServer(create_ingest_app(SETTINGS, REGISTRY)))
        await client.start_server()
        try:
            out = []
            for method, path, body, headers in calls:
                response = await client.request(method, path, data=body, headers=headers)
                text = await response.text()
                payload = json.loads(text) if response.content_type.endswith("json") else text
                out.append((response.status, payload, dict(response.headers)))
            metrics = await (await client.get("/metrics")).text()
            return out, metrics
        finally:
            await client.close()

    return asyncio.run(go())


def test_every_refusal_is_a_json_error_and_counted_by_class() -> None:
    now = str(int(time.time()))
    calls: list[Call] = [
        ("POST", "/webhooks/acme/x", b"{}", {**JSON, x.SIGNATURE_HEADER: "sha256=AAAA"}),
        ("POST", "/webhooks/acme/meta", b"{}", JSON),
        ("POST", "/webhooks/acme/linkedin", b"{}", {**JSON, linkedin.SIGNATURE_HEADER: "00"}),
        (
            "POST",
            "/webhooks/acme/slack",
            b"{}",
            {**JSON, slack.SIGNATURE_HEADER: "v0=00", slack.TIMESTAMP_HEADER: "noon"},
        ),
        (
            "POST",
            "/webhooks/acme/slack",
            b"{}",
            {**JSON, slack.SIGNATURE_HEADER: "v0=00", slack.TIMESTAMP_HEADER: "1531420618"},
        ),
        ("POST", "/webhooks/acme/mastodon", b"x=1", {"content-type": "text/plain"}),
        (
            "POST",
            "/webhooks/acme/generic",
            b"{}",
            {**JSON, "webhook-id": "m", "webhook-timestamp": now, "webhook-signature": "v1,AA=="},
        ),
        ("POST", "/webhooks/acme/generic", b'{"p":"' + b"x" * 2000 + b'"}', JSON),
        (
            "GET",
            "/webhooks/acme/meta?hub.mode=subscribe&hub.verify_token=no&hub.challenge=1",
            b"",
            {},
        ),
        ("GET", "/webhooks/acme/mastodon", b"", {}),
        ("POST", "/webhooks/acme/myspace", b"{}", JSON),
        ("POST", "/webhooks/nobody/x", b"{}", JSON),
    ]
    results, metrics = run(calls)
    assert [status for status, _, _ in results] == [
        401, 401, 401, 400, 401, 415, 401, 413, 403, 400, 404, 404,
    ]  # fmt: skip
    for _, payload, _ in results:
        assert isinstance(payload, dict) and set(payload) == {"error"} and payload["error"]
        assert not any(secret in payload["error"] for secret in SECRETS.values())
    assert "window" in results[4][1]["error"]

    def refused(platform: str, reason: str) -> str:
        return f'rapport_ingest_refused_total{{platform="{platform}",reason="{reason}"}}'

    for platform, reason in [
        ("x", "signature"),
        ("meta", "signature"),
        ("linkedin", "signature"),
        ("mastodon", "content_type"),
        ("generic", "signature"),
        ("generic", "too_large"),
        ("meta", "verify_token"),
        ("mastodon", "malformed"),
        ("unknown", "not_found"),
        ("x", "not_found"),
    ]:
        assert f"{refused(platform, reason)} 1.0" in metrics, (platform, reason)
    assert f"{refused('slack', 'timestamp')} 2.0" in metrics
    # Bounded labels: no caller-controlled platform, no workspace, no secrets.
    assert "myspace" not in metrics and "nobody" not in metrics and "acme" not in metrics
    assert not any(secret in metrics for secret in SECRETS.values())
    assert 'rapport_ingest_requests_total{platform="unknown",status="404"} 1.0' in metrics
    for reason in webhooks.REFUSAL_CLASSES:  # every class is exported from the start
        assert refused("x", reason) in metrics


def test_handshakes_of_every_platform_through_the_app() -> None:
    calls: list[Call] = [
        ("GET", "/webhooks/acme/x?crc_token=t", b"", {}),
        (
            "GET",
            "/webhooks/acme/meta?hub.mode=subscribe&hub.verify_token=meta-t0ken&hub.challenge=9",
            b"",
            {},
        ),
        ("GET", "/webhooks/acme/linkedin?challengeCode=abc", b"", {}),
    ]
    body = b'{"type":"url_verification","challenge":"ch4l"}'
    ts = str(int(time.time()))
    calls.append(
        (
            "POST",
            "/webhooks/acme/slack",
            body,
            {
                **JSON,
                slack.TIMESTAMP_HEADER: ts,
                slack.SIGNATURE_HEADER: slack.signature("slack-s3cret", ts, body),
            },
        )
    )
    results, _ = run(calls)
    assert results[0][:2] == (200, {"response_token": x.crc_response("x-s3cret", "t")})
    assert results[1][:2] == (200, "9")
    assert results[1][2]["Content-Type"].startswith("text/plain")
    assert results[2][:2] == (
        200,
        {
            "challengeCode": "abc",
            "challengeResponse": linkedin.challenge_response("li-s3cret", "abc"),
        },
    )
    assert results[3][:2] == (200, {"challenge": "ch4l"})


def test_authentic_deliveries_of_every_platform_reach_the_producer() -> None:
    """Without a broker, an authentic body gets 503 + Retry-After: it passed authentication."""
    ts = str(int(time.time()))
    body = b'{"ok":true}'
    signed = {
        "x": {x.SIGNATURE_HEADER: x.signature("x-s3cret", body)},
        "meta": {meta.SIGNATURE_HEADER: meta.signature("meta-s3cret", body)},
        "linkedin": {linkedin.SIGNATURE_HEADER: linkedin.signature("li-s3cret", body)},
        "slack": {
            slack.TIMESTAMP_HEADER: ts,
            slack.SIGNATURE_HEADER: slack.signature("slack-s3cret", ts, body),
        },
        "mastodon": {mastodon.SIGNATURE_HEADER: mastodon.signature("masto-s3cret", body)},
        "generic": {
            generic.ID_HEADER: "m1",
            generic.TIMESTAMP_HEADER: ts,
            generic.SIGNATURE_HEADER: generic.sign("generic-s3cret", "m1", ts, body),
        },
    }
    assert set(signed) == set(webhooks.PROTOCOLS)
    calls: list[Call] = [
        ("POST", f"/webhooks/acme/{p}", body, {**JSON, **h}) for p, h in signed.items()
    ]
    results, metrics = run(calls)
    for status, payload, headers in results:
        assert status == 503 and "retry" in payload["error"] and headers["Retry-After"] == "5"
    assert "rapport_ingest_refused_total" in metrics
    assert 'reason="signature"} 1.0' not in metrics


def test_openapi_document_is_served_and_routing_errors_are_json() -> None:
    results, _ = run(
        [
            ("GET", "/openapi.json", b"", {}),
            ("DELETE", "/webhooks/acme/x", b"", {}),
            ("GET", "/nowhere", b"", {}),
        ]
    )
    (status, doc, _), (s405, e405, h405), (s404, e404, _) = results
    assert status == 200 and doc == json.loads(OPENAPI.read_text())
    assert doc["openapi"].startswith("3.") and "/webhooks/{workspace}/{platform}" in doc["paths"]
    assert s405 == 405 and set(e405) == {"error"} and "POST" in h405["Allow"]
    assert s404 == 404 and set(e404) == {"error"}
