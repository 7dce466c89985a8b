"""Metric families that models create (Triton's TRITONSERVER_MetricFamily / _Metric API,
reached from Python models as `pb_utils.MetricFamily`): one registry per process, which
backends write and the metrics service renders on /metrics.

Semantics as Triton 24.04's core (prometheus-cpp underneath):
- a family is registered once per name; creating it again with the same kind shares it (its
  first description stays), with another kind is refused;
- families are never removed from the registry, even when every handle to them is gone;
- metrics with the same labels in one family share one series, which lives until the last
  of them is deleted.

Callers hold integer handles. Everything runs on the event loop thread: no locking.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from .errors import InferenceError

COUNTER = "counter"
GAUGE = "gauge"

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

LabelKey = tuple[tuple[str, str], ...]


@dataclass
class _Series:
    value: float = 0.0
    refs: int = 0


@dataclass
class Family:
    name: str
    description: str
    kind: str
    series: dict[LabelKey, _Series] = field(default_factory=dict)  # in creation order


class CustomMetrics:
    def __init__(self) -> None:
        self._families: dict[str, Family] = {}  # by name, in registration order
        self._family_handles: dict[int, str] = {}
        self._metrics: dict[int, tuple[int, Family, LabelKey]] = {}  # handle -> family handle, ...
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ families --

    def new_family(self, name: str, description: str, kind: str) -> int:
        if kind not in (COUNTER, GAUGE):
            raise InferenceError.invalid("Unsupported kind passed to MetricFamily constructor.")
        family = self._families.get(name)
        if family is None:
            if not _NAME.match(name) or name.startswith("__"):
                raise InferenceError.invalid("Invalid metric name")
            family = self._families[name] = Family(name, description, kind)
        elif family.kind != kind:
            raise InferenceError.invalid("Family name already exists with different type")
        handle = next(self._ids)
        self._family_handles[handle] = name
        return handle

    def delete_family(self, handle: int) -> None:
        """Drop a family handle and the metrics made through it (the family stays listed)."""
        if self._family_handles.pop(handle, None) is None:
            return
        for mid in [m for m, (fh, _, _) in self._metrics.items() if fh == handle]:
            self.delete_metric(mid)

    # ------------------------------------------------------------------- metrics --

    def new_metric(self, family_handle: int, labels: dict[str, str]) -> int:
        name = self._family_handles.get(family_handle)
        if name is None:
            raise InferenceError.internal("Metric family has been deleted")
        for key in labels:
            if not _LABEL.match(key) or key.startswith("__"):
                raise InferenceError.invalid("Invalid label name")
        family = self._families[name]
        key = tuple(sorted((str(k), str(v)) for k, v in labels.items()))
        series = family.series.get(key)
        if series is None:
            series = family.series[key] = _Series()
        series.refs += 1
        handle = next(self._ids)
        self._metrics[handle] = (family_handle, family, key)
        return handle

    def delete_metric(self, handle: int) -> None:
        entry = self._metrics.pop(handle, None)
        if entry is None:
            return
        _, family, key = entry
        series = family.series[key]
        series.refs -= 1
        if series.refs <= 0:
            del family.series[key]

    def _series(self, handle: int) -> tuple[Family, _Series]:
        entry = self._metrics.get(handle)
        if entry is None:
            raise InferenceError.internal("Metric has been invalidated.")
        _, family, key = entry
        return family, family.series[key]

    def increment(self, handle: int, value: float) -> None:
        family, series = self._series(handle)
        if family.kind == COUNTER and value < 0:
            raise InferenceError.invalid(
                "TRITONSERVER_METRIC_KIND_COUNTER can only be incremented monotonically by non-negative values.")
        series.value += value

    def set(self, handle: int, value: float) -> None:
        family, series = self._series(handle)
        if family.kind == COUNTER:
            raise InferenceError.unsupported("TRITONSERVER_METRIC_KIND_COUNTER does not support Set")
        series.value = value

    def value(self, handle: int) -> float:
        return self._series(handle)[1].value

    # -------------------------------------------------------------------- reading --

    def families(self) -> list[Family]:
        """Every family ever registered, in registration order (read on the loop thread)."""
        return list(self._families.values())


#: The process's registry (Triton's is the server's single Prometheus registry).
REGISTRY = CustomMetrics()
