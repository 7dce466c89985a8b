"""`[services.tracing]` settings."""

from __future__ import annotations

from dataclasses import dataclass

from naiad.kernel.schema import setting

from .options import TraceOptions, parse


@dataclass
class TracingConfig:
    trace_config: list[str] = setting(
        [], "Triton trace settings as [<mode>,]<setting>=<value>: level, rate, count, mode; "
        "triton,file / triton,log-frequency; opentelemetry,url / resource / bsp_*", "--trace-config")

    def validate(self) -> None:
        parse(self.trace_config)

    def options(self) -> TraceOptions:
        return parse(self.trace_config)
