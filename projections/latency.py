"""Response latencies: exact nearest-rank percentiles, a 1% relative-error sketch past a limit.

Up to `limit` values (default 10,000) are kept and percentiles are exact: the value at
1-based position ceil(p * n). Past the limit the values move into a logarithmic-bucket sketch
(DDSketch's mapping, relative accuracy 1%) that is mergeable and bounded in size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True, eq=False)
class Latencies:
    """Latencies in milliseconds: exact values, or a sketch once past the limit.

    Exact values live in an append-only buffer shared with the earlier values they grew from:
    a `Latencies` sees only the first `size` entries of its buffer, so `add` is O(1) and the
    per-touch snapshots of a relationship's timeline do not each copy every latency (which made
    a busy relationship quadratic in time and memory). Adding to a value that is not the newest
    of its buffer copies its own prefix first, so no value ever sees another one's additions.
    """

    buffer: list[int] = field(default_factory=list, repr=False)
    size: int = 0
    zeros: int = 0
    buckets: tuple[tuple[int, int], ...] = ()
    sketched: bool = False

    @classmethod
    def of(cls, values: Iterable[int]) -> Latencies:
        """Exact latencies holding `values` (any order)."""
        buffer = list(values)
        return cls(buffer=buffer, size=len(buffer))

    ordered: tuple[int, ...] | None = field(default=None, repr=False)  # `exact`, once computed

    @property
    def exact(self) -> tuple[int, ...]:
        """The exact values, ascending (empty once sketched)."""
        ordered = self.ordered
        if ordered is None:
            ordered = tuple(sorted(self.buffer[: self.size]))
            object.__setattr__(self, "ordered", ordered)  # a cache: the value never changes
        return ordered

    @property
    def count(self) -> int:
        if not self.sketched:
            return self.size
        return self.zeros + sum(c for _, c in self.buckets)

    def add(self, ms: int, limit: int) -> Latencies:
        ms = max(ms, 0)
        if not self.sketched:
            size = self.size
            if size + 1 <= limit:
                buffer = self.buffer
                if size == 0 or len(buffer) != size:  # new, or a later value grew from this one
                    buffer = buffer[:size]
                buffer.append(ms)
                return Latencies(buffer=buffer, size=size + 1)
            return Latencies(sketched=True)._sketched_with([*self.buffer[:size], ms])
        return self._sketched_with([ms])

    def add_many(self, values: list[int], limit: int) -> Latencies:
        """`add` of each value in turn, with one copy of the buffer while they stay exact."""
        if not values:
            return self
        size = self.size
        if self.sketched or size + len(values) > limit:
            out = self
            for ms in values:
                out = out.add(ms, limit)
            return out
        buffer = self.buffer[:size]
        buffer.extend([ms if ms > 0 else 0 for ms in values])
        return Latencies(buffer=buffer, size=len(buffer))

    def _sketched_with(self, values: list[int]) -> Latencies:
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

    def _key(self) -> tuple[Any, ...]:
        if not self.sketched:
            return (False, self.exact)
        return (True, self.zeros, self.buckets)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Latencies):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def to_json(self) -> Any:
        if not self.sketched:
            return list(self.exact)
        return {"zeros": self.zeros, "buckets": [list(b) for b in self.buckets]}

    @classmethod
    def from_json(cls, data: Any) -> Latencies:
        if isinstance(data, list):
            return cls.of(int(v) for v in data)
        return cls(
            zeros=int(data["zeros"]),
            buckets=tuple((int(i), int(c)) for i, c in data["buckets"]),
            sketched=True,
        )
