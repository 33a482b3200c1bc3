"""LinkedIn webhooks: the challengeCode validation and `X-LI-Signature`."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from rapport.workspaces import WorkspaceConfig
from streams.webhooks import PROTOCOLS
from streams.webhooks.linkedin import PROTOCOL, SIGNATURE_HEADER, challenge_response, signature

BODY = b'{"type":"ORGANIZATION_SOCIAL_ACTION_NOTIFICATIONS","notifications":[]}'
CODE = "890e4665-4dfe-4ab1-b689-ed553bceeed0"


def workspace(*secrets: str, name: str = "acme") -> WorkspaceConfig:
    return WorkspaceConfig(name=name, secrets={"linkedin_client_secret": list(secrets)})


def by_hand(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def test_registered_under_linkedin() -> None:
    assert PROTOCOLS["linkedin"] is PROTOCOL and PROTOCOL.name == "linkedin"


def test_challenge_is_answered_with_the_hex_hmac_of_the_code() -> None:
    assert challenge_response("client-secret", CODE) == by_hand("client-secret", CODE.encode())
    reply = PROTOCOL.handshake(workspace("client-secret"), {"challengeCode": CODE}, {})
    assert reply is not None and reply.status == 200 and reply.content_type == "application/json"
    assert reply.body == {
        "challengeCode": CODE,
        "challengeResponse": by_hand("client-secret", CODE.encode()),
    }


def test_challenge_uses_the_first_secret_while_rotating_and_needs_one() -> None:
    reply = PROTOCOL.handshake(workspace("new", "old"), {"challengeCode": "c"}, {})
    assert reply is not None and reply.body["challengeResponse"] == by_hand("new", b"c")
    assert PROTOCOL.handshake(workspace("s"), {}, {}) is None
    reply = PROTOCOL.handshake(WorkspaceConfig(name="bare"), {"challengeCode": "c"}, {})
    assert reply is not None and reply.status == 403


@pytest.mark.parametrize(
    "form",
    [
        lambda h: h,
        lambda h: f"hmacsha256={h}",
        lambda h: h.upper(),
        lambda h: f"HmacSHA256={h}",
        lambda h: f" {h} ",
    ],
    ids=["bare", "prefixed", "upper", "prefix-case", "padded"],
)
def test_signature_is_hex_hmac_with_or_without_prefix(form: object) -> None:
    assert callable(form)
    hexsig = by_hand("client-secret", BODY)
    assert signature("client-secret", BODY) == hexsig
    verdict = PROTOCOL.verify(workspace("client-secret"), {SIGNATURE_HEADER: form(hexsig)}, BODY, 0)
    assert verdict.ok


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({SIGNATURE_HEADER: ""}, "missing"),
        ({SIGNATURE_HEADER: "hmacsha256="}, "does not match"),
        ({SIGNATURE_HEADER: "sha256=" + "0" * 64}, "does not match"),
        ({SIGNATURE_HEADER: by_hand("client-secret", BODY + b"\n")}, "does not match"),
        ({SIGNATURE_HEADER: "\udcff"}, "does not match"),
    ],
)
def test_wrong_or_missing_signatures_are_refused(headers: dict[str, str], reason: str) -> None:
    verdict = PROTOCOL.verify(workspace("client-secret"), headers, BODY, 0.0)
    assert not verdict.ok and verdict.status == 401 and verdict.refusal == "signature"
    assert reason in verdict.reason and "client-secret" not in verdict.reason


def test_rotation_accepts_both_active_secrets() -> None:
    ws = workspace("new", "old")
    for secret in ("new", "old"):
        assert PROTOCOL.verify(ws, {SIGNATURE_HEADER: signature(secret, BODY)}, BODY, 0.0).ok


def test_another_workspaces_secret_does_not_authenticate() -> None:
    theirs = {SIGNATURE_HEADER: signature("their-secret", BODY)}
    assert PROTOCOL.verify(workspace("their-secret", name="other"), theirs, BODY, 0.0).ok
    assert not PROTOCOL.verify(workspace("our-secret"), theirs, BODY, 0.0).ok
    assert not PROTOCOL.verify(WorkspaceConfig(name="bare"), theirs, BODY, 0.0).ok
