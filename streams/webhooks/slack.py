"""Slack Events API: `X-Slack-Signature` over `v0:{timestamp}:{body}` and `url_verification`.

Deliveries carry `X-Slack-Request-Timestamp` (epoch seconds) and `X-Slack-Signature: v0=` + hex
HMAC-SHA256(signing secret, `v0:` + timestamp + `:` + raw body). A timestamp more than five
minutes old (a replay) or ahead is refused with 401; one that is not a number is a 400.
Slack verifies the URL with a signed POST `{"type": "url_verification", "challenge": C}`,
answered after the signature check with `{"challenge": C}`: the only body the ingest parses,
and only at the top level.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from rapport.workspaces import WorkspaceConfig
from streams.webhooks.base import (
    Reply,
    Verdict,
    any_matches,
    ascii_bytes,
    hex_hmac_sha256,
    no_secret,
    parse_timestamp,
)

SECRET_KEY = "slack_signing_secret"
SIGNATURE_HEADER = "x-slack-signature"
TIMESTAMP_HEADER = "x-slack-request-timestamp"
WINDOW_S = 5 * 60
_URL_VERIFICATION = b'"url_verification"'
_MAX_VERIFICATION_BODY = 4096


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return "v0=" + hex_hmac_sha256(secret, b"v0:" + timestamp.encode() + b":" + body)


class SlackProtocol:
    name = "slack"

    def handshake(
        self, workspace: WorkspaceConfig, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Reply | None:
        return None  # Slack verifies with a signed POST (see post_handshake)

    def verify(
        self, workspace: WorkspaceConfig, headers: Mapping[str, str], body: bytes, now: float
    ) -> Verdict:
        value = headers.get(SIGNATURE_HEADER)
        if not value:
            return Verdict.refuse(f"missing {SIGNATURE_HEADER} header")
        timestamp = headers.get(TIMESTAMP_HEADER)
        refused = parse_timestamp(timestamp, TIMESTAMP_HEADER, now, WINDOW_S)
        if refused is not None:
            return refused
        assert timestamp is not None
        secrets = workspace.secrets_for(SECRET_KEY)
        if not secrets:
            return no_secret(SECRET_KEY)
        presented = ascii_bytes(value)
        expected = (signature(s, timestamp.strip(), body).encode() for s in secrets)
        if presented is None or not any_matches(expected, presented.lower()):
            return Verdict.refuse("signature does not match")
        return Verdict.accept()

    def post_handshake(
        self, workspace: WorkspaceConfig, headers: Mapping[str, str], body: bytes
    ) -> Reply | None:
        if len(body) > _MAX_VERIFICATION_BODY or _URL_VERIFICATION not in body:
            return None  # an event delivery: not parsed here
        try:
            payload = json.loads(body)
        except ValueError:
            return None
        if not isinstance(payload, dict) or payload.get("type") != "url_verification":
            return None
        challenge = payload.get("challenge")
        if not isinstance(challenge, str):
            return Reply(400, {"error": "url_verification without a challenge string"})
        return Reply(200, {"challenge": challenge})


PROTOCOL = SlackProtocol()
