"""One adapter module per platform webhook source; `ADAPTERS` maps a source name to it."""

from __future__ import annotations

from typing import Protocol

from events.adapters import generic, linkedin, mastodon, meta, slack, x
from events.adapters.base import AdapterResult, NotAnInteraction, RejectedPayload
from events.envelope import RawEnvelope
from events.models import RawPointer
from rapport.workspaces import WorkspaceConfig


class Normalizer(Protocol):
    def __call__(
        self, workspace: WorkspaceConfig, envelope: RawEnvelope, raw: RawPointer | None = None
    ) -> AdapterResult: ...


ADAPTERS: dict[str, Normalizer] = {
    "x": x.normalize,
    "meta": meta.normalize,
    "slack": slack.normalize,
    "linkedin": linkedin.normalize,
    "mastodon": mastodon.normalize,
    "generic": generic.normalize,
}


def normalize(
    workspace: WorkspaceConfig, envelope: RawEnvelope, raw: RawPointer | None = None
) -> AdapterResult:
    """Dispatch on the envelope's source; an unknown source is a rejection, not a crash."""
    adapter = ADAPTERS.get(envelope.source)
    if adapter is None:
        raise RejectedPayload(f"no adapter for source {envelope.source!r}")
    return adapter(workspace, envelope, raw)


__all__ = ["ADAPTERS", "AdapterResult", "NotAnInteraction", "RejectedPayload", "normalize"]
