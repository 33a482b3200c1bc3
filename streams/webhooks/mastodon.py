"""Mastodon webhooks: `X-Hub-Signature: sha256=` + hex HMAC-SHA256(secret, raw body).

Mastodon's webhooks have no verification handshake; the secret is shown once when the webhook
is created in the admin interface (`mastodon_secret` in the workspace file).
"""

from __future__ import annotations

from collections.abc import Mapping

from rapport.workspaces import WorkspaceConfig
from streams.webhooks.base import (
    Reply,
    Verdict,
    any_matches,
    ascii_bytes,
    hex_hmac_sha256,
    no_secret,
)

SECRET_KEY = "mastodon_secret"
SIGNATURE_HEADER = "x-hub-signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hex_hmac_sha256(secret, body)


class MastodonProtocol:
    name = "mastodon"

    def handshake(
        self, workspace: WorkspaceConfig, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Reply | None:
        return None

    def verify(
        self, workspace: WorkspaceConfig, headers: Mapping[str, str], body: bytes, now: float
    ) -> Verdict:
        value = headers.get(SIGNATURE_HEADER)
        if not value:
            return Verdict.refuse(f"missing {SIGNATURE_HEADER} header")
        secrets = workspace.secrets_for(SECRET_KEY)
        if not secrets:
            return no_secret(SECRET_KEY)
        presented = ascii_bytes(value)
        expected = (signature(s, body).encode() for s in secrets)
        if presented is None or not any_matches(expected, presented.lower()):
            return Verdict.refuse("signature does not match")
        return Verdict.accept()

    def post_handshake(
        self, workspace: WorkspaceConfig, headers: Mapping[str, str], body: bytes
    ) -> Reply | None:
        return None


PROTOCOL = MastodonProtocol()
