"""`[services.metrics]` settings."""

from __future__ import annotations

from dataclasses import dataclass

from naiad.kernel.schema import setting

from .options import MetricsOptions, parse


@dataclass
class MetricsConfig:
    host: str = setting("", "address to listen on; empty = the HTTP service's address", "--metrics-address")
    port: int = setting(8002, "port to listen on (0 = any free port)", "--metrics-port", minimum=0, maximum=65535)
    gpu: bool = setting(True, "report GPU metrics (needs nvidia-ml-py and a GPU)", "--allow-gpu-metrics")
    cpu: bool = setting(True, "report CPU utilization and memory", "--allow-cpu-metrics")
    interval_ms: float = setting(2000.0, "how often CPU and GPU figures are sampled (ms)", "--metrics-interval-ms",
                                 minimum=1)
    metrics_config: list[str] = setting(
        [], "counter_latencies=<bool>, histogram_latencies=<bool>, summary_latencies=<bool>, "
        "summary_quantiles=<q>:<err>,...",
        "--metrics-config")

    def validate(self) -> None:
        parse(self.metrics_config)

    def options(self) -> MetricsOptions:
        return parse(self.metrics_config)
