"""Kafka keys of Rapport's topics: one place, so producers and agents always agree."""

from __future__ import annotations

from events.models import Event, IdentityLinked, IdentityUnlinked, Interaction

NO_CONTACT = "~"  # the key prefix of interactions that belong to no relationship


def identity_key(workspace: str, identity: str) -> bytes:
    """The key of `rapport.events` and of the identity table: (workspace, identity)."""
    return f"{workspace}|{identity}".encode()


def event_key(event: Event) -> bytes:
    """Interactions go by their contact identity (or actor); link events by their identity."""
    if isinstance(event, Interaction):
        if event.contact is not None and event.direction.counts:
            return identity_key(event.workspace, event.contact.key)
        return identity_key(event.workspace, f"{NO_CONTACT}{event.actor.key}")
    if isinstance(event, IdentityLinked | IdentityUnlinked):
        return identity_key(event.workspace, event.identity.key)
    return identity_key(event.workspace, NO_CONTACT)


def split_key(key: bytes) -> tuple[str, str]:
    """(workspace, rest) of a key; workspace names never contain `|`."""
    workspace, _, rest = key.decode().partition("|")
    return workspace, rest
