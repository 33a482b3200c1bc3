"""Signed deliveries of every platform land in `rapport.raw` byte for byte, refusals land nowhere,
and a broker outage loses nothing: 503 while it is down, every retried delivery arrives once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from kafka import KafkaConsumer, TopicPartition

from deploy.kafka.local import LocalKafka
from events.envelope import RawEnvelope
from rapport.process import free_port
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry
from streams.deadletters import read_topic
from streams.ingest import create_ingest_app
from streams.topics import ensure_topics
from streams.webhooks import PROTOCOLS, generic, linkedin, mastodon, meta, slack, x

pytestmark = pytest.mark.integration

SECRETS = {
    "x_consumer_secret": "x-secret",
    "meta_app_secret": "meta-secret",
    "meta_verify_token": "meta-token",
    "linkedin_client_secret": "li-secret",
    "slack_signing_secret": "slack-secret",
    "mastodon_secret": "masto-secret",
    "generic_secret": "whsec_" + "c2VjcmV0LWtleS1ieXRlcw==",
}
OTHER = {key: f"other-{value}" for key, value in SECRETS.items() if key != "generic_secret"}
REGISTRY = WorkspaceRegistry.from_mapping(
    {
        "workspaces": {
            "acme": {"secrets": SECRETS},
            "other": {"secrets": {**OTHER, "generic_secret": "other-generic"}},
        }
    }
)
USER_AGENT = "rapport-test/1"


def signature_headers(platform: str, body: bytes, secrets: dict[str, str]) -> dict[str, str]:
    """The headers `platform` would send with `body`, signed with `secrets`."""
    ts = str(int(time.time()))
    if platform == "x":
        return {x.SIGNATURE_HEADER: x.signature(secrets["x_consumer_secret"], body)}
    if platform == "meta":
        return {meta.SIGNATURE_HEADER: meta.signature(secrets["meta_app_secret"], body)}
    if platform == "linkedin":
        sig = linkedin.signature(secrets["linkedin_client_secret"], body)
        return {"X-LI-Signature": sig}
    if platform == "slack":
        return {
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": slack.signature(secrets["slack_signing_secret"], ts, body),
            "X-Slack-Retry-Num": "1",
            "X-Slack-Retry-Reason": "http_timeout",
        }
    if platform == "mastodon":
        return {"X-Hub-Signature": mastodon.signature(secrets["mastodon_secret"], body)}
    if platform == "generic":
        msg_id = f"msg_{abs(hash(body))}"
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": ts,
            "webhook-signature": generic.sign(secrets["generic_secret"], msg_id, ts, body),
        }
    raise AssertionError(platform)


def request_headers(platform: str, body: bytes, secrets: dict[str, str]) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Authorization": "Bearer not-kept",
        "Cookie": "session=not-kept",
        **signature_headers(platform, body, secrets),
    }


def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        parts = [TopicPartition(settings.topic_raw, p) for p in range(settings.partitions)]
        return {tp.partition: n for tp, n in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """The ingest app on a free loopback port, once its producer is connected."""
    server = TestServer(create_ingest_app(settings, REGISTRY), host="127.0.0.1", port=free_port())
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            while True:
                async with session.get(f"{base}/readyz") as response:
                    if response.status == 200:
                        break
                assert time.monotonic() < deadline, "ingest never became ready"
                await asyncio.sleep(0.2)
        yield base
    finally:
        await server.close()


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


def test_every_platform_lands_verbatim_and_refusals_land_nowhere(
    isolated_settings: Settings,
) -> None:
    settings = isolated_settings
    ensure_topics(settings)
    bodies = {p: f'{{"platform":"{p}","n":1,"text":"h\\u00e9 \u00e9"}}'.encode() for p in PROTOCOLS}

    async def scenario() -> tuple[dict[str, int], dict[int, int], dict[int, int], list[int]]:
        async with serving(settings) as base, aiohttp.ClientSession() as session:
            statuses = {}
            for platform, body in bodies.items():
                url = f"{base}/webhooks/acme/{platform}"
                status, _, _ = await post(
                    session, url, body, request_headers(platform, body, SECRETS)
                )
                statuses[platform] = status
            before = await asyncio.to_thread(end_offsets, settings)
            refused = []
            for platform, body in bodies.items():
                # another workspace's secrets, at our URL; then our secrets with a changed body
                wrong = request_headers(platform, body, {**OTHER, "generic_secret": "o"})
                refused.append(
                    (await post(session, f"{base}/webhooks/acme/{platform}", body, wrong))[0]
                )
                tampered = request_headers(platform, body, SECRETS)
                refused.append(
                    (
                        await post(
                            session, f"{base}/webhooks/acme/{platform}", body + b" ", tampered
                        )
                    )[0]
                )
                # our secrets at the other workspace's URL
                refused.append(
                    (
                        await post(
                            session,
                            f"{base}/webhooks/other/{platform}",
                            body,
                            request_headers(platform, body, SECRETS),
                        )
                    )[0]
                )
            # Slack's URL verification is answered, not kept.
            hello = b'{"type":"url_verification","challenge":"c-1","token":"t"}'
            status, _, answer = await post(
                session,
                f"{base}/webhooks/acme/slack",
                hello,
                request_headers("slack", hello, SECRETS),
            )
            assert (status, answer) == (200, b'{"challenge": "c-1"}')
            after = await asyncio.to_thread(end_offsets, settings)
            return statuses, before, after, refused

    statuses, before, after, refused = asyncio.run(scenario())
    assert statuses == dict.fromkeys(PROTOCOLS, 200)
    assert refused == [401] * len(refused) and len(refused) == 3 * len(PROTOCOLS)
    assert after == before and sum(after.values()) == len(PROTOCOLS)

    records = read_topic(settings.kafka_bootstrap, settings.topic_raw)
    envelopes = {e.source: e for e in (RawEnvelope.loads(r.value) for r in records)}
    assert set(envelopes) == set(PROTOCOLS)
    for platform, envelope in envelopes.items():
        assert envelope.workspace == "acme"
        assert envelope.body == bodies[platform]  # the exact bytes that were signed
        assert abs(time.time() - envelope.received_at.timestamp()) < 120
        sent = request_headers(platform, bodies[platform], SECRETS)
        kept = {k.lower(): v for k, v in sent.items() if k not in ("Authorization", "Cookie")}
        # signatures and delivery headers are kept, except the timestamps that differ per call
        for name in ("x-slack-request-timestamp", "x-slack-signature", "webhook-timestamp"):
            kept.pop(name, None)
        if platform == "generic":
            kept.pop("webhook-signature")
        assert {k: envelope.headers[k] for k in kept} == kept, platform
        assert "authorization" not in envelope.headers and "cookie" not in envelope.headers
        if platform == "slack":
            ts = envelope.headers["x-slack-request-timestamp"]
            assert envelope.headers["x-slack-signature"] == slack.signature(
                SECRETS["slack_signing_secret"], ts, bodies[platform]
            )  # re-verifiable later from what was kept


def test_broker_outage_answers_503_and_retries_arrive_exactly_once(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "home",
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        kafka_heap="512m",
        partitions=2,
        produce_timeout_s=2.0,
    )
    kafka = LocalKafka(settings)
    kafka.up()
    try:
        ensure_topics(settings)
        accepted, outage_statuses, retry_after = asyncio.run(outage_scenario(settings, kafka))
        records = read_topic(settings.kafka_bootstrap, settings.topic_raw)
    finally:
        kafka.down()
    landed = Counter(RawEnvelope.loads(r.value).body for r in records)
    assert outage_statuses and set(outage_statuses) == {503}
    assert retry_after == {"5"}
    assert landed == accepted  # every accepted delivery exactly once per 200, nothing else


async def outage_scenario(
    settings: Settings, kafka: LocalKafka
) -> tuple[Counter[bytes], list[int], set[str]]:
    platforms = sorted(PROTOCOLS)
    accepted: Counter[bytes] = Counter()
    outage_statuses: list[int] = []
    retry_after: set[str] = set()

    def body(phase: str, i: int) -> bytes:
        return f'{{"phase":"{phase}","n":{i}}}'.encode()

    async with serving(settings) as base, aiohttp.ClientSession() as session:

        async def deliver(platform: str, payload: bytes) -> int:
            url = f"{base}/webhooks/acme/{platform}"
            status, headers, _ = await post(
                session, url, payload, request_headers(platform, payload, SECRETS)
            )
            if status == 200:
                accepted[payload] += 1
            elif status == 503:
                retry_after.add(headers.get("Retry-After", ""))
            return status

        before = [(platforms[i % 6], body("before", i)) for i in range(30)]
        assert await asyncio.gather(*(deliver(p, b) for p, b in before)) == [200] * 30

        await asyncio.to_thread(kafka.down)
        during = [(platforms[i % 6], body("during", i)) for i in range(30)]
        statuses = await asyncio.gather(*(deliver(p, b) for p, b in during))
        outage_statuses.extend(statuses)
        # a second wave while it is still down is refused at once (the producer is reconnecting)
        started = time.monotonic()
        outage_statuses.extend(await asyncio.gather(*(deliver(p, b) for p, b in during[:6])))
        assert time.monotonic() - started < settings.produce_timeout_s

        await asyncio.to_thread(kafka.up)  # same data directory, same ports
        pending = list(during)
        deadline = time.monotonic() + 90
        while pending:
            assert time.monotonic() < deadline, f"{len(pending)} deliveries never accepted"
            statuses = await asyncio.gather(*(deliver(p, b) for p, b in pending))
            assert set(statuses) <= {200, 503}
            pending = [d for d, s in zip(pending, statuses, strict=True) if s != 200]
            if pending:
                await asyncio.sleep(0.5)
    return accepted, outage_statuses, retry_after
