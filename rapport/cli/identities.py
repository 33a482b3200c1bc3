"""`rapport identities link|unlink`: state that two identities are one person (or not)."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from events.ids import event_id
from events.models import Identity, IdentityLinked, IdentityUnlinked
from rapport.cli.common import console, fail, settings, workspaces

app = typer.Typer(
    help="Identity links: merge a contact's identities across platforms.", no_args_is_help=True
)


def _identity(text: str) -> Identity:
    platform, sep, user_id = text.partition(":")
    if not sep or not user_id:
        fail(f"an identity is <platform>:<user_id>, got {text!r}", 2)
    return Identity(platform=platform, user_id=user_id)


def _append(event: IdentityLinked | IdentityUnlinked) -> None:
    from streams.eventlog import append_events

    try:
        append_events(settings(), [event])
    except Exception as exc:
        fail(f"could not append to the event log: {exc}")


@app.command()
def link(
    identity: str = typer.Argument(..., help="the identity to move, e.g. email:ann@example.com"),
    contact_id: str = typer.Argument(..., help="the contact it belongs to, e.g. x:783214"),
    workspace: str = typer.Option(..., "--workspace", "-w"),
) -> None:
    """Count IDENTITY's interactions in CONTACT_ID's relationship (history moves on replay)."""
    if workspace not in workspaces():
        fail(f"unknown workspace {workspace!r}", 2)
    who = _identity(identity)
    now = datetime.now(UTC)
    _append(
        IdentityLinked(
            event_id=event_id(
                workspace, "identity", f"link:{who.key}:{contact_id}:{now.isoformat()}"
            ),
            workspace=workspace,
            occurred_at=now,
            identity=who,
            contact_id=contact_id,
        )
    )
    console.print(f"linked {who.key} -> {contact_id} in {workspace}")


@app.command()
def unlink(
    identity: str = typer.Argument(..., help="the identity that is its own contact again"),
    workspace: str = typer.Option(..., "--workspace", "-w"),
) -> None:
    """Undo a link: IDENTITY is its own contact again from now on."""
    if workspace not in workspaces():
        fail(f"unknown workspace {workspace!r}", 2)
    who = _identity(identity)
    now = datetime.now(UTC)
    _append(
        IdentityUnlinked(
            event_id=event_id(workspace, "identity", f"unlink:{who.key}:{now.isoformat()}"),
            workspace=workspace,
            occurred_at=now,
            identity=who,
        )
    )
    console.print(f"unlinked {who.key} in {workspace}")
