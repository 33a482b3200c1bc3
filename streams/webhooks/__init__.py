"""Webhook transport protocols: one module per platform for handshakes and signatures.

Content (what a body means) is the adapters' business in `events/adapters/`; this package only
decides whether a request is authentic and how to answer a platform's verification handshake.
"""

from __future__ import annotations

from streams.webhooks import x
from streams.webhooks.base import Reply, Verdict, WebhookProtocol

PROTOCOLS: dict[str, WebhookProtocol] = {
    "x": x.PROTOCOL,
}

__all__ = ["PROTOCOLS", "Reply", "Verdict", "WebhookProtocol"]
