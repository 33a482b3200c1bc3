"""Response latencies: exact nearest-rank percentiles, a 1% relative-error sketch past a limit.

Up to `limit` values (default 10,000) are kept sorted and percentiles are exact: the value at
1-based position ceil(p * n). Past the limit the values move into a logarithmic-bucket sketch
(DDSketch's mapping, relative accuracy 1%) that is mergeable and bounded in size.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

RELATIVE_ACCURACY = 0.01
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)


def _bucket(ms: int) -> int:
    return math.ceil(math.log(ms) / _LOG_GAMMA)


def _bucket_value(index: int) -> float:
    return 2 * _GAMMA**index / (_GAMMA + 1)


def nearest_rank(values: list[int] | tuple[int, ...], p: float) -> int:
    """The nearest-rank percentile of ascending `values` (non-empty)."""
    return values[max(1, math.ceil(p * len(values))) - 1]


@dataclass(frozen=True, slots=True)
class Latencies:
    """Latencies in milliseconds: sorted exact values, or a sketch once past the limit."""

    exact: tuple[int, ...] = ()
    zeros: int = 0
    buckets: tuple[tuple[int, int], ...] = ()
    sketched: bool = False

    @property
    def count(self) -> int:
        if not self.sketched:
            return len(self.exact)
        return self.zeros + sum(c for _, c in self.buckets)

    def add(self, ms: int, limit: int) -> Latencies:
        ms = max(ms, 0)
        if not self.sketched:
            values = list(self.exact)
            bisect.insort(values, ms)
            if len(values) <= limit:
                return Latencies(exact=tuple(values))
            return Latencies(sketched=True)._add_many(values)
        return self._add_many([ms])

    def _add_many(self, values: list[int]) -> Latencies:
        zeros = self.zeros
        counts = dict(self.buckets)
        for ms in values:
            if ms <= 0:
                zeros += 1
            else:
                index = _bucket(ms)
                counts[index] = counts.get(index, 0) + 1
        return Latencies(zeros=zeros, buckets=tuple(sorted(counts.items())), sketched=True)

    def percentile_s(self, p: float) -> float | None:
        """Seconds at percentile p (0 < p <= 1), or None without latencies."""
        n = self.count
        if n == 0:
            return None
        if not self.sketched:
            return nearest_rank(self.exact, p) / 1000.0
        rank = max(1, math.ceil(p * n))
        if rank <= self.zeros:
            return 0.0
        seen = self.zeros
        for index, count in self.buckets:
            seen += count
            if seen >= rank:
                return round(_bucket_value(index)) / 1000.0
        raise AssertionError("rank beyond count")  # pragma: no cover

    def to_json(self) -> Any:
        if not self.sketched:
            return list(self.exact)
        return {"zeros": self.zeros, "buckets": [list(b) for b in self.buckets]}

    @classmethod
    def from_json(cls, data: Any) -> Latencies:
        if isinstance(data, list):
            return cls(exact=tuple(int(v) for v in data))
        return cls(
            zeros=int(data["zeros"]),
            buckets=tuple((int(i), int(c)) for i, c in data["buckets"]),
            sketched=True,
        )
