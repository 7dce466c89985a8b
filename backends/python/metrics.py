"""The parent's side of `pb_utils.MetricFamily` / `Metric`: a stub's metric calls against
the process's custom-metrics registry, and the handles that stub holds, released when it
goes (a model unloaded or a stub that died leaves no series behind)."""

from __future__ import annotations

from typing import Any, Callable

from naiad.kernel.inference.custom_metrics import REGISTRY, CustomMetrics


class StubMetrics:
    def __init__(self, registry: CustomMetrics = REGISTRY) -> None:
        self.registry = registry
        self.families: set[int] = set()
        self.metrics: set[int] = set()
        r = registry
        self.ops: dict[str, Callable[..., Any]] = {
            "metric_family_new": self._new_family,
            "metric_family_delete": self._delete_family,
            "metric_new": self._new_metric,
            "metric_delete": self._delete_metric,
            "metric_increment": r.increment,
            "metric_set": r.set,
            "metric_value": r.value,
        }

    def handles(self, op: str) -> bool:
        return op in self.ops

    def call(self, op: str, args: tuple) -> Any:
        """Run one call; raises InferenceError with the registry's words."""
        return self.ops[op](*args)

    def _new_family(self, name: str, description: str, kind: str) -> int:
        handle = self.registry.new_family(name, description, kind)
        self.families.add(handle)
        return handle

    def _delete_family(self, handle: int) -> None:
        if handle in self.families:
            self.families.discard(handle)
            self.registry.delete_family(handle)

    def _new_metric(self, family: int, labels: dict) -> int:
        handle = self.registry.new_metric(family, labels)
        self.metrics.add(handle)
        return handle

    def _delete_metric(self, handle: int) -> None:
        if handle in self.metrics:
            self.metrics.discard(handle)
            self.registry.delete_metric(handle)

    def release(self) -> None:
        for handle in list(self.metrics):
            self._delete_metric(handle)
        for handle in list(self.families):
            self._delete_family(handle)
