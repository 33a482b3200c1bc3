"""The generic endpoint: Standard Webhooks (Svix) signatures, `whsec_` keys, the replay window."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from rapport.workspaces import WorkspaceConfig
from streams.webhooks import PROTOCOLS
from streams.webhooks.generic import (
    ID_HEADER,
    PROTOCOL,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    signing_key,
)

# The Standard Webhooks reference vector (svix/svix-webhooks library tests, "testSignFunctionWorks";
# MIT licence): the signature below is recomputed by hand in the first test.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = "1614265330"
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NOW = 1_700_000_000
BODY = b'{"id":"msg-1","platform":"email","kind":"email","occurred_at":1700000000,"actor":"a"}'


def workspace(*secrets: str, name: str = "acme") -> WorkspaceConfig:
    return WorkspaceConfig(name=name, secrets={"generic_secret": list(secrets)})


def headers(signature: str, msg_id: str = "msg_1", ts: int | str = NOW) -> dict[str, str]:
    return {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature}


def signed(secret: str, body: bytes = BODY, msg_id: str = "msg_1", ts: int = NOW) -> dict[str, str]:
    return headers(sign(secret, msg_id, str(ts), body), msg_id, ts)


def test_registered_under_generic_without_handshake() -> None:
    assert PROTOCOLS["generic"] is PROTOCOL and PROTOCOL.name == "generic"
    assert PROTOCOL.handshake(workspace("s"), {}, {}) is None
    assert PROTOCOL.post_handshake(workspace("s"), {}, BODY) is None


def test_the_standard_webhooks_vector_computed_by_hand() -> None:
    key = base64.b64decode(VECTOR_SECRET.removeprefix("whsec_"))
    content = f"{VECTOR_ID}.{VECTOR_TS}.".encode() + VECTOR_BODY
    by_hand = "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    assert by_hand == VECTOR_SIGNATURE
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    vector = headers(VECTOR_SIGNATURE, VECTOR_ID, VECTOR_TS)
    assert PROTOCOL.verify(workspace(VECTOR_SECRET), vector, VECTOR_BODY, int(VECTOR_TS)).ok
    late = PROTOCOL.verify(workspace(VECTOR_SECRET), vector, VECTOR_BODY, int(VECTOR_TS) + 301)
    assert not late.ok and late.status == 401 and late.refusal == "timestamp"


def test_whsec_secrets_are_base64_keys_and_others_are_their_bytes() -> None:
    assert signing_key("whsec_" + base64.b64encode(b"\x00\xffkey").decode()) == b"\x00\xffkey"
    assert signing_key("plain-secret") == b"plain-secret"
    assert signing_key("whsec_not base64!") is None
    # The same characters as a literal secret do not verify a whsec_-keyed signature.
    literal = VECTOR_SECRET.removeprefix("whsec_")
    vector = headers(VECTOR_SIGNATURE, VECTOR_ID, VECTOR_TS)
    assert not PROTOCOL.verify(workspace(literal), vector, VECTOR_BODY, int(VECTOR_TS)).ok
    # A malformed whsec_ secret authenticates nothing but does not break its rotation partner.
    ws = workspace("whsec_***", VECTOR_SECRET)
    assert PROTOCOL.verify(ws, vector, VECTOR_BODY, int(VECTOR_TS)).ok


def test_plain_secret_signature_by_hand() -> None:
    content = f"msg_1.{NOW}.".encode() + BODY
    mac = hmac.new(b"plain-secret", content, hashlib.sha256).digest()
    by_hand = "v1," + base64.b64encode(mac).decode()
    assert PROTOCOL.verify(workspace("plain-secret"), headers(by_hand), BODY, NOW).ok


def test_any_of_several_presented_signatures_may_match() -> None:
    good = sign("s", "msg_1", str(NOW), BODY)
    for listed in (f"v1,bm9wZQ== {good}", f"{good} v1,bm9wZQ==", f"v1a,{good[3:]} {good}"):
        assert PROTOCOL.verify(workspace("s"), headers(listed), BODY, NOW).ok
    only_other_versions = f"v1a,{good[3:]} v2,{good[3:]}"
    assert not PROTOCOL.verify(workspace("s"), headers(only_other_versions), BODY, NOW).ok


@pytest.mark.parametrize("ts", ["", "later", "1.5", "-5"])
def test_bad_timestamps(ts: str) -> None:
    verdict = PROTOCOL.verify(workspace("s"), headers("v1,AAAA", ts=ts), BODY, NOW)
    assert not verdict.ok
    if ts:
        assert verdict.status == 400 and verdict.refusal == "timestamp"
    else:
        assert verdict.status == 401 and "missing" in verdict.reason


def test_window_is_five_minutes_both_ways() -> None:
    ws = workspace("s")
    for ts, ok in ((NOW - 300, True), (NOW + 300, True), (NOW - 301, False), (NOW + 301, False)):
        verdict = PROTOCOL.verify(ws, signed("s", ts=ts), BODY, NOW)
        assert verdict.ok is ok
        if not ok:
            assert verdict.status == 401 and verdict.refusal == "timestamp"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: {k: v for k, v in h.items() if k != SIGNATURE_HEADER}, "missing"),
        (lambda h: {k: v for k, v in h.items() if k != ID_HEADER}, "missing"),
        (lambda h: {**h, ID_HEADER: "msg_2"}, "does not match"),  # id is signed
        (lambda h: {**h, SIGNATURE_HEADER: h[SIGNATURE_HEADER][3:]}, "does not match"),
        (lambda h: {**h, SIGNATURE_HEADER: "v1,\udcff"}, "does not match"),
    ],
)
def test_wrong_or_missing_signatures_are_refused(mutate: object, reason: str) -> None:
    assert callable(mutate)
    verdict = PROTOCOL.verify(workspace("s3cret"), mutate(signed("s3cret")), BODY, NOW)
    assert not verdict.ok and verdict.status == 401 and verdict.refusal == "signature"
    assert reason in verdict.reason and "s3cret" not in verdict.reason


def test_body_is_signed_byte_for_byte() -> None:
    h = signed("s")
    assert not PROTOCOL.verify(workspace("s"), h, BODY + b" ", NOW).ok


def test_rotation_accepts_both_active_secrets() -> None:
    ws = workspace("new", "old")
    for secret in ("new", "old"):
        assert PROTOCOL.verify(ws, signed(secret), BODY, NOW).ok


def test_another_workspaces_secret_does_not_authenticate() -> None:
    theirs = signed("their-secret")
    assert PROTOCOL.verify(workspace("their-secret", name="other"), theirs, BODY, NOW).ok
    assert not PROTOCOL.verify(workspace("our-secret"), theirs, BODY, NOW).ok
    assert not PROTOCOL.verify(WorkspaceConfig(name="bare"), theirs, BODY, NOW).ok
