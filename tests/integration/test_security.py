"""Security against a real broker: refusals and attacks leave `rapport.raw` untouched, fuzzed
requests get no 5xx while Kafka is up, and each tenant's deliveries land under that tenant only.
tests/unit/test_security.py holds the broker-less proofs (streaming limits, compare_digest,
secrets in logs, fuzzing with Kafka down).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, note
from hypothesis import settings as hsettings
from kafka import KafkaConsumer, TopicPartition

from events.delivery import process_delivery
from events.envelope import RawEnvelope
from events.models import RawPointer
from rapport.process import free_port
from rapport.settings import Settings
from streams.deadletters import read_topic
from streams.ingest import create_ingest_app
from streams.keys import event_key, split_key
from streams.topics import ensure_topics
from streams.webhooks import PROTOCOLS, linkedin, x
from tests.security_support import (
    ALPHA_SECRETS,
    BETA_SECRETS,
    TENANTS,
    chunked,
    exchange,
    registry,
    signature_headers,
    status_of,
)
from tests.unit.test_security import (
    fuzzed_requests,
    is_url_verification,
    json_body,
    with_fuzz_examples,
    with_gamma,
)

pytestmark = pytest.mark.integration

LIMIT = 1024  # what tests.unit.test_security's fuzzed requests are sized for
PLATFORMS = sorted(PROTOCOLS)
JSON = {"Content-Type": "application/json"}
REGISTRY = with_gamma(registry())  # as the unit tests serve it: the fuzz's examples use gamma


def end_offsets(settings: Settings) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        parts = [TopicPartition(settings.topic_raw, p) for p in range(settings.partitions)]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[str, int]]:
    server = TestServer(create_ingest_app(settings, REGISTRY), host="127.0.0.1", port=free_port())
    await server.start_server(access_log=None)
    base = str(server.make_url("")).rstrip("/")
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            while (await session.get(f"{base}/readyz")).status != 200:
                assert time.monotonic() < deadline, "ingest never became ready"
                await asyncio.sleep(0.2)
        assert server.port is not None
        yield base, server.port
    finally:
        await server.close()


def head(path: str, headers: dict[str, str], framing: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [framing, *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def attacks(base: str, port: int) -> list[tuple[str, int | None]]:
    """Every refusal there is, for every platform; (what, status)."""
    out: list[tuple[str, int | None]] = []
    big = json_body(8 * LIMIT)
    async with aiohttp.ClientSession() as session:
        for p in PLATFORMS:
            path = f"/webhooks/alpha/{p}"
            signed = signature_headers(p, big, ALPHA_SECRETS)
            declared = await exchange(port, head(path, signed, f"Content-Length: {len(big)}"))
            out.append((f"{p} declared oversize", status_of(declared)))
            streamed = await exchange(
                port, head(path, signed, "Transfer-Encoding: chunked"), chunked(big, 256)[:6]
            )
            out.append((f"{p} chunked oversize", status_of(streamed)))
            lying = await exchange(
                port, head(path, signed, "Content-Length: 10"), [big], to_close=True
            )
            out.append((f"{p} short length", status_of(lying)))
            small = b'{"tenant": "alpha"}'
            for url_ws, secrets in (("beta", ALPHA_SECRETS), ("alpha", BETA_SECRETS)):
                async with session.post(
                    f"{base}/webhooks/{url_ws}/{p}",
                    data=small,
                    headers={**JSON, **signature_headers(p, small, secrets)},
                ) as response:
                    out.append((f"{p} cross-tenant at {url_ws}", response.status))
        for platform, param, header in (
            ("x", "crc_token", x.SIGNATURE_HEADER),
            ("linkedin", "challengeCode", linkedin.SIGNATURE_HEADER),
        ):
            body = '{"for_user_id": "1", "follow_events": []}'
            url = f"{base}/webhooks/alpha/{platform}"
            async with session.get(f"{url}?{param}={quote(body, safe='')}") as response:
                answer = await response.json()
                out.append((f"{platform} handshake of a body", response.status))
            forged = str(answer.get("response_token") or answer.get("challengeResponse"))
            async with session.post(
                url, data=body.encode(), headers={**JSON, header: forged}
            ) as response:
                out.append((f"{platform} forged from its handshake", response.status))
    return out


def test_attacks_and_fuzz_leave_the_log_alone_and_tenants_apart(
    isolated_settings: Settings,
) -> None:
    settings = isolated_settings.model_copy(update={"max_body_bytes": LIMIT})
    ensure_topics(settings)
    accepted: list[tuple[str, str, bytes]] = []  # (workspace, platform, body) answered 200

    async def scenario(loop_box: dict[str, Any]) -> list[tuple[str, int | None]]:
        async with serving(settings) as (base, port):
            loop_box["base"] = base
            refused = await attacks(base, port)
            loop_box["before"] = await asyncio.to_thread(end_offsets, settings)
            loop_box["done"] = asyncio.Event()
            loop_box["ready"].set()
            await loop_box["done"].wait()  # the fuzz runs from another thread meanwhile
            return refused

    # The ingest runs on a loop in this thread; hypothesis drives it from a worker thread.
    box: dict[str, Any] = {}

    async def main() -> tuple[list[tuple[str, int | None]], int]:
        box["ready"] = asyncio.Event()
        served = asyncio.create_task(scenario(box))
        await box["ready"].wait()
        before = box["before"]
        await asyncio.to_thread(fuzz, box["base"], accepted)
        box["done"].set()
        return await served, before

    refused, before = asyncio.run(main())

    expected: dict[str, int | None] = {}
    for p in PLATFORMS:
        expected[f"{p} declared oversize"] = 413
        expected[f"{p} chunked oversize"] = 413
        expected[f"{p} short length"] = 400
        expected[f"{p} cross-tenant at beta"] = 401
        expected[f"{p} cross-tenant at alpha"] = 401
    expected.update(
        {
            "x handshake of a body": 400,
            "x forged from its handshake": 401,
            "linkedin handshake of a body": 400,
            "linkedin forged from its handshake": 401,
        }
    )
    assert dict(refused) == expected
    assert before == 0  # the attacks produced nothing

    # The fuzz's records: exactly the ones it was told were accepted, each under its tenant.
    records = read_topic(settings.kafka_bootstrap, settings.topic_raw)
    envelopes = [RawEnvelope.loads(r.value) for r in records]
    assert sorted((e.workspace, e.source, e.body) for e in envelopes) == sorted(accepted)
    assert accepted, "the fuzz delivered nothing authentic"
    assert {ws for ws, _, _ in accepted} == set(TENANTS)

    # Each tenant's records normalize into that tenant's events and keys only.
    for record, envelope in zip(records, envelopes, strict=True):
        outcome = process_delivery(
            REGISTRY,
            record.value,
            RawPointer(topic=settings.topic_raw, partition=record.partition, offset=record.offset),
            datetime.now(UTC),
        )
        for event in outcome.events:
            assert event.workspace == envelope.workspace
            assert split_key(event_key(event))[0] == envelope.workspace
        if outcome.dead_letter is not None:
            assert outcome.dead_letter.workspace == envelope.workspace


def fuzz(base: str, accepted: list[tuple[str, str, bytes]]) -> None:
    """Fuzzed requests against the live ingest with Kafka up: no 5xx at all."""

    async def call(req: dict[str, Any]) -> tuple[int, bytes]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                req["method"],
                base + req["path"],
                params=req["query"],
                data=req["body"],
                headers=req["headers"],
                allow_redirects=False,
            ) as response,
        ):
            return response.status, await response.read()

    # Every class of request (both tenants' authentic deliveries included) comes from
    # `fuzz_examples` with the status it must get; the generated ones are the same on every run.
    @with_fuzz_examples
    @hsettings(
        max_examples=120,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(fuzzed_requests())
    def check(req: dict[str, Any]) -> None:
        note(repr(req))
        status, answer = asyncio.run(call(req))
        if "expect" in req:
            assert status == req["expect"][0], answer[:300]
        assert status < 500, (status, answer[:300])
        if 200 <= status < 300 and req["method"] == "POST" and req["path"].startswith("/web"):
            assert req["authentic"], "an unauthenticated delivery was accepted"
            ws, platform = req["path"].split("/")[2:4]
            if not (platform == "slack" and is_url_verification(req["body"])):
                assert json.loads(answer) == {"status": "accepted"}
                accepted.append((ws, platform, req["body"]))

    check()
