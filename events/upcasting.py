"""Upcasting: stored events of an older schema version become the current model on read.

The event log is never rewritten. `events.models.parse_event` passes every decoded event through
`upcast` before validation; an upcaster turns one `(type, schema_version)` into the next version,
and they chain until no upcaster matches (the current version validates as is).

Registered:

* `("interaction", 0)`: the legacy interaction shape written before `schema_version` existed
  (no `type`, no `schema_version`; `occurred_at`/`received_at` as epoch milliseconds; `actor` and
  `subject` as `"<platform>:<user_id>"` strings; no `contact`/`account`). It becomes version 1:
  identities are split at the first colon (user ids such as LinkedIn URNs keep theirs), times
  become ISO 8601 UTC, and `contact`/`account` are derived from the stored direction (inbound:
  the actor is the contact; outbound: the subject is).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

UPCASTERS: dict[tuple[str, int], Upcaster] = {}

# A stored event without these is from before they existed.
DEFAULT_TYPE = "interaction"
LEGACY_VERSION = 0


def upcaster(event_type: str, version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function turning `(event_type, version)` into `version + 1`."""

    def register(function: Upcaster) -> Upcaster:
        UPCASTERS[(event_type, version)] = function
        return function

    return register


def upcast(data: dict[str, Any]) -> dict[str, Any]:
    """The current-version form of one decoded event (the input is not modified)."""
    if not isinstance(data, dict):
        return data
    for _ in range(len(UPCASTERS) + 1):
        event_type = data.get("type", DEFAULT_TYPE)
        version = data.get("schema_version", LEGACY_VERSION)
        function = (
            UPCASTERS.get((event_type, version))
            if isinstance(event_type, str) and isinstance(version, int)
            else None
        )
        if function is None:
            return data
        data = function(dict(data))
    raise ValueError("upcasters form a cycle")  # pragma: no cover - a registration bug


def _ms_to_iso(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=UTC).isoformat(timespec="milliseconds")
    return value


def _identity(value: Any) -> Any:
    if isinstance(value, str) and ":" in value:
        platform, _, user_id = value.partition(":")
        return {"platform": platform, "user_id": user_id}
    return value


@upcaster("interaction", 0)
def _interaction_v0_to_v1(data: dict[str, Any]) -> dict[str, Any]:
    data["type"] = "interaction"
    data["schema_version"] = 1
    for key in ("occurred_at", "received_at"):
        if key in data:
            data[key] = _ms_to_iso(data[key])
    for key in ("actor", "subject"):
        if key in data:
            data[key] = _identity(data[key])
    direction = data.get("direction")
    if direction == "inbound":
        data.setdefault("contact", data.get("actor"))
        data.setdefault("account", data.get("subject"))
    elif direction == "outbound":
        data.setdefault("contact", data.get("subject"))
        data.setdefault("account", data.get("actor"))
    return data
