"""Slack Events API: `v0` signatures, the 5-minute window and `url_verification`."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from rapport.workspaces import WorkspaceConfig
from streams.webhooks import PROTOCOLS
from streams.webhooks.slack import PROTOCOL, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from tests.conftest import FIXTURES

VECTOR = json.loads((FIXTURES / "signatures" / "vectors.json").read_text())["slack"]
NOW = 1_700_000_000
BODY = b'{"type":"event_callback","event_id":"Ev1","event_time":1699999990,"event":{}}'


def workspace(*secrets: str, name: str = "acme") -> WorkspaceConfig:
    return WorkspaceConfig(name=name, secrets={"slack_signing_secret": list(secrets)})


def signed(secret: str, body: bytes, ts: int | str = NOW) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature(secret, str(ts), body)}


def test_registered_under_slack() -> None:
    assert PROTOCOLS["slack"] is PROTOCOL and PROTOCOL.name == "slack"
    assert PROTOCOL.handshake(workspace("s"), {"challenge": "c"}, {}) is None


def test_the_published_vector_verifies_at_its_own_timestamp() -> None:
    body = VECTOR["body"].encode()
    headers = {TIMESTAMP_HEADER: VECTOR["timestamp"], SIGNATURE_HEADER: VECTOR["signature"]}
    assert signature(VECTOR["signing_secret"], VECTOR["timestamp"], body) == VECTOR["signature"]
    now = float(VECTOR["timestamp"])
    assert PROTOCOL.verify(workspace(VECTOR["signing_secret"]), headers, body, now).ok
    assert PROTOCOL.verify(workspace(VECTOR["signing_secret"]), headers, body, now + 299).ok


def test_the_published_vector_replayed_later_is_refused() -> None:
    body = VECTOR["body"].encode()
    headers = {TIMESTAMP_HEADER: VECTOR["timestamp"], SIGNATURE_HEADER: VECTOR["signature"]}
    ws = workspace(VECTOR["signing_secret"])
    for later in (301, 3600, 10**6):  # the real "now" is years later
        verdict = PROTOCOL.verify(ws, headers, body, float(VECTOR["timestamp"]) + later)
        assert not verdict.ok and verdict.status == 401 and verdict.refusal == "timestamp"
        assert "window" in verdict.reason


def test_signature_is_hex_hmac_of_v0_timestamp_body() -> None:
    base = f"v0:{NOW}:".encode() + BODY
    by_hand = "v0=" + hmac.new(b"signing", base, hashlib.sha256).hexdigest()
    assert signature("signing", str(NOW), BODY) == by_hand
    assert PROTOCOL.verify(workspace("signing"), signed("signing", BODY), BODY, NOW).ok


def test_timestamps_in_the_future_beyond_the_window_are_refused() -> None:
    ws = workspace("signing")
    assert PROTOCOL.verify(ws, signed("signing", BODY, NOW + 300), BODY, NOW).ok
    verdict = PROTOCOL.verify(ws, signed("signing", BODY, NOW + 301), BODY, NOW)
    assert not verdict.ok and verdict.status == 401 and "future" in verdict.reason


@pytest.mark.parametrize("ts", ["soon", "1.7e9", "-1700000000", "0x10", "\uff11\uff17\uff10\uff10"])
def test_a_timestamp_that_is_not_epoch_seconds_is_a_400(ts: str) -> None:
    headers = {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: "v0=00"}
    verdict = PROTOCOL.verify(workspace("signing"), headers, BODY, NOW)
    assert not verdict.ok and verdict.status == 400 and verdict.refusal == "timestamp"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({TIMESTAMP_HEADER: str(NOW)}, "missing"),
        ({SIGNATURE_HEADER: signature("signing", str(NOW), BODY)}, "missing"),
        ({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "v0=abc"}, "does not match"),
        # signed at another time than the header says
        (
            {
                TIMESTAMP_HEADER: str(NOW),
                SIGNATURE_HEADER: signature("signing", str(NOW - 1), BODY),
            },
            "does not match",
        ),
        ({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "v0=\udcff"}, "does not match"),
    ],
)
def test_wrong_or_missing_signatures_are_refused(headers: dict[str, str], reason: str) -> None:
    verdict = PROTOCOL.verify(workspace("signing"), headers, BODY, NOW)
    assert not verdict.ok and verdict.status == 401 and verdict.refusal == "signature"
    assert reason in verdict.reason and "signing" not in verdict.reason


def test_rotation_accepts_both_active_secrets() -> None:
    ws = workspace("new", "old")
    for secret in ("new", "old"):
        assert PROTOCOL.verify(ws, signed(secret, BODY), BODY, NOW).ok
    assert not PROTOCOL.verify(ws, signed("retired", BODY), BODY, NOW).ok


def test_another_workspaces_secret_does_not_authenticate() -> None:
    theirs = signed("their-secret", BODY)
    assert PROTOCOL.verify(workspace("their-secret", name="other"), theirs, BODY, NOW).ok
    assert not PROTOCOL.verify(workspace("our-secret"), theirs, BODY, NOW).ok
    assert not PROTOCOL.verify(WorkspaceConfig(name="bare"), theirs, BODY, NOW).ok


def test_url_verification_is_answered_with_the_challenge() -> None:
    body = json.dumps(
        {"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aB", "type": "url_verification"}
    ).encode()
    ws = workspace("signing")
    assert PROTOCOL.verify(ws, signed("signing", body), body, NOW).ok
    reply = PROTOCOL.post_handshake(ws, signed("signing", body), body)
    assert reply is not None and reply.status == 200 and reply.body == {"challenge": "3eZbrw1aB"}


@pytest.mark.parametrize(
    "body",
    [
        BODY,
        b'{"type":"event_callback","event":{"text":"url_verification"}}',
        b'"url_verification"',
        b'{"type": "url_verification", broken',
        b'[{"type":"url_verification","challenge":"c"}]',
    ],
)
def test_event_deliveries_are_not_handshakes(body: bytes) -> None:
    assert PROTOCOL.post_handshake(workspace("signing"), {}, body) is None


def test_url_verification_without_a_string_challenge_is_a_400() -> None:
    body = b'{"type":"url_verification","challenge":42}'
    reply = PROTOCOL.post_handshake(workspace("signing"), {}, body)
    assert reply is not None and reply.status == 400
