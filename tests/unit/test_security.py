"""Security of the ingest, for every platform endpoint, without a broker (issue 8, item 4).

Body limits are enforced while streaming; every signature and token check is decided by
`hmac.compare_digest`; no secret reaches a log record, a response or an error message; one
tenant's signature never opens another tenant's URL and what is produced carries the URL's
tenant; and fuzzed requests never get a 5xx other than the documented 503, which only an
authentic delivery with Kafka down gets. The producer is replaced by a recorder (what would be
produced) except where Kafka must really be unreachable; tests/integration/test_security.py
repeats the end-to-end parts against a real broker.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import hmac
import json
import logging
import re
import time
import tracemalloc
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, note
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from events.delivery import process_delivery
from events.envelope import RawEnvelope
from events.models import RawPointer
from projections.relationship import relationship_key
from rapport.process import free_port
from rapport.settings import Settings, get_settings
from rapport.workspaces import WORKSPACE_NAME_PATTERN, WorkspaceConfig, WorkspaceRegistry
from streams import ingest
from streams.ingest import PRODUCER, create_ingest_app
from streams.keys import event_key, identity_key, split_key
from streams.webhooks import PROTOCOLS, generic, linkedin, mastodon, meta, slack, x
from tests.conftest import FIXTURES, REPO
from tests.security_support import (
    ALPHA_SECRETS,
    BETA_SECRETS,
    OWNED_X,
    TENANTS,
    all_secret_forms,
    chunked,
    exchange,
    registry,
    signature_headers,
    status_of,
    statuses_of,
)

LIMIT = 1024
SETTINGS = Settings(
    kafka_bootstrap=f"127.0.0.1:{free_port()}", max_body_bytes=LIMIT, produce_timeout_s=0.5
)
PLATFORMS = sorted(PROTOCOLS)
JSON = {"Content-Type": "application/json"}
X_DM = (FIXTURES / "webhooks" / "x_account_activity" / "direct_message_events.json").read_bytes()


def with_gamma(reg: WorkspaceRegistry) -> WorkspaceRegistry:
    """The two tenants plus `gamma`, a workspace without any secret."""
    return WorkspaceRegistry.of([*reg.workspaces.values(), WorkspaceConfig(name="gamma")])


REGISTRY = with_gamma(registry())


class RecordingProducer:
    """Stands in for `streams.ingest_producer.Producer`: records what would be produced."""

    def __init__(self, settings: Settings) -> None:
        self.sent: list[bytes] = []
        self.up = True

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def ready(self) -> bool:
        return self.up

    async def send(self, value: bytes) -> None:
        if not self.up:
            raise ConnectionError("broker down (test)")
        self.sent.append(value)

    def envelopes(self) -> list[RawEnvelope]:
        return [RawEnvelope.loads(value) for value in self.sent]


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "Producer", RecordingProducer)


@asynccontextmanager
async def serving(
    settings: Settings = SETTINGS, reg: WorkspaceRegistry = REGISTRY
) -> AsyncIterator[tuple[TestClient, Any]]:
    app = create_ingest_app(settings, reg)
    # Served as `run_ingest` serves it: without aiohttp's access log, which would print query
    # strings, and Meta sends `hub.verify_token` in one (see the test of run_ingest below).
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(access_log=None)
    client = TestClient(server)
    await client.start_server()
    try:
        yield client, app[PRODUCER]
    finally:
        await client.close()


def json_body(size: int) -> bytes:
    """A JSON object of exactly `size` bytes."""
    frame = b'{"pad":""}'
    assert size >= len(frame)
    return b'{"pad":"' + b"a" * (size - len(frame)) + b'"}'


def request_head(
    path: str, headers: dict[str, str], framing: str, *, content_type: str = "application/json"
) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}", framing]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- body limits -------------------------------------------------------------------------------


@pytest.mark.usefixtures("recording")
@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_declared_oversize_body_is_refused_before_it_is_sent(platform: str) -> None:
    body = json_body(LIMIT + 1)
    signed = signature_headers(platform, body, ALPHA_SECRETS)
    path = f"/webhooks/alpha/{platform}"

    async def scenario() -> tuple[bytes, bytes, bytes, list[bytes]]:
        async with serving() as (client, producer):
            port = client.server.port
            assert port is not None
            # Only the head is sent: the answer can only come from the declared length.
            refused = await exchange(
                port, request_head(path, signed, f"Content-Length: {LIMIT + 1}")
            )
            # A length within the limit with no body yet: the server waits for the body instead.
            waiting = await exchange(
                port, request_head(path, signed, f"Content-Length: {LIMIT}"), wait_s=0.3
            )
            # A lying length: far more than the limit, and only a few bytes ever come.
            lying = await exchange(
                port, request_head(path, signed, "Content-Length: 1000000000"), [b'{"a":1}']
            )
            return refused, waiting, lying, producer.sent

    refused, waiting, lying, sent = asyncio.run(scenario())
    assert status_of(refused) == 413 and str(LIMIT).encode() in refused
    assert waiting == b""
    assert status_of(lying) == 413
    assert sent == []


@pytest.mark.usefixtures("recording")
@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_chunked_oversize_body_is_refused_midstream(platform: str) -> None:
    body = json_body(8 * LIMIT)
    signed = signature_headers(platform, body, ALPHA_SECRETS)  # authentic, were it read whole
    head = request_head(f"/webhooks/alpha/{platform}", signed, "Transfer-Encoding: chunked")

    async def scenario() -> tuple[bytes, list[bytes]]:
        async with serving() as (client, producer):
            assert client.server.port is not None
            # limit + 512 bytes of an 8x-limit body, and the request is never finished
            partial = chunked(body, 256)[: LIMIT // 256 + 2]
            return await exchange(client.server.port, head, partial), producer.sent

    response, sent = asyncio.run(scenario())
    assert status_of(response) == 413
    assert sent == []


@pytest.mark.usefixtures("recording")
@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_limit_is_exact_with_and_without_content_length(platform: str) -> None:
    at_limit, over = json_body(LIMIT), json_body(LIMIT + 1)
    path = f"/webhooks/alpha/{platform}"

    def framed(body: bytes, use_chunks: bool) -> tuple[bytes, list[bytes]]:
        headers = signature_headers(platform, body, ALPHA_SECRETS)
        if use_chunks:
            head = request_head(path, headers, "Transfer-Encoding: chunked")
            return head, [*chunked(body, 100), b"0\r\n\r\n"]
        return request_head(path, headers, f"Content-Length: {len(body)}"), [body]

    async def scenario() -> tuple[list[int | None], list[RawEnvelope]]:
        async with serving() as (client, producer):
            assert client.server.port is not None
            statuses = []
            for body in (at_limit, over):
                for use_chunks in (False, True):
                    head, chunks = framed(body, use_chunks)
                    statuses.append(status_of(await exchange(client.server.port, head, chunks)))
            return statuses, producer.envelopes()

    statuses, envelopes = asyncio.run(scenario())
    assert statuses == [200, 200, 413, 413]
    assert [e.body for e in envelopes] == [at_limit, at_limit]


@pytest.mark.usefixtures("recording")
@pytest.mark.parametrize("platform", PLATFORMS)
def test_request_smuggling_and_short_lengths_produce_nothing(platform: str) -> None:
    body = json_body(3 * LIMIT)
    signed = signature_headers(platform, body, ALPHA_SECRETS)
    path = f"/webhooks/alpha/{platform}"

    async def scenario() -> tuple[bytes, bytes, list[bytes]]:
        async with serving() as (client, producer):
            port = client.server.port
            assert port is not None
            # Content-Length says 10, the (authentically signed) body goes on for 3 KB: only the
            # 10 declared bytes belong to this request, the rest is garbage after it.
            short = await exchange(
                port, request_head(path, signed, "Content-Length: 10"), [body], to_close=True
            )
            both = await exchange(
                port,
                request_head(path, signed, "Content-Length: 3\r\nTransfer-Encoding: chunked"),
                [*chunked(body, 512), b"0\r\n\r\n"],
                to_close=True,
            )
            return short, both, producer.sent

    short, both, sent = asyncio.run(scenario())
    assert statuses_of(short) and all(400 <= s < 500 for s in statuses_of(short))
    assert statuses_of(both) == [400]
    assert sent == []


@lru_cache(maxsize=1)
def gzip_bomb() -> tuple[bytes, int]:
    """A gzip member of about 64 KB that inflates to a 64 MB JSON body."""
    inflated = 64 * 1024 * 1024
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(b'{"pad":"')]
    block = b"0" * (1024 * 1024)
    parts += [packer.compress(block) for _ in range(inflated // len(block))]
    parts.append(packer.compress(b'"}') + packer.flush())
    return b"".join(parts), inflated + 10


@pytest.mark.usefixtures("recording")
@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_compressed_body_is_limited_as_it_inflates(platform: str) -> None:
    bomb, inflated = gzip_bomb()
    limit = 128 * 1024
    assert len(bomb) < limit < inflated
    assert len(zlib.decompressobj(31).decompress(bomb, 2 * limit)) == 2 * limit  # it inflates
    settings = SETTINGS.model_copy(update={"max_body_bytes": limit})
    headers = {
        "Content-Encoding": "gzip",
        **signature_headers(platform, bomb, ALPHA_SECRETS),
    }
    head = request_head(f"/webhooks/alpha/{platform}", headers, f"Content-Length: {len(bomb)}")

    async def scenario() -> tuple[bytes, list[bytes], int]:
        async with serving(settings) as (client, producer):
            assert client.server.port is not None
            tracemalloc.start()
            try:
                response = await exchange(client.server.port, head, [bomb])
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            return response, producer.sent, peak

    response, sent, peak = asyncio.run(scenario())
    assert status_of(response) == 413
    assert sent == []
    assert peak < 16 * 1024 * 1024, f"{peak} bytes allocated for a {limit}-byte limit"


# --- constant-time comparison ------------------------------------------------------------------

SECRET_KEYS = {
    "x": x.SECRET_KEY,
    "meta": meta.SECRET_KEY,
    "linkedin": linkedin.SECRET_KEY,
    "slack": slack.SECRET_KEY,
    "mastodon": mastodon.SECRET_KEY,
    "generic": generic.SECRET_KEY,
}


def expected_signature(platform: str, secret: str, body: bytes, headers: dict[str, str]) -> bytes:
    """What a verifier must compare the presented signature with, for one secret."""
    if platform == "slack":
        return slack.signature(secret, headers[slack.TIMESTAMP_HEADER], body).encode()
    if platform == "generic":
        msg_id, ts = headers[generic.ID_HEADER], headers[generic.TIMESTAMP_HEADER]
        return generic.sign(secret, msg_id, ts, body).encode()
    sign: dict[str, Callable[[str, bytes], str]] = {
        "x": x.signature,
        "meta": meta.signature,
        "linkedin": linkedin.signature,
        "mastodon": mastodon.signature,
    }
    return sign[platform](secret, body).encode()


class CompareSpy:
    """Replaces hmac.compare_digest: records every comparison, answers for real or as told."""

    def __init__(self, answer: bool | None = None) -> None:
        self.calls: list[tuple[bytes, bytes]] = []
        self.answer = answer
        self.real = hmac.compare_digest

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((bytes(a), bytes(b)))
        return self.real(a, b) if self.answer is None else self.answer


def rotating(platform: str) -> tuple[WorkspaceConfig, list[str]]:
    secrets = [f"{platform}-rotation-{i}-Zq8Wm3" for i in range(3)]
    if platform == "generic":
        secrets[1] = "whsec_" + base64.b64encode(b"rotation-key-1").decode()
    return WorkspaceConfig(name="r", secrets={SECRET_KEYS[platform]: secrets}), secrets


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("matching", [0, 1, 2])
def test_every_verifier_decides_with_compare_digest_against_every_secret(
    platform: str, matching: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace, secrets = rotating(platform)
    body = b'{"id": "rotation"}'
    now = time.time()
    headers = signature_headers(platform, body, {SECRET_KEYS[platform]: secrets[matching]}, now)
    presented = expected_signature(platform, secrets[matching], body, headers)
    protocol = PROTOCOLS[platform]

    spy = CompareSpy()
    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert protocol.verify(workspace, headers, body, now).ok
    # One comparison per active secret, whichever matches (no early exit), each of the
    # expected value with exactly what was presented.
    assert sorted(spy.calls) == sorted(
        (expected_signature(platform, s, body, headers), presented) for s in secrets
    )

    # The decision is compare_digest's: told "no", an authentic delivery is refused; told
    # "yes", a forged one passes.
    monkeypatch.setattr(hmac, "compare_digest", CompareSpy(answer=False))
    assert not protocol.verify(workspace, headers, body, now).ok
    forged = {k: v for k, v in headers.items()}
    signature_header = {
        "x": x.SIGNATURE_HEADER, "meta": meta.SIGNATURE_HEADER,
        "linkedin": linkedin.SIGNATURE_HEADER, "slack": slack.SIGNATURE_HEADER,
        "mastodon": mastodon.SIGNATURE_HEADER, "generic": generic.SIGNATURE_HEADER,
    }[platform]  # fmt: skip
    forged[signature_header] = "v1,Zm9yZ2Vk" if platform == "generic" else "v0=forged"
    assert not protocol.verify(workspace, forged, body, now).ok
    monkeypatch.setattr(hmac, "compare_digest", CompareSpy(answer=True))
    assert protocol.verify(workspace, forged, body, now).ok


def test_meta_verify_token_is_compared_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = ["verify-one-Kq2Lm8", "verify-two-Pz4Xc1"]
    workspace = WorkspaceConfig(name="m", secrets={meta.VERIFY_TOKEN_KEY: tokens})
    query = {"hub.mode": "subscribe", "hub.challenge": "c", "hub.verify_token": tokens[1]}
    spy = CompareSpy()
    monkeypatch.setattr(hmac, "compare_digest", spy)
    reply = meta.PROTOCOL.handshake(workspace, query, {})
    assert reply is not None and reply.status == 200
    assert sorted(spy.calls) == sorted((t.encode(), tokens[1].encode()) for t in tokens)
    monkeypatch.setattr(hmac, "compare_digest", CompareSpy(answer=False))
    reply = meta.PROTOCOL.handshake(workspace, query, {})
    assert reply is not None and reply.status == 403
    monkeypatch.setattr(hmac, "compare_digest", CompareSpy(answer=True))
    reply = meta.PROTOCOL.handshake(workspace, {**query, "hub.verify_token": "guess"}, {})
    assert reply is not None and reply.status == 200


SENSITIVE = re.compile(r"sig|secret|token|digest|hmac|mac$|expected|presented|challenge|crc|key")
CONSTANT_NAME = re.compile(r"^_?[A-Z0-9_]+$")  # header names, secret key names: public
EQUALITY = (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)
PREFIX_METHODS = {"startswith", "endswith", "find", "index", "count", "__eq__", "__ne__"}


def _names(node: ast.AST) -> set[str]:
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            found.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            found.add(sub.attr)
    return {n for n in found if not CONSTANT_NAME.match(n)}


def _sensitive(node: ast.AST) -> bool:
    return any(SENSITIVE.search(name.lower()) for name in _names(node))


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _public(node: ast.AST) -> bool:
    """A literal or a module constant (a header name, a prefix): compared with, nothing leaks."""
    if isinstance(node, ast.Constant):
        return True
    return isinstance(node, ast.Name) and bool(CONSTANT_NAME.match(node.id))


def variable_time_comparisons(source: str) -> list[int]:
    """Lines where a signature, token or secret is compared with ==, !=, in, is or a prefix test."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(isinstance(op, EQUALITY) for op in node.ops):
            operands = [node.left, *node.comparators]
            if any(_is_none(o) or _public(o) for o in operands):
                continue  # `x is None`, `"{" in token`, `key in KEPT_HEADERS`: not a secret's value
            if any(_sensitive(o) for o in operands):
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in PREFIX_METHODS
            and _sensitive(node.func.value)
            and any(_sensitive(a) for a in node.args)
        ):
            lines.append(node.lineno)
    return lines


def test_the_static_scan_finds_variable_time_comparisons() -> None:
    flagged = [
        "ok = signature(secret, body) == presented",
        "if expected != value.encode(): pass",
        "if presented in expected_values: pass",
        "ok = hmac.new(k, m, 'sha256').hexdigest() == header",
        "if query['hub.verify_token'] == tokens[0]: pass",
        "ok = expected.startswith(presented)",
        "ok = sign(s, body) is value",
        "ok = value == crc_response(s, t)",
        "ok = header_value.lower() == meta_signature(s, body)",
    ]
    clean = [
        "if mode != 'subscribe': pass",
        "if token is None: pass",
        "if len(body) > 10: pass",
        "if SIGNATURE_HEADER in headers: pass",
        "found |= hmac.compare_digest(expected, presented)",
        "ok = presented.startswith(PREFIX)",
        "if payload.get('type') != 'url_verification': pass",
        "if key in KEPT_HEADERS: pass",
        "if '{' in token: pass",
    ]
    assert [bool(variable_time_comparisons(s)) for s in flagged] == [True] * len(flagged)
    assert [bool(variable_time_comparisons(s)) for s in clean] == [False] * len(clean)


def test_no_webhook_module_compares_secrets_in_variable_time() -> None:
    modules = [*sorted((REPO / "streams" / "webhooks").glob("*.py")), REPO / "streams/ingest.py"]
    assert len(modules) >= len(PROTOCOLS) + 2
    found = {
        str(path.relative_to(REPO)): lines
        for path in modules
        if (lines := variable_time_comparisons(path.read_text()))
    }
    assert found == {}
    # and every protocol module reaches compare_digest (itself or through base.any_matches)
    base = (REPO / "streams" / "webhooks" / "base.py").read_text()
    assert "hmac.compare_digest(" in base
    for platform in PLATFORMS:
        text = (REPO / "streams" / "webhooks" / f"{platform}.py").read_text()
        assert "any_matches" in text or "verify_header_signature" in text, platform


# --- secrets never in logs, responses or errors ------------------------------------------------

SECRETS = all_secret_forms()


def leaked(text: str) -> list[str]:
    return sorted(form for form in SECRETS if form in text)


class Everything(logging.Handler):
    """Every record of every logger, propagating or not."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> Iterator[str]:
        formatter = logging.Formatter()
        for record in self.records:
            yield formatter.format(record)
            yield repr(record.args) + repr(record.__dict__)


@pytest.fixture
def all_logs() -> Iterator[Everything]:
    handler = Everything()
    root = logging.getLogger()
    loggers = [root] + [
        logging.getLogger(name)
        for name, lg in list(logging.root.manager.loggerDict.items())
        if isinstance(lg, logging.Logger) and not lg.propagate
    ]
    levels = {lg: lg.level for lg in loggers}
    for lg in loggers:
        lg.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for lg in list(logging.root.manager.loggerDict.values()):
        if isinstance(lg, logging.Logger):
            levels.setdefault(lg, lg.level)
            lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for lg, level in levels.items():
            lg.setLevel(level)
            lg.removeHandler(handler)


def failure_calls(now: float) -> list[tuple[int, str, str, bytes, dict[str, str]]]:
    """(expected status, method, path, body, headers): every refusal and handshake there is."""
    calls: list[tuple[int, str, str, bytes, dict[str, str]]] = []
    body = b'{"event": "hello"}'
    for ws, secrets in TENANTS.items():
        other = BETA_SECRETS if ws == "alpha" else ALPHA_SECRETS
        for p in PLATFORMS:
            url = f"/webhooks/{ws}/{p}"
            signed = signature_headers(p, body, secrets, now)
            bad_json = b'{"event": "unterminated'
            calls += [
                (503, "POST", url, body, {**JSON, **signed}),  # authentic, Kafka down
                (503, "POST", url, bad_json, {**JSON, **signature_headers(p, bad_json, secrets)}),
                (401, "POST", url, body, {**JSON, **signature_headers(p, body, other, now)}),
                (401, "POST", url, body + b" ", {**JSON, **signed}),  # tampered
                (401, "POST", url, body, JSON),  # no signature headers
                (415, "POST", url, body, {"Content-Type": "text/plain", **signed}),
                (413, "POST", url, json_body(LIMIT + 1), {**JSON, **signed}),
                (404, "POST", f"/webhooks/nobody/{p}", body, {**JSON, **signed}),
                (401, "POST", f"/webhooks/gamma/{p}", body, {**JSON, **signed}),  # no secrets
            ]
            if p in ("slack", "generic"):
                stale = signature_headers(p, body, secrets, now - 3600)
                calls.append((401, "POST", url, body, {**JSON, **stale}))
                header = slack.TIMESTAMP_HEADER if p == "slack" else generic.TIMESTAMP_HEADER
                calls.append((400, "POST", url, body, {**JSON, **signed, header: "noon"}))
            if p in ("meta", "slack", "mastodon", "generic"):
                calls.append((400, "GET", url, b"", {}))  # not a handshake of this platform
        hello = b'{"type": "url_verification", "challenge": "chall-1"}'
        no_challenge = b'{"type": "url_verification", "challenge": 7}'
        meta_q = {"hub.mode": "subscribe", "hub.challenge": "c-42"}
        calls += [
            (200, "GET", f"/webhooks/{ws}/x?crc_token=crc-1", b"", {}),
            (400, "GET", f"/webhooks/{ws}/x?" + urlencode({"crc_token": '{"a":1}'}), b"", {}),
            (200, "GET", f"/webhooks/{ws}/linkedin?challengeCode=ch-1", b"", {}),
            (200, "GET", f"/webhooks/{ws}/meta?" + urlencode(
                {**meta_q, "hub.verify_token": secrets["meta_verify_token"]}), b"", {}),
            (403, "GET", f"/webhooks/{ws}/meta?" + urlencode(
                {**meta_q, "hub.verify_token": other["meta_verify_token"]}), b"", {}),
            (400, "GET", f"/webhooks/{ws}/meta?hub.mode=subscribe", b"", {}),
            (200, "POST", f"/webhooks/{ws}/slack", hello,
             {**JSON, **signature_headers("slack", hello, secrets, now)}),
            (400, "POST", f"/webhooks/{ws}/slack", no_challenge,
             {**JSON, **signature_headers("slack", no_challenge, secrets, now)}),
        ]  # fmt: skip
    calls += [
        (403, "GET", "/webhooks/gamma/x?crc_token=t", b"", {}),
        (403, "GET", "/webhooks/gamma/linkedin?challengeCode=c", b"", {}),
        (403, "GET", "/webhooks/gamma/meta?hub.mode=subscribe&hub.challenge=c&hub.verify_token=t",
         b"", {}),
        (404, "POST", "/webhooks/alpha/myspace", b"{}", JSON),
        (404, "GET", "/nowhere", b"", {}),
        (405, "DELETE", "/webhooks/alpha/x", b"", {}),
        (503, "GET", "/readyz", b"", {}),
        (200, "GET", "/healthz", b"", {}),
        (200, "GET", "/openapi.json", b"", {}),
    ]  # fmt: skip
    return calls


def test_no_secret_in_responses_headers_metrics_or_logs(all_logs: Everything) -> None:
    """The real producer, with Kafka unreachable: every failure path, both tenants."""
    now = time.time()
    calls = failure_calls(now)

    async def scenario() -> tuple[list[tuple[int, str, str]], str]:
        async with serving() as (client, _):
            out = []
            for _, method, path, body, headers in calls:
                response = await client.request(method, path, data=body, headers=headers)
                text = await response.text()
                out.append((response.status, text, repr(dict(response.headers))))
            return out, await (await client.get("/metrics")).text()

    answers, metrics = asyncio.run(scenario())
    assert [status for status, _, _ in answers] == [expected for expected, *_ in calls]
    for (_, method, path, _, _), (_, text, headers) in zip(calls, answers, strict=True):
        assert leaked(text) == [] and leaked(headers) == [], (method, path)
    assert leaked(metrics) == []
    logged = list(all_logs.texts())
    assert any("could not hand" in text for text in logged)  # the 503 path really logged
    assert [text for text in logged if leaked(text)] == []


def test_the_ingest_runs_without_an_access_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Meta's verify token comes in the query string: no request line may be logged."""
    seen: dict[str, Any] = {}

    def run_app(app: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        kwargs["loop"].close()

    monkeypatch.setattr(ingest.web, "run_app", run_app)
    ingest.run_ingest(SETTINGS, REGISTRY)
    assert "access_log" in seen and seen["access_log"] is None


def test_handshake_answers_are_not_the_secrets() -> None:
    """The answers derive from the secret (a control: the right HMAC) but never contain it."""
    crc = x.crc_response(ALPHA_SECRETS["x_consumer_secret"], "crc-1")
    challenge = linkedin.challenge_response(ALPHA_SECRETS["linkedin_client_secret"], "ch-1")
    assert leaked(crc) == [] and leaked(challenge) == []
    assert leaked(f"key {ALPHA_SECRETS['x_consumer_secret']} leaked") != []  # the check works
    key = generic.signing_key(ALPHA_SECRETS["generic_secret"])
    assert key is not None and leaked(f"key={key.hex()}") != [] and leaked(key.decode("latin-1"))


BAD_WORKSPACES: list[dict[str, Any]] = [
    {"secrets": {"x_consumer_secret": [ALPHA_SECRETS["x_consumer_secret"], 3]}},
    {"secrets": {"x_consumer_secret": ALPHA_SECRETS["x_consumer_secret"], "meta_app_secret": 3}},
    {"secrets": {"meta_app_secret": [ALPHA_SECRETS["meta_app_secret"], []]}},
    {"secrets": {"slack_signing_secret": ALPHA_SECRETS["slack_signing_secret"]}, "policy": 3},
    {
        "secrets": {"mastodon_secret": ALPHA_SECRETS["mastodon_secret"]},
        "accounts": [{"platform": "x"}],
    },
    {"secrets": [ALPHA_SECRETS["generic_secret"]]},
    {"secrets": {"x_consumer_secret": "env:RAPPORT_TEST_UNSET_" + "Q" * 8}},
]


@pytest.mark.parametrize("body", BAD_WORKSPACES)
def test_workspace_errors_name_the_problem_not_the_secrets(body: dict[str, Any]) -> None:
    with pytest.raises((ValueError, LookupError)) as caught:  # what the CLI reports, no traceback
        WorkspaceRegistry.from_mapping({"workspaces": {"alpha": body}})
    assert leaked(str(caught.value)) == [] and leaked(repr(caught.value)) == []
    assert str(caught.value)


def test_settings_and_workspaces_print_without_secrets() -> None:
    password = "chPW-5Nq8Rw2Ty6Ui"
    settings = Settings(clickhouse_url=f"http://rapport:{password}@clickhouse:8123/rapport")
    for text in (repr(settings), str(settings)):
        assert password not in text and "http://rapport:***@clickhouse:8123/rapport" in text
    assert settings.clickhouse_url.endswith(f":{password}@clickhouse:8123/rapport")  # still usable
    reg = registry()
    for text in (repr(reg), str(reg), repr(reg.workspaces["alpha"]), str(reg.workspaces["beta"])):
        assert leaked(text) == []
        assert "alpha" in text or "beta" in text
    assert reg.workspaces["alpha"].secrets_for("x_consumer_secret") == (
        ALPHA_SECRETS["x_consumer_secret"],
    )


def test_cli_status_and_workspace_errors_print_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rapport.cli import app

    password = "chPW-9Lk3Jh7Gf1Ds"
    good = tmp_path / "workspaces.toml"
    good.write_text(
        "".join(
            f"[workspaces.{ws}.secrets]\n"
            + "".join(f'{key} = "{value}"\n' for key, value in secrets.items())
            for ws, secrets in TENANTS.items()
        )
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(
        "[workspaces.alpha.secrets]\n"
        f'x_consumer_secret = ["{ALPHA_SECRETS["x_consumer_secret"]}", 1]\n'
        f'meta_app_secret = 7\nslack_signing_secret = "{ALPHA_SECRETS["slack_signing_secret"]}"\n'
    )
    delivery = tmp_path / "dm.json"
    delivery.write_bytes(X_DM)
    for name, value in {
        "RAPPORT_HOME": str(tmp_path / "home"),
        "RAPPORT_WORKSPACES": str(good),
        "RAPPORT_CLICKHOUSE_URL": f"http://rapport:{password}@127.0.0.1:1/rapport",
        "RAPPORT_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "RAPPORT_INGEST_PORT": str(free_port()),
        "RAPPORT_WORKER_PORT": str(free_port()),
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        status = runner.invoke(app, ["status", "--format", "json"])
        assert status.exit_code == 0, status.output
        assert {s["name"] for s in json.loads(status.stdout)} >= {"kafka", "ingest", "worker"}
        normalized = runner.invoke(
            app, ["normalize", "--platform", "x", "--workspace", "alpha", str(delivery)]
        )
        assert normalized.exit_code == 0 and '"workspace":"alpha"' in normalized.stdout.replace(
            " ", ""
        )
        refused = runner.invoke(
            app,
            ["normalize", "--platform", "x", "--workspace", "alpha", "--workspaces", str(bad),
             str(delivery)],
        )  # fmt: skip
        assert refused.exit_code == 2 and "x_consumer_secret" in refused.output
        assert refused.exception is None or isinstance(refused.exception, SystemExit)
    finally:
        get_settings.cache_clear()
    for result in (status, normalized, refused):
        assert leaked(result.output) == [] and password not in result.output


# --- tenant isolation --------------------------------------------------------------------------


@pytest.mark.usefixtures("recording")
@pytest.mark.parametrize("platform", PLATFORMS)
def test_one_tenants_signature_never_opens_another_tenants_url(platform: str) -> None:
    bodies = {ws: f'{{"tenant": "{ws}", "n": 1}}'.encode() for ws in TENANTS}

    async def scenario() -> tuple[dict[tuple[str, str], int], list[RawEnvelope]]:
        async with serving() as (client, producer):
            statuses = {}
            for url_ws in TENANTS:
                for signer, secrets in TENANTS.items():
                    body = bodies[signer]
                    headers = {**JSON, **signature_headers(platform, body, secrets)}
                    response = await client.post(
                        f"/webhooks/{url_ws}/{platform}", data=body, headers=headers
                    )
                    statuses[(url_ws, signer)] = response.status
            return statuses, producer.envelopes()

    statuses, envelopes = asyncio.run(scenario())
    assert statuses == {
        ("alpha", "alpha"): 200,
        ("alpha", "beta"): 401,
        ("beta", "alpha"): 401,
        ("beta", "beta"): 200,
    }
    assert [(e.workspace, e.source, e.body) for e in envelopes] == [
        ("alpha", platform, bodies["alpha"]),
        ("beta", platform, bodies["beta"]),
    ]


@pytest.mark.usefixtures("recording")
def test_handshakes_answer_for_the_urls_tenant_only() -> None:
    meta_q = {"hub.mode": "subscribe", "hub.challenge": "c-1"}

    async def scenario() -> dict[str, tuple[int, str]]:
        async with serving() as (client, _):
            out = {}
            for name, path in {
                "crc_beta": "/webhooks/beta/x?crc_token=tok-1",
                "li_beta": "/webhooks/beta/linkedin?challengeCode=code-1",
                "meta_alpha_token_at_beta": "/webhooks/beta/meta?"
                + urlencode({**meta_q, "hub.verify_token": ALPHA_SECRETS["meta_verify_token"]}),
                "meta_beta_token_at_beta": "/webhooks/beta/meta?"
                + urlencode({**meta_q, "hub.verify_token": BETA_SECRETS["meta_verify_token"]}),
            }.items():
                response = await client.get(path)
                out[name] = (response.status, await response.text())
            return out

    out = asyncio.run(scenario())
    assert out["crc_beta"] == (
        200,
        json.dumps({"response_token": x.crc_response(BETA_SECRETS["x_consumer_secret"], "tok-1")}),
    )
    assert x.crc_response(ALPHA_SECRETS["x_consumer_secret"], "tok-1") not in out["crc_beta"][1]
    beta_li = linkedin.challenge_response(BETA_SECRETS["linkedin_client_secret"], "code-1")
    assert (
        out["li_beta"][0] == 200 and json.loads(out["li_beta"][1])["challengeResponse"] == beta_li
    )
    assert out["meta_alpha_token_at_beta"][0] == 403
    assert out["meta_beta_token_at_beta"] == (200, "c-1")


@pytest.mark.usefixtures("recording")
@pytest.mark.parametrize("platform", ["x", "linkedin"])
def test_a_handshake_answer_is_never_a_delivery_signature(platform: str) -> None:
    """X's CRC and LinkedIn's challenge HMAC the token with the delivery key: no signing oracle."""
    body = json.dumps({"for_user_id": OWNED_X, "follow_events": [{"type": "follow"}]}).encode()
    assert len(body) < LIMIT
    param = "crc_token" if platform == "x" else "challengeCode"
    variants = [body.decode(), " " + body.decode(), '[{"for_user_id": "1"}]']

    async def scenario() -> tuple[list[int], list[int], list[bytes]]:
        async with serving() as (client, producer):
            asked, delivered = [], []
            for token in variants:
                response = await client.get(
                    f"/webhooks/alpha/{platform}?{param}=" + quote(token, safe="")
                )
                asked.append(response.status)
                answer = await response.json()
                forged = answer.get("response_token") or answer.get("challengeResponse") or "none"
                header = x.SIGNATURE_HEADER if platform == "x" else linkedin.SIGNATURE_HEADER
                response = await client.post(
                    f"/webhooks/alpha/{platform}",
                    data=token.encode(),
                    headers={**JSON, header: forged},
                )
                delivered.append(response.status)
            return asked, delivered, producer.sent

    asked, delivered, sent = asyncio.run(scenario())
    assert asked == [400] * len(variants)
    assert delivered == [401] * len(variants)
    assert sent == []


@pytest.mark.usefixtures("recording")
def test_produced_records_normalize_under_their_tenant_only() -> None:
    """The same DM delivered to both tenants: two envelopes, two disjoint sets of events."""

    roomy = SETTINGS.model_copy(update={"max_body_bytes": 64 * 1024})

    async def scenario() -> list[bytes]:
        async with serving(roomy) as (client, producer):
            for ws, secrets in TENANTS.items():
                headers = {**JSON, **signature_headers("x", X_DM, secrets)}
                response = await client.post(f"/webhooks/{ws}/x", data=X_DM, headers=headers)
                assert response.status == 200
            return list(producer.sent)

    sent = asyncio.run(scenario())
    assert len(sent) == len(TENANTS)
    ids: dict[str, set[str]] = {}
    for offset, value in enumerate(sent):
        envelope = RawEnvelope.loads(value)
        outcome = process_delivery(
            REGISTRY, value, RawPointer(topic="raw", partition=0, offset=offset), datetime.now(UTC)
        )
        assert outcome.dead_letter is None and outcome.events
        for event in outcome.events:
            assert event.workspace == envelope.workspace
            assert split_key(event_key(event))[0] == envelope.workspace
            assert event.account is not None and event.account.user_id == OWNED_X
        ids[envelope.workspace] = {e.event_id for e in outcome.events}
    assert set(ids) == set(TENANTS) and not ids["alpha"] & ids["beta"]


@given(
    st.from_regex(WORKSPACE_NAME_PATTERN, fullmatch=True),
    st.from_regex(WORKSPACE_NAME_PATTERN, fullmatch=True),
    st.text(),
    st.text(),
)
@hsettings(max_examples=300, deadline=None)
def test_keys_of_different_workspaces_never_collide(w1: str, w2: str, c1: str, c2: str) -> None:
    """The worker's tables and topics partition by key: (workspace, ...) keys are injective in
    the workspace, so GET /relationships/{ws}/{contact} can only find `ws`'s relationships."""
    for make in (relationship_key, lambda w, c: identity_key(w, c).decode()):
        k1, k2 = make(w1, c1), make(w2, c2)
        assert split_key(k1.encode())[0] == w1
        if w1 != w2:
            assert k1 != k2
        assert (k1 == k2) == (w1 == w2 and c1 == c2)


# --- fuzzing -----------------------------------------------------------------------------------

HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
SIGNATURE_HEADERS = [
    x.SIGNATURE_HEADER, meta.SIGNATURE_HEADER, linkedin.SIGNATURE_HEADER, slack.SIGNATURE_HEADER,
    slack.TIMESTAMP_HEADER, mastodon.SIGNATURE_HEADER, generic.ID_HEADER,
    generic.TIMESTAMP_HEADER, generic.SIGNATURE_HEADER, "Content-Encoding",
]  # fmt: skip
QUERY_KEYS = ["crc_token", "hub.mode", "hub.verify_token", "hub.challenge", "challengeCode", "q"]
TIMESTAMPED = ("slack", "generic")  # the platforms whose signature covers a timestamp


@st.composite
def fuzzed_requests(draw: st.DrawFn) -> dict[str, Any]:
    # Known names three times in four, the webhook URL two times in three: most requests reach
    # an endpoint that checks something, the rest probe every other path.
    known = draw(st.lists(st.sampled_from([True, True, True, False]), min_size=3, max_size=3))
    ws = draw(
        st.sampled_from([*TENANTS, "gamma", "nobody"])
        if known[0]
        else st.from_regex(r"[\w.~-]{1,12}", fullmatch=True)
    )
    platform = draw(
        st.sampled_from(PLATFORMS) if known[1] else st.from_regex(r"[\w.~-]{1,10}", fullmatch=True)
    )
    others = ["/", "/webhooks", f"/webhooks/{ws}", "/healthz", "/readyz", "/metrics"]
    others.append("/openapi.json")
    path = draw(
        st.just(f"/webhooks/{quote(ws, safe='')}/{quote(platform, safe='')}")
        if known[2]
        else st.sampled_from(others) | st.from_regex(r"/[\w./%~-]{0,30}", fullmatch=True)
    )
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET", "GET", "PUT", "DELETE", "HEAD"]))
    query = draw(st.dictionaries(st.sampled_from(QUERY_KEYS), HEADER_TEXT, max_size=3))
    if draw(st.booleans()) and "hub.verify_token" in query and ws in TENANTS:
        query["hub.verify_token"] = TENANTS[ws]["meta_verify_token"]
    body = draw(
        st.binary(max_size=2 * LIMIT)
        | st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode())
        | st.text(max_size=30).map(
            lambda c: json.dumps({"type": "url_verification", "challenge": c}).encode()
        )
        | st.integers(LIMIT - 8, LIMIT + 8).map(json_body)
    )
    content_type = draw(
        st.sampled_from(
            ["application/json", "application/json; charset=utf-8", "application/x+json",
             "text/plain", "", "multipart/form-data; boundary=x"]
        )
        | HEADER_TEXT
    )  # fmt: skip
    signing = draw(st.sampled_from(["own", "own", "other", "garbage", "none", "stale"]))
    headers: dict[str, str] = {"Content-Type": content_type} if content_type else {}
    if signing in ("own", "other", "stale") and platform in PROTOCOLS:
        secrets = TENANTS.get(ws, ALPHA_SECRETS)
        if signing == "other":
            secrets = BETA_SECRETS if secrets is ALPHA_SECRETS else ALPHA_SECRETS
        now = time.time() - (3600 if signing == "stale" else 0)
        headers.update(signature_headers(platform, body, secrets, now))
    elif signing == "garbage":
        names = draw(st.lists(st.sampled_from(SIGNATURE_HEADERS), max_size=4))
        headers.update({name: draw(HEADER_TEXT) for name in names})
    # An hour-old signature is a replay only where the timestamp is signed (Slack, generic);
    # X, Meta, LinkedIn and Mastodon sign the body alone, so it is as authentic as a fresh one.
    authentic = (
        signing in ("own", "stale")
        and ws in TENANTS
        and platform in PROTOCOLS
        and path == f"/webhooks/{ws}/{platform}"
        and not (platform in TIMESTAMPED and signing == "stale")
    )
    return {
        "method": method,
        "path": path,
        "query": query,
        "body": body,
        "headers": headers,
        "authentic": authentic,
    }


# A well-formed JSON media type (RFC 9110 tokens); a malformed one may or may not be taken.
JSON_MIME = re.compile(r"application/json|[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]*\+json")


def is_delivery_candidate(req: dict[str, Any]) -> bool:
    """An authentic POST the ingest must take: JSON content type and a body within the limit."""
    mime = req["headers"].get("Content-Type", "").split(";")[0].strip().lower()
    return (
        req["authentic"]
        and req["method"] == "POST"
        and JSON_MIME.fullmatch(mime) is not None
        and len(req["body"]) <= LIMIT
    )


def fuzz_examples(now: float) -> list[dict[str, Any]]:
    """One request of every class the fuzz must cover, each with `expect`: the status it must get
    with Kafka (up, down). Run before the generated ones, so coverage never depends on luck."""
    hello = json.dumps({"type": "url_verification", "challenge": "c-1"}).encode()
    no_challenge = json.dumps({"type": "url_verification", "challenge": 7}).encode()
    body = b'{"n": 1}'
    reqs: list[tuple[tuple[int, int], dict[str, Any]]] = []

    def post(
        expect: tuple[int, int],
        path: str,
        body: bytes,
        headers: dict[str, str],
        authentic: bool = False,
    ) -> None:
        reqs.append((expect, {"method": "POST", "path": path, "query": {}, "body": body,
                              "headers": headers, "authentic": authentic}))  # fmt: skip

    def call(expect: tuple[int, int], method: str, path: str, query: dict[str, str]) -> None:
        reqs.append((expect, {"method": method, "path": path, "query": query, "body": b"",
                              "headers": {}, "authentic": False}))  # fmt: skip

    for ws, secrets in TENANTS.items():
        for p in PLATFORMS:
            signed = {**JSON, **signature_headers(p, body, secrets, now)}
            post((200, 503), f"/webhooks/{ws}/{p}", body, signed, authentic=True)
    for p in PLATFORMS:
        url = f"/webhooks/alpha/{p}"
        stale = {**JSON, **signature_headers(p, body, ALPHA_SECRETS, now - 3600)}
        if p in TIMESTAMPED:
            post((401, 401), url, body, stale)
        else:
            post((200, 503), url, body, stale, authentic=True)
        signed = {**JSON, **signature_headers(p, body, ALPHA_SECRETS, now)}
        post((401, 401), url, body, {**JSON, **signature_headers(p, body, BETA_SECRETS, now)})
        post((401, 401), url, body + b" ", signed)  # tampered
        post((401, 401), url, body, JSON)  # unsigned
        post((401, 401), f"/webhooks/gamma/{p}", body, signed)  # a workspace without secrets
        post((404, 404), f"/webhooks/nobody/{p}", body, signed)
        post((415, 415), url, body, {**signed, "Content-Type": "text/plain"})
        big = json_body(LIMIT + 1)
        post((413, 413), url, big, {**JSON, **signature_headers(p, big, ALPHA_SECRETS, now)})
    at_limit = json_body(LIMIT)
    signed = {**JSON, **signature_headers("meta", at_limit, ALPHA_SECRETS, now)}
    post((200, 503), "/webhooks/alpha/meta", at_limit, signed, authentic=True)
    slack_url = "/webhooks/alpha/slack"
    for challenge, expect in ((hello, 200), (no_challenge, 400)):
        signed = {**JSON, **signature_headers("slack", challenge, ALPHA_SECRETS, now)}
        post((expect, expect), slack_url, challenge, signed, authentic=True)
    signed = {**JSON, **signature_headers("slack", body, ALPHA_SECRETS, now)}
    post((400, 400), slack_url, body, {**signed, slack.TIMESTAMP_HEADER: "noon"})
    post((404, 404), "/webhooks/alpha/myspace", body, JSON)
    meta_q = {"hub.mode": "subscribe", "hub.challenge": "c-2"}
    call((200, 200), "GET", "/webhooks/alpha/x", {"crc_token": "crc-1"})
    call((400, 400), "GET", "/webhooks/alpha/x", {"crc_token": '{"a": 1}'})
    call((200, 200), "GET", "/webhooks/beta/linkedin", {"challengeCode": "ch-1"})
    call((200, 200), "GET", "/webhooks/beta/meta",
         {**meta_q, "hub.verify_token": BETA_SECRETS["meta_verify_token"]})  # fmt: skip
    call((403, 403), "GET", "/webhooks/beta/meta",
         {**meta_q, "hub.verify_token": ALPHA_SECRETS["meta_verify_token"]})  # fmt: skip
    call((400, 400), "GET", "/webhooks/alpha/mastodon", {})
    call((405, 405), "PUT", "/webhooks/alpha/x", {})
    call((405, 405), "DELETE", "/webhooks/beta/generic", {})
    call((200, 200), "GET", "/healthz", {})
    call((200, 503), "GET", "/readyz", {})
    call((200, 503), "HEAD", "/readyz", {})
    call((404, 404), "GET", "/nowhere", {})
    return [{**req, "expect": expect} for expect, req in reqs]


def with_fuzz_examples(test: Callable[..., None]) -> Callable[..., None]:
    """`test` (a @given test of one `req`) with every `fuzz_examples` request as an @example."""
    for req in reversed(fuzz_examples(time.time())):
        test = example(req)(test)
    return test


def is_url_verification(body: bytes) -> bool:
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    return isinstance(payload, dict) and payload.get("type") == "url_verification"


class LiveApp:
    """The ingest on a loop of its own, for hypothesis to call example after example."""

    def __init__(self, kafka_up: bool) -> None:
        self.kafka_up = kafka_up
        self.loop = asyncio.new_event_loop()

    def __enter__(self) -> LiveApp:
        self.app = create_ingest_app(SETTINGS, REGISTRY)

        async def start() -> TestClient:
            server = TestServer(self.app, host="127.0.0.1")
            await server.start_server(access_log=None)
            client = TestClient(server)
            await client.start_server()
            return client

        self.client = self.loop.run_until_complete(start())
        self.producer = self.app[PRODUCER]
        self.producer.up = self.kafka_up
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()

    def call(self, req: dict[str, Any]) -> tuple[int, dict[str, str], bytes, list[bytes]]:
        async def go() -> tuple[int, dict[str, str], bytes, list[bytes]]:
            before = len(self.producer.sent)
            response = await self.client.request(
                req["method"], req["path"], params=req["query"], data=req["body"],
                headers=req["headers"], allow_redirects=False,
            )  # fmt: skip
            body = await response.read()
            return response.status, dict(response.headers), body, self.producer.sent[before:]

        return self.loop.run_until_complete(go())


# The same requests on every run: coverage comes from `fuzz_examples`, and a failure found by
# the generated ones is found again by the next run.
FUZZ = hsettings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Every status a request class of `fuzz_examples` gets, with Kafka up and with Kafka down.
COVERED_UP = {200, 400, 401, 403, 404, 405, 413, 415}
COVERED_DOWN = {200, 400, 401, 403, 404, 405, 413, 415, 503}


@pytest.mark.usefixtures("recording")
def test_fuzzed_requests_never_get_a_5xx_while_kafka_is_up() -> None:
    seen: Counter[int] = Counter()
    with LiveApp(kafka_up=True) as live:

        @with_fuzz_examples
        @FUZZ
        @given(fuzzed_requests())
        def check(req: dict[str, Any]) -> None:
            note(repr(req))
            status, _, answer, produced = live.call(req)
            seen[status] += 1
            if "expect" in req:
                assert status == req["expect"][0], answer[:200]
            assert status < 500, (status, answer[:200])
            if produced:  # only an authentic delivery, under its URL's tenant, byte for byte
                assert status == 200 and req["authentic"]
                (envelope,) = [RawEnvelope.loads(v) for v in produced]
                ws, platform = req["path"].split("/")[2:4]
                assert (envelope.workspace, envelope.source, envelope.body) == (
                    ws, platform, req["body"],
                )  # fmt: skip
            if 200 <= status < 300 and req["method"] == "POST" and req["path"].startswith("/web"):
                assert req["authentic"], "an unauthenticated delivery was accepted"
            if is_delivery_candidate(req):
                if req["path"].endswith("/slack") and is_url_verification(req["body"]):
                    assert status in (200, 400) and not produced
                else:
                    assert status == 200 and len(produced) == 1

        check()
    assert set(seen) >= COVERED_UP, seen  # every outcome


@pytest.mark.usefixtures("recording")
def test_fuzzed_requests_get_503_only_when_authentic_and_kafka_is_down() -> None:
    seen: Counter[int] = Counter()
    with LiveApp(kafka_up=False) as live:

        @with_fuzz_examples
        @FUZZ
        @given(fuzzed_requests())
        def check(req: dict[str, Any]) -> None:
            note(repr(req))
            status, headers, answer, produced = live.call(req)
            seen[status] += 1
            if "expect" in req:
                assert status == req["expect"][1], answer[:200]
            assert not produced
            if status >= 500:
                assert status == 503, (status, answer[:200])
                if req["path"] == "/readyz":  # the readiness probe (no Retry-After: not an API)
                    assert req["method"] in ("GET", "HEAD")
                    assert req["method"] == "HEAD" or json.loads(answer) == {
                        "status": "kafka unavailable"
                    }
                else:  # an authentic delivery Kafka did not take
                    assert req["authentic"]
                    assert headers.get("Retry-After") == "5"
                    assert json.loads(answer).keys() == {"error"}
            if is_delivery_candidate(req) and not (
                req["path"].endswith("/slack") and is_url_verification(req["body"])
            ):
                assert status == 503

        check()
    assert set(seen) >= COVERED_DOWN, seen


RAW_TOKEN = st.binary(min_size=0, max_size=24).filter(lambda b: b"\r" not in b and b"\n" not in b)


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"OPTIONS"]) | RAW_TOKEN)
    ws = draw(st.sampled_from([b"alpha", b"beta", b"gamma"]) | RAW_TOKEN)
    platform = draw(st.sampled_from([p.encode() for p in PLATFORMS]) | RAW_TOKEN)
    target = draw(st.just(b"/webhooks/" + ws + b"/" + platform) | RAW_TOKEN)
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]) | RAW_TOKEN)
    body = draw(st.binary(max_size=2 * LIMIT))
    names = [n.encode() for n in SIGNATURE_HEADERS] + [b"Content-Type", b"Transfer-Encoding"]
    headers = draw(st.lists(st.tuples(st.sampled_from(names) | RAW_TOKEN, RAW_TOKEN), max_size=6))
    lines = [method + b" " + target + b" " + version, b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    framing = draw(st.sampled_from(["length", "lying", "none"]))
    if framing == "length":
        lines.append(b"Content-Length: %d" % len(body))
    elif framing == "lying":
        lines.append(b"Content-Length: %d" % draw(st.integers(0, 10 * LIMIT)))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.mark.usefixtures("recording")
def test_raw_http_fuzz_never_gets_a_5xx_nor_produces() -> None:
    with LiveApp(kafka_up=True) as live:
        port = live.client.server.port
        assert port is not None

        @hsettings(
            max_examples=200,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(raw_requests())
        def check(request: bytes) -> None:
            response = live.loop.run_until_complete(
                exchange(port, request, wait_s=0.5, to_close=True)
            )
            assert all(status < 500 for status in statuses_of(response)), response[:300]
            assert live.producer.sent == []  # nothing here is signed

        check()
