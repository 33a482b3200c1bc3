"""The interface every platform's webhook protocol implements, and shared HMAC helpers."""

from __future__ import annotations

import base64
import functools
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from rapport.workspaces import WorkspaceConfig

# Why a request was refused, as a small fixed set (a Prometheus label: never workspace-controlled).
REFUSAL_CLASSES = (
    "signature",
    "verify_token",
    "timestamp",
    "too_large",
    "content_type",
    "malformed",
    "not_found",
)


@dataclass(frozen=True)
class Reply:
    """An answer the ingest gives without producing anything (handshakes, refusals).

    `refusal` names the refusal class (one of REFUSAL_CLASSES) when the reply refuses a request.
    """

    status: int
    body: Any
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    refusal: str | None = None


@dataclass(frozen=True)
class Verdict:
    """Whether a delivery is authentic; `reason` says why not (never echoing secrets).

    `refusal` is the reason's class for metrics: `signature` (missing or wrong), `timestamp`
    (outside the replay window, or not a number: then status 400) or `malformed`.
    """

    ok: bool
    reason: str = ""
    status: int = 401
    refusal: str = "signature"

    @classmethod
    def accept(cls) -> Verdict:
        return _ACCEPTED  # frozen, so one instance serves every delivery

    @classmethod
    def refuse(cls, reason: str, status: int = 401, refusal: str = "signature") -> Verdict:
        return cls(False, reason, status, refusal)


_ACCEPTED = Verdict(True)


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


@functools.lru_cache(maxsize=1024)
def _keyed_sha256(key: bytes) -> hmac.HMAC:
    """HMAC-SHA256 with the key already absorbed (the hash of its inner and outer pads)."""
    return hmac.new(key, digestmod="sha256")


def hmac_sha256(secret: str | bytes, message: bytes) -> bytes:
    """HMAC-SHA256(secret, message), from a keyed state per secret (copied, never mutated).

    Copying the keyed state skips hashing the padded key on every delivery and OpenSSL's
    per-call algorithm lookup: about 1 us instead of 2-3 us. The cache holds the keyed states
    of the secrets the workspace file already holds, bounded for rotations.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    mac = _keyed_sha256(key).copy()
    mac.update(message)
    return mac.digest()


def hex_hmac_sha256(secret: str | bytes, message: bytes) -> str:
    return hmac_sha256(secret, message).hex()


def any_matches(candidates: Iterable[bytes], presented: bytes) -> bool:
    """Constant-time comparison against every active secret's expected value (no early exit)."""
    found = False
    for expected in candidates:
        found |= hmac.compare_digest(expected, presented)
    return found


def ascii_bytes(value: str) -> bytes | None:
    """A header value as bytes for a comparison; None when it is not ASCII (never a match)."""
    try:
        return value.strip().encode("ascii")
    except UnicodeEncodeError:
        return None


def could_be_a_body(token: str) -> bool:
    """Whether a handshake token could be a JSON delivery body (an object or an array).

    X's CRC and LinkedIn's challenge answer HMAC(secret, token) with the very key and function
    that sign deliveries, so answering an arbitrary token would sign any body for anyone who
    knows the URL. Real tokens are opaque (base64, UUIDs); refusing those holding `{` or `[`
    refuses every JSON object or array, so no answer is ever a usable delivery signature.
    """
    return "{" in token or "[" in token


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def parse_timestamp(value: str | None, name: str, now: float, window_s: float) -> Verdict | None:
    """Check a replay-window timestamp header (integer epoch seconds); None when it is fine.

    Not a number is malformed (400); older than the window or further in the future than the
    window is refused (401). Both are counted as `timestamp` refusals.
    """
    if value is None or not value.strip():
        return Verdict.refuse(f"missing {name} header")
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 12):
        return Verdict.refuse(
            f"{name} must be integer epoch seconds", status=400, refusal="timestamp"
        )
    skew = now - int(text)
    if skew > window_s:
        return Verdict.refuse(
            f"{name} is {int(skew)} s old, outside the {int(window_s)} s window (replay?)",
            refusal="timestamp",
        )
    if skew < -window_s:
        return Verdict.refuse(
            f"{name} is {int(-skew)} s in the future, outside the {int(window_s)} s window",
            refusal="timestamp",
        )
    return None


def no_secret(key: str) -> Verdict:
    return Verdict.refuse(f"no {key} configured for this workspace")


def verify_header_signature(
    workspace: WorkspaceConfig,
    headers: Mapping[str, str],
    body: bytes,
    *,
    header: str,
    secret_key: str,
    sign: Callable[[str, bytes], str],
    canonical: Callable[[bytes], bytes] = lambda presented: presented,
) -> Verdict:
    """The common check: one header holds `sign(secret, body)` for one of the active secrets.

    `canonical` normalises what was presented (case, an optional prefix) before the
    constant-time comparison against every secret's expected value.
    """
    value = headers.get(header)
    if not value:
        return Verdict.refuse(f"missing {header} header")
    secrets = workspace.secrets_for(secret_key)
    if not secrets:
        return no_secret(secret_key)
    presented = ascii_bytes(value)
    expected = (sign(secret, body).encode() for secret in secrets)
    if presented is None or not any_matches(expected, canonical(presented)):
        return Verdict.refuse("signature does not match")
    return Verdict.accept()


class NoHandshakes:
    """For protocols without a verification handshake (GET or POST)."""

    def handshake(
        self, workspace: WorkspaceConfig, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Reply | None:
        return None

    def post_handshake(
        self, workspace: WorkspaceConfig, headers: Mapping[str, str], body: bytes
    ) -> Reply | None:
        return None
