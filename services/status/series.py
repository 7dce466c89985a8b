"""Per-model time series kept in memory for the status page.

Statistics snapshots carry running totals (count, nanoseconds), so each tick turns what
changed since the previous one into a point: requests/s, and the mean latency of the new
requests weighted by their count; p50/p99 at a point are the weighted quantiles of those
means over the last `QUANTILE_SPAN_S` seconds (exact when requests arrive one per tick).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from naiad.kernel.inference.stats import ModelStatistics

QUANTILE_SPAN_S = 10.0


def weighted_quantile(points: list[tuple[float, int]], q: float) -> float | None:
    """The smallest value whose cumulative weight reaches q of the total; None if empty."""
    total = sum(w for _, w in points)
    if total == 0:
        return None
    need, seen = q * total, 0
    for value, weight in sorted(points):
        seen += weight
        if seen >= need:
            return value
    return points[-1][0]


@dataclass
class Series:
    """Columns of one model version's points; old points drop off the front."""

    size: int
    t: deque = field(init=False)
    rps: deque = field(init=False)
    p50_ms: deque = field(init=False)
    p99_ms: deque = field(init=False)
    queue: deque = field(init=False)
    count: int = 0  # successful requests since load
    _last: tuple[float, int, int] | None = None  # (time, success count, success ns)
    _recent: deque = field(default_factory=deque)  # (time, mean latency ms, count)

    def __post_init__(self) -> None:
        for name in ("t", "rps", "p50_ms", "p99_ms", "queue"):
            setattr(self, name, deque(maxlen=self.size))

    def add(self, now: float, stats: ModelStatistics) -> None:
        ok = stats.inference_stats.success
        if self._last is not None:
            then, count, ns = self._last
            new = max(ok.count - count, 0)
            if new:
                self._recent.append((now, max(ok.ns - ns, 0) / new / 1e6, new))
            rps = new / (now - then) if now > then else 0.0
        else:
            rps = 0.0
        self._last = (now, ok.count, ok.ns)
        self.count = ok.count
        while self._recent and self._recent[0][0] < now - QUANTILE_SPAN_S:
            self._recent.popleft()
        recent = [(ms, n) for _, ms, n in self._recent]
        self.t.append(round(now, 3))
        self.rps.append(round(rps, 3))
        self.p50_ms.append(_round(weighted_quantile(recent, 0.5)))
        self.p99_ms.append(_round(weighted_quantile(recent, 0.99)))
        self.queue.append(stats.pending_requests)

    def to_json(self) -> dict:
        return {"count": self.count, **{k: list(getattr(self, k)) for k in ("t", "rps", "p50_ms", "p99_ms", "queue")}}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)
