"""LinkedIn webhooks (organization social actions).

Validation: `GET ?challengeCode=C` is answered with `{"challengeCode": C, "challengeResponse":
hex HMAC-SHA256(client secret, C)}` within 3 s (the first active secret answers while one
rotates). Deliveries carry `X-LI-Signature`, the hex HMAC-SHA256(client secret, raw body);
LinkedIn documents it in places as `hmacsha256=` + hex, so both forms are accepted. A
challengeCode that could be a JSON body is refused (400): its answer would be that body's signature.
"""

from __future__ import annotations

from collections.abc import Mapping

from rapport.workspaces import WorkspaceConfig
from streams.webhooks.base import (
    Reply,
    Verdict,
    could_be_a_body,
    hex_hmac_sha256,
    verify_header_signature,
)

SECRET_KEY = "linkedin_client_secret"
SIGNATURE_HEADER = "x-li-signature"
PREFIX = b"hmacsha256="


def challenge_response(secret: str, challenge_code: str) -> str:
    return hex_hmac_sha256(secret, challenge_code.encode())


def signature(secret: str, body: bytes) -> str:
    return hex_hmac_sha256(secret, body)


def _without_prefix(presented: bytes) -> bytes:
    """Bare hex or `hmacsha256=` + hex (both appear in LinkedIn's documentation)."""
    presented = presented.lower()
    return presented[len(PREFIX) :] if presented.startswith(PREFIX) else presented


class LinkedInProtocol:
    name = "linkedin"

    def handshake(
        self, workspace: WorkspaceConfig, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Reply | None:
        code = query.get("challengeCode")
        if code is None:
            return None
        if could_be_a_body(code):  # the answer would sign that body (see could_be_a_body)
            return Reply(
                400, {"error": "challengeCode is not a challenge code"}, refusal="malformed"
            )
        secrets = workspace.secrets_for(SECRET_KEY)
        if not secrets:
            return Reply(403, {"error": f"no {SECRET_KEY} configured for this workspace"})
        return Reply(
            200, {"challengeCode": code, "challengeResponse": challenge_response(secrets[0], code)}
        )

    def verify(
        self, workspace: WorkspaceConfig, headers: Mapping[str, str], body: bytes, now: float
    ) -> Verdict:
        return verify_header_signature(
            workspace, headers, body, header=SIGNATURE_HEADER, secret_key=SECRET_KEY,
            sign=signature, canonical=_without_prefix,
        )  # fmt: skip

    def post_handshake(
        self, workspace: WorkspaceConfig, headers: Mapping[str, str], body: bytes
    ) -> Reply | None:
        return None


PROTOCOL = LinkedInProtocol()
