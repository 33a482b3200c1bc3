"""The `rapport` command: one entry point, one module per verb group."""

from __future__ import annotations

import typer

from rapport.cli import (
    deadletters,
    identities,
    importer,
    kafka,
    migrate,
    normalize,
    read,
    replay,
    stack,
)

app = typer.Typer(
    name="rapport",
    help="Return on relationships: webhooks -> Kafka -> Faust -> ClickHouse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(kafka.app, name="kafka")
app.add_typer(identities.app, name="identities")
app.add_typer(deadletters.app, name="deadletters")
stack.register(app)
read.register(app)
normalize.register(app)
migrate.register(app)
replay.register(app)
importer.register(app)


def main() -> None:
    app()
