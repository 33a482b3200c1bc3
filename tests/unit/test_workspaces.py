"""The workspace file: the SPEC's TOML shape, env: secrets, rotation lists, ids as strings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from rapport.workspaces import WorkspaceRegistry

SPEC_EXAMPLE = """
[workspaces.acme]
accounts = [
  { platform = "x", user_id = "783214", member = "brand" },
  { platform = "linkedin", user_id = "urn:li:organization:2414183", member = "brand" },
]
[workspaces.acme.secrets]
x_consumer_secret = "env:ACME_X_SECRET"
meta_app_secret = "..."
meta_verify_token = "..."
linkedin_client_secret = "..."
slack_signing_secret = "..."
mastodon_secret = "..."
generic_secret = "..."
"""


def test_spec_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_X_SECRET", "from-the-environment")
    path = tmp_path / "workspaces.toml"
    path.write_text(SPEC_EXAMPLE)
    acme = WorkspaceRegistry.load(path).get("acme")
    assert acme is not None
    assert acme.secrets_for("x_consumer_secret") == ("from-the-environment",)
    assert acme.secrets_for("meta_app_secret") == ("...",)
    owned = acme.owned("linkedin", "urn:li:organization:2414183")
    assert owned is not None and owned.member == "brand"
    assert acme.owned("x", "783214") is not None
    assert acme.owned("x", "999") is None


def test_missing_env_secret_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_X_SECRET", raising=False)
    path = tmp_path / "workspaces.toml"
    path.write_text(SPEC_EXAMPLE)
    with pytest.raises(LookupError, match="ACME_X_SECRET"):
        WorkspaceRegistry.load(path)


def test_numeric_user_ids_become_strings_and_secrets_may_rotate() -> None:
    registry = WorkspaceRegistry.from_mapping(
        {
            "workspaces": {
                "w": {
                    "accounts": [{"platform": "x", "user_id": 1234567890123456789}],
                    "secrets": {"x_consumer_secret": ["new", "old"]},
                }
            }
        }
    )
    w = registry.get("w")
    assert w is not None
    assert w.accounts[0].user_id == "1234567890123456789"
    assert w.owned("x", "1234567890123456789") is not None
    assert w.secrets_for("x_consumer_secret") == ("new", "old")


def test_missing_file_and_bad_names_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="RAPPORT_WORKSPACES"):
        WorkspaceRegistry.load(tmp_path / "nope.toml")
    with pytest.raises(ValidationError):
        WorkspaceRegistry.from_mapping({"workspaces": {"bad name!": {}}})
