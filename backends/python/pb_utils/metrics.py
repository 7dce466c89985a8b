"""Custom metrics (`MetricFamily`, `Metric`): they live in the server, which shows them on /metrics;
the stub holds handles."""

from __future__ import annotations

import enum
import weakref
from typing import Any

from . import runtime as _rt
from .errors import TritonModelException


class MetricKind(enum.IntEnum):
    COUNTER = 0
    GAUGE = 1


_KIND_NAMES = {MetricKind.COUNTER: "counter", MetricKind.GAUGE: "gauge"}
_FAMILY_GONE = (
    "Invalid metric operation as the corresponding 'MetricFamily' has been deleted. The 'MetricFamily' "
    "object should be deleted AFTER its corresponding 'Metric' objects have been deleted."
)


def _metric_call(op: str, args: tuple, failure: str) -> Any:
    """A metric call answered by the server (series live there, shown on /metrics)."""
    try:
        return _rt.require("MetricFamily").control(op, args)
    except TritonModelException as exc:
        raise TritonModelException(failure + exc.message()) from None


class Metric:
    """One labelled series of a MetricFamily; Metrics with the same labels share it."""

    __slots__ = ("_handle", "_cleared", "__weakref__")

    def __init__(self, handle: int) -> None:
        self._handle = handle
        self._cleared = False

    def increment(self, value: float) -> None:
        self._op("metric_increment", "Failed to increment metric value: ", float(value))

    def set(self, value: float) -> None:
        self._op("metric_set", "Failed to set metric value: ", float(value))

    def value(self) -> float:
        return float(self._op("metric_value", "Failed to get metric value: "))

    def _op(self, op: str, failure: str, *args: Any) -> Any:
        if self._cleared:
            raise TritonModelException(failure + _FAMILY_GONE)
        return _metric_call(op, (self._handle, *args), failure)

    def _clear(self) -> None:
        if not self._cleared:
            self._cleared = True
            if _rt.current is not None:
                _rt.current.notify("metric_delete", (self._handle,))

    def __del__(self) -> None:
        self._clear()


class MetricFamily:
    """A metric family on the server's /metrics. Deleting it invalidates its Metrics."""

    COUNTER = MetricKind.COUNTER
    GAUGE = MetricKind.GAUGE

    def __init__(self, name: str, description: str, kind: MetricKind) -> None:
        if name is None or description is None or kind is None:
            raise TypeError("MetricFamily(): name, description and kind are required")
        if kind not in _KIND_NAMES:
            raise TritonModelException("Error when creating MetricFamily: Unknown metric kind")
        self._metrics: weakref.WeakSet[Metric] = weakref.WeakSet()
        self._handle = _metric_call(
            "metric_family_new", (str(name), str(description), _KIND_NAMES[MetricKind(kind)]),
            "Error when creating MetricFamily: ")

    def Metric(self, labels: dict[str, str] | None = None) -> Metric:  # noqa: N802 (Triton's name)
        if labels is not None and not isinstance(labels, dict):
            raise TritonModelException("Failed to create metric. Labels must be a dictionary.")
        labels = {str(k): str(v) for k, v in (labels or {}).items()}
        metric = Metric(_metric_call("metric_new", (self._handle, labels), "Error when creating Metric: "))
        self._metrics.add(metric)
        return metric

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is None:
            return
        for metric in list(self._metrics):
            metric._clear()
        if _rt.current is not None:
            _rt.current.notify("metric_family_delete", (handle,))
