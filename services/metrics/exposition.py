"""Prometheus text format (0.0.4) as Triton writes it (prometheus-cpp): family names kept
as registered — a counter is `nv_inference_count`, not `nv_inference_count_total`, which
prometheus_client's own renderer would make of it — and whole numbers without a `.0`."""

from __future__ import annotations

import math
from typing import Iterable

from prometheus_client.core import Metric

CONTENT_TYPE = "text/plain; charset=utf-8"


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def render(families: Iterable[Metric]) -> bytes:
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.documentation)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for s in family.samples:
            if s.labels:
                labels = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in s.labels.items())
                lines.append(f"{s.name}{{{labels}}} {format_value(s.value)}")
            else:
                lines.append(f"{s.name} {format_value(s.value)}")
    lines.append("")
    return "\n".join(lines).encode("utf-8")
