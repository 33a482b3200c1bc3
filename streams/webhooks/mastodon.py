"""Mastodon webhooks: `X-Hub-Signature: sha256=` + hex HMAC-SHA256(secret, raw body).

Mastodon's webhooks have no verification handshake; the secret is shown once when the webhook
is created in the admin interface (`mastodon_secret` in the workspace file).
"""

from __future__ import annotations

from collections.abc import Mapping

from rapport.workspaces import WorkspaceConfig
from streams.webhooks.base import (
    NoHandshakes,
    Verdict,
    hex_hmac_sha256,
    verify_header_signature,
)

SECRET_KEY = "mastodon_secret"
SIGNATURE_HEADER = "x-hub-signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hex_hmac_sha256(secret, body)


class MastodonProtocol(NoHandshakes):
    name = "mastodon"

    def verify(
        self, workspace: WorkspaceConfig, headers: Mapping[str, str], body: bytes, now: float
    ) -> Verdict:
        return verify_header_signature(
            workspace, headers, body, header=SIGNATURE_HEADER, secret_key=SECRET_KEY,
            sign=signature, canonical=bytes.lower,
        )  # fmt: skip


PROTOCOL = MastodonProtocol()
