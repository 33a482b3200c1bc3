"""One raw delivery in, canonical events or a dead letter out: the normalizing step, pure.

The worker's agent only loads the envelope, calls `process_delivery`, and sends the results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, ConfigDict, ValidationError

from events.adapters import NotAnInteraction, RejectedPayload, normalize
from events.envelope import RawEnvelope
from events.models import Interaction, RawPointer
from rapport.workspaces import WorkspaceRegistry


class DeadLetter(BaseModel):
    """An authentic delivery that could not become events, kept with the reason."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    workspace: str
    source: str
    reason: str
    received_at: datetime
    failed_at: datetime
    raw: RawPointer
    headers: dict[str, str] = {}
    body: bytes

    def dumps(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def loads(cls, data: bytes | str) -> DeadLetter:
        return cls.model_validate_json(data)

    def envelope(self) -> RawEnvelope:
        """The original delivery, for a redrive after a fix."""
        return RawEnvelope(
            workspace=self.workspace,
            source=self.source,
            received_at=self.received_at,
            headers=self.headers,
            body=self.body,
        )


@dataclass(frozen=True)
class DeliveryOutcome:
    events: tuple[Interaction, ...] = ()
    skipped: tuple[NotAnInteraction, ...] = ()
    dead_letter: DeadLetter | None = None
    extra: dict[str, str] = field(default_factory=dict)


def process_delivery(
    registry: WorkspaceRegistry, raw_value: bytes, pointer: RawPointer, now: datetime
) -> DeliveryOutcome:
    """Normalize one `rapport.raw` record; every failure becomes a dead letter with its reason."""
    try:
        envelope = RawEnvelope.loads(raw_value)
    except ValidationError as exc:
        return DeliveryOutcome(
            dead_letter=DeadLetter(
                workspace="",
                source="",
                reason=f"not a raw envelope: {exc.errors()[0]['msg']}",
                received_at=now,
                failed_at=now,
                raw=pointer,
                body=raw_value,
            )
        )
    workspace = registry.get(envelope.workspace)
    reason: str | None
    if workspace is None:
        reason = f"workspace {envelope.workspace!r} is not configured"
    else:
        try:
            result = normalize(workspace, envelope, pointer)
        except RejectedPayload as exc:
            reason = f"{envelope.source}: {exc.reason}"
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            reason = f"{envelope.source}: invalid event ({where}: {first['msg']})"
        else:
            return DeliveryOutcome(events=result.events, skipped=result.skipped)
    return DeliveryOutcome(
        dead_letter=DeadLetter(
            workspace=envelope.workspace,
            source=envelope.source,
            reason=reason,
            received_at=envelope.received_at,
            failed_at=now,
            raw=pointer,
            headers=envelope.headers,
            body=envelope.body,
        )
    )
