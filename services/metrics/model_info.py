"""What the metrics need from each model's config, asked once per loaded version over the
bus (`ModelConfigQuery`) and forgotten when the model's state changes: its `metric_tags`
(extra labels `_<key>`) and whether its response cache is on."""

from __future__ import annotations

from dataclasses import dataclass, field

from naiad.kernel.bus import Bus, BusError
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.messages import ModelConfigQuery


@dataclass(frozen=True)
class ModelInfo:
    tags: tuple[tuple[str, str], ...] = ()
    cache: bool = False
    extra_labels: dict[str, str] = field(default_factory=dict, compare=False)


_UNKNOWN = ModelInfo()


class ModelInfoCache:
    def __init__(self, bus: Bus, server_cache: bool) -> None:
        self.bus = bus
        self.server_cache = server_cache
        self._known: dict[tuple[str, str], ModelInfo] = {}

    def get(self, name: str, version: str) -> ModelInfo:
        return self._known.get((name, version), _UNKNOWN)

    def forget(self, name: str) -> None:
        for key in [k for k in self._known if k[0] == name]:
            del self._known[key]

    async def learn(self, keys: list[tuple[str, str]]) -> None:
        """Ask for the configs of models not seen yet (no-op once all are known)."""
        for name, version in keys:
            if (name, version) in self._known or not self.bus.has_handler(ModelConfigQuery):
                continue
            try:
                cfg = await self.bus.request(ModelConfigQuery(name, version))
            except (InferenceError, BusError):
                continue  # unloaded meanwhile: ask again at the next scrape
            tags = tuple(sorted((str(k), str(v)) for k, v in getattr(cfg, "metric_tags", {}).items()))
            cache = self.server_cache and cfg.HasField("response_cache") and bool(cfg.response_cache.enable)
            self._known[(name, version)] = ModelInfo(tags, cache, {f"_{k}": v for k, v in tags})
