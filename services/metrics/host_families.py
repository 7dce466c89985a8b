"""The server-wide families sampled every `interval_ms`: CPU (`nv_cpu_*`) and GPU
(`nv_gpu_*`, `nv_energy_consumption`, label `gpu_uuid`). A prometheus_client collector
over the latest readings."""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import Metric

from naiad.ext.host_buffers import default_pool_bytes_in_use

from .gpu import GpuReading
from .system import CpuReading

_GPU = (
    ("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", "gauge", "utilization"),
    ("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", "gauge", "memory_total"),
    ("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", "gauge", "memory_used"),
    ("nv_gpu_power_usage", "GPU power usage in watts", "gauge", "power_usage"),
    ("nv_gpu_power_limit", "GPU power management limit in watts", "gauge", "power_limit"),
    ("nv_energy_consumption", "GPU energy consumption in joules since the Triton Server started", "counter",
     "energy"),
)


class HostFamilies:
    def __init__(self, pinned_pool_bytes: int = 0) -> None:
        self.cpu: CpuReading | None = None
        self.gpus: list[GpuReading] = []
        self.pinned_pool_bytes = pinned_pool_bytes  # --pinned-memory-pool-byte-size

    def collect(self) -> Iterator[Metric]:
        # Triton (2.51) exports the pinned pool even on a machine without a GPU.
        for name, doc, value in (
                ("nv_pinned_memory_pool_total_bytes", "Pinned memory pool total memory size, in bytes",
                 self.pinned_pool_bytes),
                ("nv_pinned_memory_pool_used_bytes", "Pinned memory pool used memory size, in bytes",
                 default_pool_bytes_in_use())):
            m = Metric(name, doc, "gauge")
            m.add_sample(name, {}, value)
            yield m
        for name, doc, kind, attr in _GPU if self.gpus else ():
            m = Metric(name, doc, kind)
            for g in self.gpus:
                m.add_sample(name, {"gpu_uuid": g.uuid}, getattr(g, attr))
            yield m
        cpu = self.cpu
        if cpu is not None:
            for name, doc, value in (
                    ("nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]", cpu.utilization),
                    ("nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes", cpu.memory_total),
                    ("nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes", cpu.memory_used)):
                m = Metric(name, doc, "gauge")
                m.add_sample(name, {}, value)
                yield m
