"""Direction and the parties of an interaction, from the workspace's owned accounts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from events.models import Direction, Identity
from rapport.workspaces import WorkspaceConfig


@dataclass(frozen=True, slots=True)
class Parties:
    """Who the interaction is between, seen from the workspace."""

    direction: Direction
    contact: Identity | None
    account: Identity | None
    member: str | None


def classify(workspace: WorkspaceConfig, actor: Identity, subject: Identity | None) -> Parties:
    """inbound: contact -> workspace; outbound: workspace -> contact; internal; external."""
    actor_owned = workspace.owned(actor.platform, actor.user_id)
    subject_owned = (
        workspace.owned(subject.platform, subject.user_id) if subject is not None else None
    )
    if actor_owned is not None and subject_owned is not None:
        return Parties(Direction.INTERNAL, None, actor, actor_owned.member)
    if actor_owned is not None:
        return Parties(Direction.OUTBOUND, subject, actor, actor_owned.member)
    if subject_owned is not None:
        return Parties(Direction.INBOUND, actor, subject, subject_owned.member)
    return Parties(Direction.EXTERNAL, None, None, None)


def one_side_owned(workspace: WorkspaceConfig, actor: Identity, subject: Identity) -> bool:
    """Exactly one side is owned: the interaction would be inbound or outbound, so it counts."""
    actor_owned = workspace.owned(actor.platform, actor.user_id) is not None
    return actor_owned != (workspace.owned(subject.platform, subject.user_id) is not None)


Relation = TypeVar("Relation", bound=tuple[Any, ...])


def counting_relation(
    workspace: WorkspaceConfig, actor: Identity, relations: Sequence[Relation]
) -> Relation:
    """Of a post's relations (kind, subject, ...), in the adapter's order of preference, the
    first that counts (one side owned), else the first: a reply to a stranger that mentions
    one of our accounts counts as the mention."""
    return next((r for r in relations if one_side_owned(workspace, actor, r[1])), relations[0])
