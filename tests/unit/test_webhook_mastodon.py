"""Mastodon webhooks: `X-Hub-Signature: sha256=<hex>`, no handshake."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from rapport.workspaces import WorkspaceConfig
from streams.webhooks import PROTOCOLS
from streams.webhooks.mastodon import PROTOCOL, SIGNATURE_HEADER, signature

BODY = b'{"event":"status.created","created_at":"2024-05-02T09:15:00.000Z","object":{"id":"1"}}'


def workspace(*secrets: str, name: str = "acme") -> WorkspaceConfig:
    return WorkspaceConfig(name=name, secrets={"mastodon_secret": list(secrets)})


def test_registered_under_mastodon_without_handshake() -> None:
    assert PROTOCOLS["mastodon"] is PROTOCOL and PROTOCOL.name == "mastodon"
    assert PROTOCOL.handshake(workspace("s"), {"hub.challenge": "c"}, {}) is None
    assert PROTOCOL.post_handshake(workspace("s"), {}, BODY) is None


def test_signature_is_sha256_prefixed_hex_hmac() -> None:
    by_hand = hmac.new(b"masto-secret", BODY, hashlib.sha256).hexdigest()
    assert signature("masto-secret", BODY) == f"sha256={by_hand}"
    ws = workspace("masto-secret")
    assert PROTOCOL.verify(ws, {SIGNATURE_HEADER: f"sha256={by_hand}"}, BODY, 0.0).ok


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({SIGNATURE_HEADER: ""}, "missing"),
        ({SIGNATURE_HEADER: "sha256=zz"}, "does not match"),
        ({SIGNATURE_HEADER: signature("masto-secret", b"{}")}, "does not match"),
        ({"x-hub-signature-256": signature("masto-secret", BODY)}, "missing"),
    ],
)
def test_wrong_or_missing_signatures_are_refused(headers: dict[str, str], reason: str) -> None:
    verdict = PROTOCOL.verify(workspace("masto-secret"), headers, BODY, 0.0)
    assert not verdict.ok and verdict.status == 401 and verdict.refusal == "signature"
    assert reason in verdict.reason and "masto-secret" not in verdict.reason


def test_rotation_accepts_both_active_secrets() -> None:
    ws = workspace("new", "old")
    for secret in ("new", "old"):
        assert PROTOCOL.verify(ws, {SIGNATURE_HEADER: signature(secret, BODY)}, BODY, 0.0).ok


def test_another_workspaces_secret_does_not_authenticate() -> None:
    theirs = {SIGNATURE_HEADER: signature("their-secret", BODY)}
    assert PROTOCOL.verify(workspace("their-secret", name="other"), theirs, BODY, 0.0).ok
    assert not PROTOCOL.verify(workspace("our-secret"), theirs, BODY, 0.0).ok
    assert not PROTOCOL.verify(WorkspaceConfig(name="bare"), theirs, BODY, 0.0).ok
