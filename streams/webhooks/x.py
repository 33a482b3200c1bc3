"""X Account Activity API: CRC handshake and `x-twitter-webhooks-signature`.

CRC: `GET ?crc_token=T` is answered with `{"response_token": "sha256=" + base64(HMAC-SHA256(
consumer secret, T))}`. Deliveries carry `sha256=` + base64 HMAC-SHA256(consumer secret, body).
Several consumer secrets may be active while one rotates; the CRC answer uses the first. A token
that could be a JSON body is refused (400): its answer would be that body's signature.
"""

from __future__ import annotations

from collections.abc import Mapping

from rapport.workspaces import WorkspaceConfig
from streams.webhooks.base import (
    Reply,
    Verdict,
    b64,
    could_be_a_body,
    hmac_sha256,
    verify_header_signature,
)

SECRET_KEY = "x_consumer_secret"
SIGNATURE_HEADER = "x-twitter-webhooks-signature"


def crc_response(secret: str, crc_token: str) -> str:
    return "sha256=" + b64(hmac_sha256(secret, crc_token.encode()))


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + b64(hmac_sha256(secret, body))


class XProtocol:
    name = "x"

    def handshake(
        self, workspace: WorkspaceConfig, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Reply | None:
        token = query.get("crc_token")
        if token is None:
            return None
        if could_be_a_body(token):  # the answer would sign that body (see could_be_a_body)
            return Reply(400, {"error": "crc_token is not a CRC token"}, refusal="malformed")
        secrets = workspace.secrets_for(SECRET_KEY)
        if not secrets:
            return Reply(403, {"error": "no x_consumer_secret configured for this workspace"})
        return Reply(200, {"response_token": crc_response(secrets[0], token)})

    def verify(
        self, workspace: WorkspaceConfig, headers: Mapping[str, str], body: bytes, now: float
    ) -> Verdict:
        return verify_header_signature(
            workspace, headers, body, header=SIGNATURE_HEADER, secret_key=SECRET_KEY,
            sign=signature, canonical=lambda presented: presented,
        )  # fmt: skip

    def post_handshake(
        self, workspace: WorkspaceConfig, headers: Mapping[str, str], body: bytes
    ) -> Reply | None:
        return None


PROTOCOL = XProtocol()
