"""GPU figures Triton reports (`nv_gpu_*`, `nv_energy_consumption`) read with NVML
(nvidia-ml-py's `pynvml`), per GPU with its `gpu_uuid` label. Absent NVML or GPUs, there
is nothing to report and `GpuSampler.open()` returns None. Calls block: run them off the
event loop."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("naiad.services.metrics")


@dataclass
class GpuReading:
    uuid: str
    utilization: float = 0.0  # 0.0 - 1.0
    memory_total: int = 0
    memory_used: int = 0
    power_usage: float = 0.0  # W
    power_limit: float = 0.0  # W
    energy: float = 0.0  # J since the sampler opened


class GpuSampler:
    def __init__(self, nvml: Any, handles: list[Any], uuids: list[str]) -> None:
        self.nvml = nvml
        self.handles = handles
        self.uuids = uuids
        self._energy_start: list[float | None] = [self._energy_mj(h) for h in handles]
        self.last: list[GpuReading] = [GpuReading(u) for u in uuids]

    @classmethod
    def open(cls) -> "GpuSampler | None":
        try:
            import pynvml  # nvidia-ml-py
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # no driver, no GPU
            log.debug("NVML not available: %s", exc)
            return None
        try:
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            uuids = []
            for h in handles:
                u = pynvml.nvmlDeviceGetUUID(h)
                uuids.append(u.decode() if isinstance(u, bytes) else str(u))
        except Exception as exc:
            log.warning("NVML could not list GPUs: %s", exc)
            pynvml.nvmlShutdown()
            return None
        if not handles:
            pynvml.nvmlShutdown()
            return None
        return cls(pynvml, handles, uuids)

    def _energy_mj(self, handle: Any) -> float | None:
        try:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except Exception:
            return None

    def sample(self) -> list[GpuReading]:
        nvml = self.nvml
        out = []
        for i, (h, uuid) in enumerate(zip(self.handles, self.uuids)):
            r = GpuReading(uuid)
            try:
                r.utilization = nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0
            except Exception:
                pass
            try:
                mem = nvml.nvmlDeviceGetMemoryInfo(h)
                r.memory_total, r.memory_used = int(mem.total), int(mem.used)
            except Exception:
                pass
            try:
                r.power_usage = nvml.nvmlDeviceGetPowerUsage(h) / 1000.0
            except Exception:
                pass
            try:
                r.power_limit = nvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0
            except Exception:
                pass
            now_mj, start = self._energy_mj(h), self._energy_start[i]
            if now_mj is not None and start is not None:
                r.energy = (now_mj - start) / 1000.0
            out.append(r)
        self.last = out
        return out

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:
            pass
