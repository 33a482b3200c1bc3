"""Webhook transport protocols: one module per platform for handshakes and signatures.

Content (what a body means) is the adapters' business in `events/adapters/`; this package only
decides whether a request is authentic and how to answer a platform's verification handshake.
"""

from __future__ import annotations

from streams.webhooks import generic, linkedin, mastodon, meta, slack, x
from streams.webhooks.base import REFUSAL_CLASSES, Reply, Verdict, WebhookProtocol

PROTOCOLS: dict[str, WebhookProtocol] = {
    "x": x.PROTOCOL,
    "meta": meta.PROTOCOL,
    "linkedin": linkedin.PROTOCOL,
    "slack": slack.PROTOCOL,
    "mastodon": mastodon.PROTOCOL,
    "generic": generic.PROTOCOL,
}

__all__ = ["PROTOCOLS", "REFUSAL_CLASSES", "Reply", "Verdict", "WebhookProtocol"]
