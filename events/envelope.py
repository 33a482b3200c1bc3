"""The raw envelope: what the ingest proves authentic and keeps, before anything is parsed."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

# Headers worth keeping with the body: signatures (re-verifiable later), delivery ids, retries.
KEPT_HEADERS = frozenset(
    {
        "content-type",
        "x-twitter-webhooks-signature",
        "x-hub-signature-256",
        "x-hub-signature",
        "x-li-signature",
        "x-slack-signature",
        "x-slack-request-timestamp",
        "x-slack-retry-num",
        "x-slack-retry-reason",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "user-agent",
    }
)


class RawEnvelope(BaseModel):
    """One authenticated webhook delivery, byte for byte (the body travels as base64 in JSON)."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    workspace: str
    source: str = Field(
        description="the webhook endpoint: x, meta, linkedin, slack, mastodon, generic"
    )
    received_at: datetime
    headers: dict[str, str] = Field(default_factory=dict)
    body: bytes

    def dumps(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def loads(cls, data: bytes | str) -> RawEnvelope:
        return cls.model_validate_json(data)
