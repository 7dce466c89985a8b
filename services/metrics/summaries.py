"""Latency summaries (`--metrics-config summary_latencies=true`) over a sliding window.

The statistics snapshots carry per-model totals (count, nanoseconds), not each request's
latency, so each summary is fed with what changed between two readings: n new requests
whose mean latency was m count as n observations of m. `_count` and `_sum` are exact;
quantiles are exact when requests are read one at a time (each scrape and every
`interval_ms` tick reads them) and an interpolation between readings otherwise. The window
is prometheus-cpp's default for Triton's summaries: the last 60 seconds.
"""

from __future__ import annotations

import math
import time
from collections import deque

MAX_AGE_S = 60.0
_MAX_POINTS = 4096  # per series; older points go first


class SlidingQuantiles:
    """Weighted observations of the last `max_age` seconds."""

    __slots__ = ("max_age", "_points")

    def __init__(self, max_age: float = MAX_AGE_S) -> None:
        self.max_age = max_age
        self._points: deque[tuple[float, float, int]] = deque(maxlen=_MAX_POINTS)  # (t, value, weight)

    def observe(self, value: float, weight: int = 1, now: float | None = None) -> None:
        self._points.append((time.monotonic() if now is None else now, value, weight))

    def quantiles(self, qs: list[float], now: float | None = None) -> list[float]:
        t = time.monotonic() if now is None else now
        points = self._points
        while points and t - points[0][0] > self.max_age:
            points.popleft()
        if not points:
            return [math.nan] * len(qs)
        ordered = sorted((v, w) for _, v, w in points)
        total = sum(w for _, w in ordered)
        out = []
        for q in qs:
            rank = q * total
            seen = 0
            value = ordered[-1][0]
            for v, w in ordered:
                seen += w
                if seen >= rank:
                    value = v
                    break
            out.append(value)
        return out


class DeltaSummary:
    """A summary of one series fed from running totals (count, nanoseconds)."""

    __slots__ = ("count", "ns", "window")

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0
        self.window = SlidingQuantiles()

    def update(self, count: int, ns: int, now: float | None = None) -> None:
        dc = count - self.count
        if dc < 0 or ns < self.ns:  # the model was reloaded: its totals started again
            self.count, self.ns = 0, 0
            dc = count
        if dc > 0:
            self.window.observe((ns - self.ns) / dc / 1000.0, dc, now)
        self.count, self.ns = count, ns

    @property
    def sum_us(self) -> float:
        return self.ns / 1000.0
