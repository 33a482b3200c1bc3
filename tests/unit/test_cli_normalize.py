"""`rapport normalize` through typer's CliRunner."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from events.models import Direction, Interaction, Kind, parse_event
from rapport.cli import normalize
from rapport.settings import get_settings

X_FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks" / "x_account_activity"
WORKSPACES = """
[workspaces.acme]
accounts = [
  { platform = "x", user_id = "4337869213", member = "brand" },
]
[workspaces.globex]
accounts = []
"""


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """rapport"""

    normalize.register(app)
    return app


APP = make_app()
runner = CliRunner()


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "workspaces.toml").write_text(WORKSPACES)
    for name in ("direct_message_events.json", "direct_message_indicate_typing_events.json"):
        shutil.copy(X_FIXTURES / name, tmp_path / name)
    (tmp_path / "broken.json").write_text('{"direct_message_events": [')
    (tmp_path / "rejected.json").write_text('{"favorite_events": [{"id": "1"}]}')
    yield tmp_path


def invoke(*args: str | Path) -> Result:
    return runner.invoke(APP, ["normalize", *map(str, args)])


def test_prints_one_ndjson_line_per_event(files: Path) -> None:
    result = runner.invoke(
        APP,
        [
            "normalize",
            "--platform",
            "x",
            "--workspace",
            "acme",
            "--workspaces",
            str(files / "workspaces.toml"),
            str(files / "direct_message_events.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    event = parse_event(lines[0])
    assert isinstance(event, Interaction)
    assert (event.kind, event.direction) == (Kind.MESSAGE, Direction.INBOUND)
    assert event.actor.user_id == "3001969357"
    assert json.loads(lines[0])["object_id"] == "954491830116155396"
    assert result.stderr == ""


def test_no_interaction_goes_to_stderr_and_exits_0(files: Path) -> None:
    typing_file = files / "direct_message_indicate_typing_events.json"
    result = invoke("-p", "x", "-w", "acme", "--workspaces", files / "workspaces.toml", typing_file)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.strip() == f"{typing_file}: no interaction (x.typing_indicator)"


def test_bad_files_are_reported_and_the_rest_still_processed(files: Path) -> None:
    args = ["normalize", "-p", "x", "-w", "acme", "--workspaces", str(files / "workspaces.toml")]
    bodies = ["broken.json", "missing.json", "rejected.json", "direct_message_events.json"]
    result = runner.invoke(APP, args + [str(files / b) for b in bodies])
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 1
    errors = result.stderr.splitlines()
    assert errors[0].startswith(f"{files / 'broken.json'}: body is not JSON")
    assert errors[1].startswith(f"{files / 'missing.json'}: cannot read")
    assert errors[2] == f"{files / 'rejected.json'}: favorite has no 'favorited_status'"
    assert len(errors) == 3


def test_workspace_file_from_settings(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAPPORT_WORKSPACES", str(files / "workspaces.toml"))
    get_settings.cache_clear()
    try:
        result = runner.invoke(
            APP, ["normalize", "-p", "x", "-w", "globex", str(files / "direct_message_events.json")]
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    event = parse_event(result.stdout.splitlines()[0])
    assert event.workspace == "globex"
    assert isinstance(event, Interaction) and event.direction is Direction.EXTERNAL


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "x", "-w", "initech"], "unknown workspace 'initech'"),
        (["-p", "myspace", "-w", "acme"], "unknown platform 'myspace'"),
    ],
)
def test_usage_errors_exit_2(files: Path, args: list[str], message: str) -> None:
    body = files / "direct_message_events.json"
    result = invoke(*args, "--workspaces", files / "workspaces.toml", body)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_missing_workspace_file_exits_2(tmp_path: Path) -> None:
    body = X_FIXTURES / "direct_message_events.json"
    result = invoke("-p", "x", "-w", "acme", "--workspaces", tmp_path / "nope.toml", body)
    assert result.exit_code == 2
    assert "not found" in result.stderr


def test_help() -> None:
    result = runner.invoke(APP, ["normalize", "--help"])
    assert result.exit_code == 0
    assert "--platform" in result.stdout and "--workspaces" in result.stdout
