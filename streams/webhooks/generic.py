"""The generic signed JSON endpoint, signed the Standard Webhooks (Svix) way.

Headers: `webhook-id`, `webhook-timestamp` (integer epoch seconds, within five minutes either
way) and `webhook-signature`, a space-separated list of `v1,<base64 HMAC-SHA256(key,
"{id}.{timestamp}.{body}")>` (any one matching any active secret authenticates; other versions,
e.g. the asymmetric `v1a`, are ignored). A `generic_secret` starting with `whsec_` is the
Standard Webhooks form: the key is the base64 decoding of the rest; any other secret is used as
its UTF-8 bytes. See docs/generic-webhook.md.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from rapport.workspaces import WorkspaceConfig
from streams.webhooks.base import (
    NoHandshakes,
    Verdict,
    any_matches,
    ascii_bytes,
    b64,
    hmac_sha256,
    no_secret,
    parse_timestamp,
)

SECRET_KEY = "generic_secret"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
WINDOW_S = 5 * 60
SECRET_PREFIX = "whsec_"
MAX_SIGNATURES = 16  # a rotation presents a few; more is not a signature header


def signing_key(secret: str) -> bytes | None:
    """The HMAC key of a secret: base64-decoded after `whsec_`, else its UTF-8 bytes.

    None for a `whsec_` secret that is not valid base64 (it can authenticate nothing).
    """
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            return None
    return secret.encode()


def sign(secret: str | bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """`v1,<base64>` for one secret (a `whsec_` string or a raw key)."""
    key = signing_key(secret) if isinstance(secret, str) else secret
    if key is None:
        raise ValueError("a whsec_ secret must be base64 after the prefix")
    return "v1," + b64(hmac_sha256(key, f"{msg_id}.{timestamp}.".encode() + body))


class GenericProtocol(NoHandshakes):
    name = "generic"

    def verify(
        self, workspace: WorkspaceConfig, headers: Mapping[str, str], body: bytes, now: float
    ) -> Verdict:
        msg_id = headers.get(ID_HEADER)
        value = headers.get(SIGNATURE_HEADER)
        if not value:
            return Verdict.refuse(f"missing {SIGNATURE_HEADER} header")
        if not msg_id or not msg_id.strip():
            return Verdict.refuse(f"missing {ID_HEADER} header")
        timestamp = headers.get(TIMESTAMP_HEADER)
        refused = parse_timestamp(timestamp, TIMESTAMP_HEADER, now, WINDOW_S)
        if refused is not None:
            return refused
        assert timestamp is not None
        secrets = workspace.secrets_for(SECRET_KEY)
        if not secrets:
            return no_secret(SECRET_KEY)
        presented_all = ascii_bytes(value)
        msg_id_bytes = ascii_bytes(msg_id)
        if presented_all is None or msg_id_bytes is None:
            return Verdict.refuse("signature does not match")
        message = msg_id_bytes + b"." + timestamp.strip().encode() + b"." + body
        expected = [
            b"v1," + base64.b64encode(hmac_sha256(key, message))
            for key in (signing_key(s) for s in secrets)
            if key is not None
        ]
        presented = [p for p in presented_all.split() if p.startswith(b"v1,")][:MAX_SIGNATURES]
        found = False
        for candidate in presented:
            found |= any_matches(expected, candidate)
        if not found:
            return Verdict.refuse("signature does not match")
        return Verdict.accept()


PROTOCOL = GenericProtocol()
