"""The interface every platform's webhook protocol implements, and shared HMAC helpers."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from rapport.workspaces import WorkspaceConfig


@dataclass(frozen=True)
class Reply:
    """An answer the ingest gives without producing anything (handshakes, refusals)."""

    status: int
    body: Any
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """Whether a delivery is authentic; `reason` says why not (never echoing secrets)."""

    ok: bool
    reason: str = ""
    status: int = 401

    @classmethod
    def accept(cls) -> Verdict:
        return cls(True)

    @classmethod
    def refuse(cls, reason: str, status: int = 401) -> Verdict:
        return cls(False, reason, status)


class WebhookProtocol(Protocol):
    """A platform's delivery protocol: verification handshakes and signature checks."""

    name: str

    def handshake(
        self, workspace: WorkspaceConfig, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Reply | None:
        """Answer a GET verification request, or None if this GET is not one."""

    def verify(
        self, workspace: WorkspaceConfig, headers: Mapping[str, str], body: bytes, now: float
    ) -> Verdict:
        """Check the delivery's signature over the raw bytes against every active secret."""

    def post_handshake(
        self, workspace: WorkspaceConfig, headers: Mapping[str, str], body: bytes
    ) -> Reply | None:
        """Answer a verification sent as an (already authenticated) POST, e.g. Slack's."""


def hmac_sha256(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def any_matches(candidates: Iterable[bytes], presented: bytes) -> bool:
    """Constant-time comparison against every active secret's expected value (no early exit)."""
    found = False
    for expected in candidates:
        found |= hmac.compare_digest(expected, presented)
    return found


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
