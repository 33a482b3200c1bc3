"""Workspaces: tenants, their owned accounts, platform secrets and policy overrides (TOML)."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from rapport.settings import resolve_secret

WORKSPACE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class OwnedAccount(BaseModel):
    """A platform identity that speaks for the workspace (the brand, or a member as advocate)."""

    model_config = ConfigDict(frozen=True, coerce_numbers_to_str=True)

    platform: str
    user_id: str
    member: str = "brand"


class WorkspaceConfig(BaseModel):
    """One tenant. Secrets are resolved at load time; each key may hold several (rotation).

    Secrets never show: not in repr/str (`repr=False`), not in validation errors (which would
    otherwise quote the whole `secrets` table as `input_value`).
    """

    model_config = ConfigDict(frozen=True, coerce_numbers_to_str=True, hide_input_in_errors=True)

    name: str = Field(pattern=WORKSPACE_NAME_PATTERN)
    accounts: tuple[OwnedAccount, ...] = ()
    secrets: Mapping[str, tuple[str, ...]] = Field(default_factory=dict, repr=False)
    policy: Mapping[str, Any] = Field(default_factory=dict)

    _owned: dict[tuple[str, str], OwnedAccount] = PrivateAttr(default_factory=dict)

    @field_validator("secrets", mode="before")
    @classmethod
    def _resolve(cls, raw: Any) -> dict[str, tuple[str, ...]]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise ValueError("secrets must be a table of name = value (or [values])")
        out: dict[str, tuple[str, ...]] = {}
        for key, value in raw.items():
            values = [value] if isinstance(value, str) else value
            if (
                not isinstance(values, list | tuple)
                or not values
                or not all(isinstance(v, str) for v in values)
            ):
                raise ValueError(f"secret {key} must be a string or a list of strings")
            out[str(key)] = tuple(resolve_secret(v) for v in values)
        return out

    def model_post_init(self, __context: Any) -> None:
        self._owned = {(a.platform, a.user_id): a for a in self.accounts}

    def owned(self, platform: str, user_id: str | None) -> OwnedAccount | None:
        """The owned account behind an identity, if the workspace owns it."""
        if user_id is None:
            return None
        return self._owned.get((platform, user_id))

    def secrets_for(self, key: str) -> tuple[str, ...]:
        """All active secrets under `key` (empty when the workspace has none)."""
        return tuple(self.secrets.get(key, ()))


class WorkspaceRegistry(BaseModel):
    """All workspaces of a deployment, by name."""

    model_config = ConfigDict(frozen=True)

    workspaces: Mapping[str, WorkspaceConfig] = Field(default_factory=dict)

    def get(self, name: str) -> WorkspaceConfig | None:
        return self.workspaces.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.workspaces

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> WorkspaceRegistry:
        tables = data.get("workspaces", {})
        if not isinstance(tables, Mapping):
            raise ValueError("the workspace file needs [workspaces.<name>] tables")
        return cls(
            workspaces={
                name: WorkspaceConfig(name=name, **(body or {})) for name, body in tables.items()
            }
        )

    @classmethod
    def load(cls, path: Path) -> WorkspaceRegistry:
        """Read the workspace file; a missing file is an error that names the path."""
        if not path.exists():
            raise FileNotFoundError(
                f"workspace file {path} not found (set RAPPORT_WORKSPACES or create it)"
            )
        with path.open("rb") as fh:
            return cls.from_mapping(tomllib.load(fh))

    @classmethod
    def of(cls, configs: Iterable[WorkspaceConfig]) -> WorkspaceRegistry:
        return cls(workspaces={c.name: c for c in configs})
