"""X Account Activity transport: CRC answers and signatures, on the published test vectors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from rapport.workspaces import WorkspaceConfig
from streams.webhooks.x import PROTOCOL, SIGNATURE_HEADER, crc_response, signature
from tests.conftest import FIXTURES

VECTORS = json.loads((FIXTURES / "signatures" / "vectors.json").read_text())["x"]


def workspace(*secrets: str, name: str = "acme") -> WorkspaceConfig:
    return WorkspaceConfig(name=name, secrets={"x_consumer_secret": list(secrets)})


@pytest.mark.parametrize("case", VECTORS["cases"], ids=["form", "json"])
def test_autohook_vectors_verify(case: dict[str, str]) -> None:
    body = case["body"].encode()
    assert signature(VECTORS["consumer_secret"], body) == case["signature"]
    verdict = PROTOCOL.verify(
        workspace(VECTORS["consumer_secret"]), {SIGNATURE_HEADER: case["signature"]}, body, 0.0
    )
    assert verdict.ok


def test_crc_is_base64_hmac_of_the_token() -> None:
    expected = base64.b64encode(hmac.new(b"secret", b"challenge", hashlib.sha256).digest()).decode()
    assert crc_response("secret", "challenge") == f"sha256={expected}"
    reply = PROTOCOL.handshake(workspace("secret"), {"crc_token": "challenge"}, {})
    assert reply is not None and reply.status == 200
    assert reply.body == {"response_token": f"sha256={expected}"}


def test_get_without_crc_token_is_not_a_handshake() -> None:
    assert PROTOCOL.handshake(workspace("secret"), {}, {}) is None


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({SIGNATURE_HEADER: "sha256=AAAA"}, "does not match"),
        ({SIGNATURE_HEADER: ""}, "missing"),
    ],
)
def test_wrong_or_missing_signatures_are_refused(headers: dict[str, str], reason: str) -> None:
    verdict = PROTOCOL.verify(workspace("secret"), headers, b"{}", 0.0)
    assert not verdict.ok and verdict.status == 401 and reason in verdict.reason
    assert "secret" not in verdict.reason.replace("x_consumer_secret", "")


def test_rotation_accepts_old_and_new_secret_and_answers_crc_with_the_first() -> None:
    ws = workspace("new", "old")
    for secret in ("new", "old"):
        assert PROTOCOL.verify(ws, {SIGNATURE_HEADER: signature(secret, b"{}")}, b"{}", 0.0).ok
    reply = PROTOCOL.handshake(ws, {"crc_token": "t"}, {})
    assert reply is not None and reply.body == {"response_token": crc_response("new", "t")}


def test_another_workspaces_secret_does_not_authenticate() -> None:
    body = b'{"for_user_id": "1"}'
    theirs = signature("their-secret", body)
    assert not PROTOCOL.verify(workspace("our-secret"), {SIGNATURE_HEADER: theirs}, body, 0.0).ok


def test_a_workspace_without_secret_refuses_everything() -> None:
    ws = WorkspaceConfig(name="bare")
    assert not PROTOCOL.verify(ws, {SIGNATURE_HEADER: signature("", b"{}")}, b"{}", 0.0).ok
    reply = PROTOCOL.handshake(ws, {"crc_token": "t"}, {})
    assert reply is not None and reply.status == 403
