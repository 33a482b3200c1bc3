"""Meta Graph API webhooks: the hub.challenge handshake and `X-Hub-Signature-256`."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from rapport.workspaces import WorkspaceConfig
from streams.webhooks import PROTOCOLS
from streams.webhooks.meta import PROTOCOL, SIGNATURE_HEADER, signature

BODY = b'{"object":"page","entry":[{"id":"1","time":1700000000,"changes":[]}]}'


def workspace(
    secrets: tuple[str, ...] = ("app-secret",),
    tokens: tuple[str, ...] = ("verify-me",),
    name: str = "acme",
) -> WorkspaceConfig:
    return WorkspaceConfig(
        name=name, secrets={"meta_app_secret": list(secrets), "meta_verify_token": list(tokens)}
    )


def subscribe(token: str, challenge: str = "1158201444") -> dict[str, str]:
    return {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": challenge}


def test_registered_under_meta() -> None:
    assert PROTOCOLS["meta"] is PROTOCOL and PROTOCOL.name == "meta"


def test_signature_is_sha256_prefixed_hex_hmac_of_the_raw_body() -> None:
    by_hand = hmac.new(b"app-secret", BODY, hashlib.sha256).hexdigest()
    assert signature("app-secret", BODY) == f"sha256={by_hand}"
    assert PROTOCOL.verify(workspace(), {SIGNATURE_HEADER: f"sha256={by_hand}"}, BODY, 0.0).ok
    upper = f"sha256={by_hand.upper()}"  # hex digits are case-insensitive
    assert PROTOCOL.verify(workspace(), {SIGNATURE_HEADER: upper}, BODY, 0.0).ok


def test_handshake_echoes_the_challenge_as_plain_text() -> None:
    reply = PROTOCOL.handshake(workspace(), subscribe("verify-me"), {})
    assert reply is not None
    assert (reply.status, reply.body, reply.content_type) == (200, "1158201444", "text/plain")
    assert reply.refusal is None


@pytest.mark.parametrize("token", ["wrong", "", "verify-me ", "VERIFY-ME", "verify-m"])
def test_handshake_with_another_token_is_403(token: str) -> None:
    reply = PROTOCOL.handshake(workspace(), subscribe(token), {})
    assert reply is not None and reply.status == 403 and reply.refusal == "verify_token"
    assert "verify-me" not in str(reply.body)


def test_handshake_tokens_rotate_and_never_cross_workspaces() -> None:
    ws = workspace(tokens=("new-token", "old-token"))
    for token in ("new-token", "old-token"):
        reply = PROTOCOL.handshake(ws, subscribe(token, "42"), {})
        assert reply is not None and reply.status == 200 and reply.body == "42"
    other = workspace(tokens=("their-token",), name="other")
    reply = PROTOCOL.handshake(other, subscribe("new-token"), {})
    assert reply is not None and reply.status == 403


def test_handshake_shapes() -> None:
    assert PROTOCOL.handshake(workspace(), {}, {}) is None  # not a Meta verification request
    reply = PROTOCOL.handshake(workspace(), {**subscribe("verify-me"), "hub.mode": "x"}, {})
    assert reply is not None and reply.status == 400
    reply = PROTOCOL.handshake(workspace(), {"hub.mode": "subscribe", "hub.verify_token": "v"}, {})
    assert reply is not None and reply.status == 400
    bare = WorkspaceConfig(name="bare")
    reply = PROTOCOL.handshake(bare, subscribe(""), {})
    assert reply is not None and reply.status == 403


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({SIGNATURE_HEADER: ""}, "missing"),
        ({SIGNATURE_HEADER: "sha256=00"}, "does not match"),
        ({SIGNATURE_HEADER: signature("app-secret", BODY + b" ")}, "does not match"),
        ({SIGNATURE_HEADER: signature("app-secret", BODY)[7:]}, "does not match"),  # no prefix
        ({SIGNATURE_HEADER: "sha256=\udcff"}, "does not match"),  # undecodable header bytes
        # the SHA-1 header Meta's old sample app checks is not enough
        (
            {"x-hub-signature": "sha1=" + hmac.new(b"app-secret", BODY, "sha1").hexdigest()},
            "missing",
        ),
    ],
)
def test_wrong_or_missing_signatures_are_refused(headers: dict[str, str], reason: str) -> None:
    verdict = PROTOCOL.verify(workspace(), headers, BODY, 0.0)
    assert not verdict.ok and verdict.status == 401 and verdict.refusal == "signature"
    assert reason in verdict.reason and "app-secret" not in verdict.reason


def test_rotation_accepts_both_active_secrets() -> None:
    ws = workspace(secrets=("new", "old"))
    for secret in ("new", "old"):
        assert PROTOCOL.verify(ws, {SIGNATURE_HEADER: signature(secret, BODY)}, BODY, 0.0).ok
    assert not PROTOCOL.verify(ws, {SIGNATURE_HEADER: signature("older", BODY)}, BODY, 0.0).ok


def test_another_workspaces_secret_does_not_authenticate() -> None:
    theirs = {SIGNATURE_HEADER: signature("their-secret", BODY)}
    assert PROTOCOL.verify(workspace(name="other", secrets=("their-secret",)), theirs, BODY, 0.0).ok
    assert not PROTOCOL.verify(workspace(secrets=("our-secret",)), theirs, BODY, 0.0).ok


def test_a_workspace_without_secret_refuses_everything() -> None:
    ws = WorkspaceConfig(name="bare")
    verdict = PROTOCOL.verify(ws, {SIGNATURE_HEADER: signature("", BODY)}, BODY, 0.0)
    assert not verdict.ok and verdict.status == 401
    assert PROTOCOL.post_handshake(ws, {}, BODY) is None
