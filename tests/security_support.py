"""Shared by the security tests: two tenants with distinctive secrets, signing, raw HTTP."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Iterable, Mapping

from rapport.workspaces import WorkspaceRegistry
from streams.webhooks import generic, linkedin, mastodon, meta, slack, x

OWNED_X = "4337869213"  # the account the X fixture's DM was sent to; both tenants own it

# Distinctive values, so any appearance in a log line, a body or a header is a leak.
ALPHA_SECRETS = {
    "x_consumer_secret": "xA-7q2Lw9Zr4Kd8Nf3Hs6Tb1Vc5Mj0Pe",
    "meta_app_secret": "metaA-3Rk8Wq1Zn6Yb4Uc9Ig2Oh7Lt5Ex0",
    "meta_verify_token": "vtokA-8Pm2Sd5Gj1Kl9Qw4Er7Ty3Ui6Ao0",
    "linkedin_client_secret": "liA-5Xc1Vb8Nm3Qa6Ws9Ed2Rf4Tg7Yh0",
    "slack_signing_secret": "slackA-2Zx7Cv4Bn9Mq1Wa5Se8Dr3Ft6Gy0",
    "mastodon_secret": "mastoA-9Hu4Ji1Kl6Op3Az8Sx5Dc2Fv7Bg0",
    # Standard Webhooks form: the HMAC key is the base64 decoding after `whsec_`.
    "generic_secret": "whsec_" + base64.b64encode(b"genericA-key-\x8f\x13\xa7\x5c-bytes").decode(),
}
BETA_SECRETS = {
    "x_consumer_secret": "xB-1Qa2Ws3Ed4Rf5Tg6Yh7Uj8Ik9Ol0Pz",
    "meta_app_secret": "metaB-0Lk9Mj8Nh7Bg6Vf5Cd4Xs3Za2Qw1",
    "meta_verify_token": "vtokB-6Yu5Ti4Re3Wq2As1Dz0Fx9Gc8Hv7",
    "linkedin_client_secret": "liB-4Rt5Yu6Io7Pa8Sd9Fg0Hj1Kl2Zx3",
    "slack_signing_secret": "slackB-7Vb6Nm5Mq4Lw3Ke2Jr1Ht0Gy9Fu8",
    "mastodon_secret": "mastoB-3Cx2Zv1Bn0Mm9Nl8Kk7Jj6Hh5Gg4",
    "generic_secret": "genericB-plain-8Ty7Ur6Ie5Wo4Qp3",
}
TENANTS = {"alpha": ALPHA_SECRETS, "beta": BETA_SECRETS}


def registry() -> WorkspaceRegistry:
    return WorkspaceRegistry.from_mapping(
        {
            "workspaces": {
                name: {
                    "accounts": [{"platform": "x", "user_id": OWNED_X, "member": "brand"}],
                    "secrets": secrets,
                }
                for name, secrets in TENANTS.items()
            }
        }
    )


def signature_headers(
    platform: str, body: bytes, secrets: Mapping[str, str], now: float | None = None
) -> dict[str, str]:
    """The signature headers `platform` would send with `body`, signed with `secrets`."""
    ts = str(int(time.time() if now is None else now))
    if platform == "x":
        return {x.SIGNATURE_HEADER: x.signature(secrets["x_consumer_secret"], body)}
    if platform == "meta":
        return {meta.SIGNATURE_HEADER: meta.signature(secrets["meta_app_secret"], body)}
    if platform == "linkedin":
        return {
            linkedin.SIGNATURE_HEADER: linkedin.signature(secrets["linkedin_client_secret"], body)
        }
    if platform == "slack":
        return {
            slack.TIMESTAMP_HEADER: ts,
            slack.SIGNATURE_HEADER: slack.signature(secrets["slack_signing_secret"], ts, body),
        }
    if platform == "mastodon":
        return {mastodon.SIGNATURE_HEADER: mastodon.signature(secrets["mastodon_secret"], body)}
    if platform == "generic":
        msg_id = "msg_" + base64.urlsafe_b64encode(body[:24]).decode().rstrip("=")
        return {
            generic.ID_HEADER: msg_id,
            generic.TIMESTAMP_HEADER: ts,
            generic.SIGNATURE_HEADER: generic.sign(secrets["generic_secret"], msg_id, ts, body),
        }
    raise AssertionError(platform)


def secret_forms(secrets: Iterable[str]) -> set[str]:
    """Every form a secret could leak in: itself, hex and base64 of it, and of its HMAC key."""
    forms: set[str] = set()
    for secret in secrets:
        keys = [secret.encode()]
        if secret.startswith(generic.SECRET_PREFIX):
            forms.add(secret[len(generic.SECRET_PREFIX) :])
            key = generic.signing_key(secret)
            assert key is not None
            keys.append(key)
        for key in keys:
            forms.add(key.decode("latin-1"))
            forms.add(key.hex())
            forms.add(key.hex().upper())
            forms.add(base64.b64encode(key).decode())
            forms.add(base64.urlsafe_b64encode(key).decode().rstrip("="))
    return {form for form in forms if len(form) >= 12}


def all_secret_forms() -> set[str]:
    return secret_forms(v for secrets in TENANTS.values() for v in secrets.values())


async def exchange(
    port: int,
    head: bytes,
    chunks: Iterable[bytes] = (),
    wait_s: float = 5.0,
    to_close: bool = False,
) -> bytes:
    """Send `head` then each chunk on a raw loopback connection; what came back (b"" if none).

    Reads until a response head is complete (or, with `to_close`, until the server closes). The
    connection stays open after the last chunk: an answer that arrives proves the server
    answered without waiting for the rest of the request.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = bytearray()
    try:
        try:
            writer.write(head)
            for chunk in chunks:
                writer.write(chunk)
            await writer.drain()
        except ConnectionError:
            pass  # the server may answer and close before taking everything: read what it said
        try:
            async with asyncio.timeout(wait_s):
                while to_close or b"\r\n\r\n" not in got:
                    data = await reader.read(65536)
                    if not data:
                        break
                    got += data
        except (TimeoutError, ConnectionError):
            pass
        return bytes(got)
    finally:
        writer.close()


STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*\r\n")
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


def statuses_of(response: bytes) -> list[int]:
    """The status code of every response in a stream of raw HTTP responses.

    Each body is skipped by its Content-Length (to the end without one): an error body may quote
    the request, and a request can hold anything, "HTTP/1.1 500 " included.
    """
    statuses: list[int] = []
    rest = response
    while (line := STATUS_LINE.match(rest)) is not None:
        statuses.append(int(line[1]))
        end = rest.find(b"\r\n\r\n")
        length = CONTENT_LENGTH.search(rest, 0, end) if end >= 0 else None
        if length is None:
            break
        rest = rest[end + 4 + int(length[1]) :]
    return statuses


def status_of(response: bytes) -> int | None:
    """The status code of a raw HTTP response, None when there was none."""
    if not response.startswith(b"HTTP/"):
        return None
    return int(response.split(b" ", 2)[1])


def chunked(body: bytes, size: int) -> list[bytes]:
    """`body` as HTTP/1.1 chunks of `size` bytes (without the terminating zero chunk)."""
    return [
        f"{len(body[i : i + size]):x}\r\n".encode() + body[i : i + size] + b"\r\n"
        for i in range(0, len(body), size)
    ]
