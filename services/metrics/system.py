"""CPU figures Triton reports (`nv_cpu_*`), sampled with psutil: utilization over the
last interval (0.0-1.0, all cores) and RAM total / used (total - available, as Triton
reads /proc/meminfo)."""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass
class CpuReading:
    utilization: float = 0.0
    memory_total: int = 0
    memory_used: int = 0


class CpuSampler:
    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)  # the first reading only starts the interval
        self.last = CpuReading()

    def sample(self, memory_only: bool = False) -> CpuReading:
        """A reading; `memory_only` leaves utilization at 0 (no interval measured yet)."""
        mem = psutil.virtual_memory()
        utilization = 0.0 if memory_only else psutil.cpu_percent(interval=None) / 100.0
        self.last = CpuReading(utilization, int(mem.total), int(mem.total - mem.available))
        return self.last
