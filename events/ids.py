"""Deterministic event ids: the same platform object in the same workspace is the same event.

Redeliveries and the copies two owned accounts of one workspace receive collapse; two
workspaces that see one tweet keep their own event.
"""

from __future__ import annotations

import hashlib


def event_id(workspace: str, platform: str, object_key: str) -> str:
    """A 32-hex-digit id from (workspace, platform, platform object key)."""
    digest = hashlib.sha256(f"{workspace}\x1f{platform}\x1f{object_key}".encode()).hexdigest()
    return digest[:32]
