"""The families models create (`pb_utils.MetricFamily`, Triton's custom metrics API), as a
prometheus_client collector over the process's registry
(`naiad.kernel.inference.custom_metrics`). A family without series is left out."""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import Metric

from naiad.kernel.inference.custom_metrics import REGISTRY, CustomMetrics


class CustomFamilies:
    def __init__(self, registry: CustomMetrics = REGISTRY) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.families():
            if not family.series:
                continue
            m = Metric(family.name, family.description, family.kind)
            for labels, series in family.series.items():
                m.add_sample(family.name, dict(labels), series.value)
            yield m
