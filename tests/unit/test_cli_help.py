"""The `rapport` CLI's help: an option that explains its own default shows no other one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer
from typer.testing import CliRunner

from rapport.cli import app


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group under `command` (typer vendors its own click: duck-typed)."""
    yield path, command
    for name, sub in (getattr(command, "commands", None) or {}).items():
        yield from _commands(sub, (*path, name))


def test_an_option_explaining_its_default_does_not_show_a_placeholder_default() -> None:
    commands = dict(_commands(typer.main.get_command(app)))
    assert ("replay",) in commands and ("kafka", "up") in commands
    shown = [
        (" ".join(path), param.opts[0])
        for path, command in commands.items()
        for param in command.params
        if param.param_type_name == "option"
        and "default" in (param.help or "")
        and param.show_default is not False
        and param.default not in (None, "", [])  # help shows no default for these
    ]
    assert shown == []


def test_replay_help_does_not_offer_version_zero() -> None:
    result = CliRunner().invoke(app, ["replay", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--to-version" in result.output and "one more than any known" in result.output
    assert "[default: 0]" not in result.output


def test_replay_refuses_version_zero_before_doing_anything() -> None:
    for option in ("--to-version", "--activate"):
        result = CliRunner().invoke(app, ["replay", option, "0"], env={"COLUMNS": "200"})
        assert result.exit_code == 2, result.output
        assert f"Invalid value for '{option}'" in result.output
