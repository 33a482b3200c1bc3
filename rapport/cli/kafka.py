"""`rapport kafka up|down|status`: the local Apache Kafka broker (KRaft)."""

from __future__ import annotations

import json

import typer

from deploy.kafka.local import KafkaRuntimeError, LocalKafka
from rapport.cli.common import console, fail, settings

app = typer.Typer(
    help="The local Apache Kafka broker (KRaft) for development and tests.", no_args_is_help=True
)


@app.command()
def up() -> None:
    """Fetch the jars once, format storage, start the broker and wait until it answers."""
    kafka = LocalKafka(settings())
    with console.status(
        f"starting Apache Kafka {kafka.version} on {kafka.settings.kafka_bootstrap}"
    ):
        try:
            status = kafka.up()
        except KafkaRuntimeError as exc:
            fail(str(exc))
    console.print(f"kafka {status.version} running, pid {status.pid}, {status.address}")


@app.command()
def down() -> None:
    """Stop the broker by its recorded pid."""
    pid = LocalKafka(settings()).down()
    console.print("kafka stopped" + (f" (pid {pid})" if pid else " (was not running)"))


@app.command()
def status(
    format: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """Whether the broker runs and answers metadata requests."""
    st = LocalKafka(settings()).status()
    if format == "json":
        console.print_json(json.dumps(st.as_dict()))
    else:
        state = "running" if st.running else "stopped"
        console.print(
            f"kafka {st.version}: {state}, pid {st.pid}, {st.address}, answering={st.answering}"
        )
    raise typer.Exit(0 if st.running else 3)
