"""The scoring policy: weights, half-life, cadences, lateness, business hours. Versioned.

Changing any number here (or a workspace's `policy` overrides) changes results: bump `version`
and replay. Weights are looked up by (direction, kind, intent), most specific first:
`"outbound.introduction.give"`, then `"outbound.introduction"`, then `"introduction"`, each
multiplied by the intent factor unless the key names the intent itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DAY_MS = 86_400_000

DEFAULT_KIND_WEIGHTS: dict[str, float] = {
    "message": 1.0,
    "reply": 1.0,
    "comment": 0.8,
    "mention": 0.6,
    "quote": 0.8,
    "share": 0.5,
    "reaction": 0.2,
    "follow": 0.3,
    "unfollow": 0.0,
    "introduction": 3.0,
    "meeting": 5.0,
    "call": 3.0,
    "email": 1.0,
}
DEFAULT_INTENT_FACTORS: dict[str, float] = {
    "give": 1.0,
    "ask": 1.0,
    "thanks": 1.0,
    "greeting": 0.5,
    "neutral": 1.0,
}


class BusinessHours(BaseModel):
    """When the workspace is expected to answer (for dashboards' business-hours views)."""

    model_config = ConfigDict(frozen=True)

    timezone: str = "UTC"
    start_hour: int = Field(9, ge=0, le=23)
    end_hour: int = Field(17, ge=1, le=24)
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4)


class Policy(BaseModel):
    """One workspace's metric policy; immutable and hashable by its version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = "policy-v1"
    kind_weights: Mapping[str, float] = Field(default_factory=lambda: dict(DEFAULT_KIND_WEIGHTS))
    intent_factors: Mapping[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_INTENT_FACTORS)
    )
    weights: Mapping[str, float] = Field(
        default_factory=dict, description="overrides: 'direction.kind.intent' or 'direction.kind'"
    )
    half_life_days: float = Field(30.0, gt=0)
    cadence_qualified_days: float = Field(30.0, gt=0)
    cadence_default_days: float = Field(90.0, gt=0)
    lateness_days: float = Field(7.0, ge=0)
    lateness_touches: int = Field(
        10_000,
        ge=1,
        description="at most this many of a relationship's newest touches stay reorderable",
    )
    conversation_gap_days: float = Field(7.0, gt=0)
    platform_move_days: float = Field(7.0, gt=0)
    trailing_days: int = Field(90, ge=1, description="window of ask_only and stage activity")
    exact_latencies: int = Field(10_000, ge=1, description="above this, a 1% sketch")
    business_hours: BusinessHours = Field(default_factory=BusinessHours)

    @cached_property
    def _weight_cache(self) -> dict[tuple[str, str, str], float]:
        return {}

    def weight(self, direction: str, kind: str, intent: str) -> float:
        """The weight of one interaction under this policy."""
        key = (direction, kind, intent)
        cache = self._weight_cache
        found = cache.get(key)
        if found is None:
            found = self._lookup(direction, kind, intent)
            cache[key] = found
        return found

    def _lookup(self, direction: str, kind: str, intent: str) -> float:
        exact = self.weights.get(f"{direction}.{kind}.{intent}")
        if exact is not None:
            return float(exact)
        factor = float(self.intent_factors.get(intent, 1.0))
        by_direction = self.weights.get(f"{direction}.{kind}")
        if by_direction is not None:
            return float(by_direction) * factor
        return float(self.kind_weights.get(kind, 0.0)) * factor

    @property
    def lateness_ms(self) -> int:
        return int(self.lateness_days * DAY_MS)

    @property
    def half_life_ms(self) -> float:
        return self.half_life_days * DAY_MS

    def cadence_ms(self, qualified: bool) -> int:
        days = self.cadence_qualified_days if qualified else self.cadence_default_days
        return int(days * DAY_MS)


DEFAULT_POLICY = Policy()


def policy_for(overrides: Mapping[str, Any] | None) -> Policy:
    """The default policy with a workspace's overrides from the workspace file applied."""
    if not overrides:
        return DEFAULT_POLICY
    return Policy.model_validate({**DEFAULT_POLICY.model_dump(), **dict(overrides)})
