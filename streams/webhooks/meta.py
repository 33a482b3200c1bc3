"""Meta (Facebook Pages, Messenger, Instagram) Graph API webhooks.

Verification: `GET ?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C` is answered with the
bare challenge (200, text/plain) when T equals one of the workspace's `meta_verify_token`
secrets, else 403. Deliveries carry `X-Hub-Signature-256: sha256=` + hex HMAC-SHA256(app secret,
raw body); the old SHA-1 `X-Hub-Signature` is not accepted.
"""

from __future__ import annotations

from collections.abc import Mapping

from rapport.workspaces import WorkspaceConfig
from streams.webhooks.base import (
    Reply,
    Verdict,
    any_matches,
    hex_hmac_sha256,
    verify_header_signature,
)

SECRET_KEY = "meta_app_secret"
VERIFY_TOKEN_KEY = "meta_verify_token"
SIGNATURE_HEADER = "x-hub-signature-256"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hex_hmac_sha256(secret, body)


class MetaProtocol:
    name = "meta"

    def handshake(
        self, workspace: WorkspaceConfig, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Reply | None:
        mode = query.get("hub.mode")
        if mode is None:
            return None
        if mode != "subscribe":
            return Reply(400, {"error": "hub.mode must be subscribe"}, refusal="malformed")
        challenge = query.get("hub.challenge")
        if not challenge:
            return Reply(400, {"error": "missing hub.challenge"}, refusal="malformed")
        presented = query.get("hub.verify_token", "").encode("utf-8", "surrogatepass")
        tokens = workspace.secrets_for(VERIFY_TOKEN_KEY)
        if not presented or not any_matches((t.encode() for t in tokens), presented):
            return Reply(403, {"error": "hub.verify_token does not match"}, refusal="verify_token")
        return Reply(
            200, challenge, content_type="text/plain", headers={"X-Content-Type-Options": "nosniff"}
        )

    def verify(
        self, workspace: WorkspaceConfig, headers: Mapping[str, str], body: bytes, now: float
    ) -> Verdict:
        return verify_header_signature(
            workspace, headers, body, header=SIGNATURE_HEADER, secret_key=SECRET_KEY,
            sign=signature, canonical=bytes.lower,
        )  # fmt: skip

    def post_handshake(
        self, workspace: WorkspaceConfig, headers: Mapping[str, str], body: bytes
    ) -> Reply | None:
        return None


PROTOCOL = MetaProtocol()
