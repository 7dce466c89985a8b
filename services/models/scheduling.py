"""Which scheduler serves a model version, and the server-wide parts schedulers share.

    ensemble_scheduling / platform "ensemble"  -> EnsembleScheduler (ensemble/)
    sequence_batching                          -> SequenceScheduler (sequence/)
    anything else                              -> Scheduler, the dynamic batcher (scheduler.py)

With `--rate-limit=execution_count` every instance is wrapped so that it executes only
while its rate-limiter resources are held (rate_limiter.py); with the response cache on
(`--cache-config local,size=N`) and `response_cache { enable: true }` in the model's
config, the scheduler is wrapped by the cache (cache.py). The dynamic batcher's queue is
native (naiad.ext._batcher) unless `[services.models] native_batcher = false`.

All schedulers share one interface: `start()`, `enqueue(request, sink, batch_size)`,
`await drain_and_stop(timeout)`; all but the ensemble's also change instances while they
serve (`add_instances`, `remove_instances`: a reload that changes only `instance_group`,
see instances.py).
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Protocol, Sequence

from naiad.kernel.inference.backend import ModelInstance
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, ResponseSink

from . import cache as response_cache
from . import ensemble
from .instances import PlannedInstance
from .instances import plan as instance_plan
from .rate_limiter import RateLimitedInstance, RateLimiter
from .scheduler import BatchingConfig, Scheduler
from .sequence import SequenceScheduler

log = logging.getLogger("naiad.services.models")


class ModelScheduler(Protocol):
    def start(self) -> None: ...

    def enqueue(self, request: InferenceRequest, sink: ResponseSink, batch_size: int) -> None: ...

    async def drain_and_stop(self, timeout: float | None = None) -> None: ...


class InstanceScheduler(ModelScheduler, Protocol):
    def add_instances(self, instances: Sequence[ModelInstance]) -> None:
        """Serve on `instances` from now on."""

    async def remove_instances(self, instances: Sequence[ModelInstance],
                               close: Callable[[ModelInstance], Awaitable[None]]) -> None:
        """Give `instances` no new work; hand each to `close` once its running work is done
        (the sequence batcher: once the sequences it holds have ended). Returns when every
        instance that held no sequence is closed."""


class SchedulingContext:
    """Owned by the model manager; configured by the models service at start."""

    def __init__(self, manager: Any = None) -> None:
        self.manager = manager
        self.limiter: RateLimiter | None = None
        self.cache: response_cache.ResponseCache | None = None
        self.submit: Callable[[InferenceRequest, ResponseSink], None] | None = None
        self.native_batcher = True  # [services.models] native_batcher

    def configure(self, config: Any, submit: Callable[[InferenceRequest, ResponseSink], None] | None = None) -> None:
        """From the server config: `[server] rate_limit`, `rate_limit_resources`, `[cache]`."""
        server = config.server
        if server.rate_limit == "execution_count":
            try:
                self.limiter = RateLimiter(server.rate_limit_resources)
            except ValueError as exc:
                raise InferenceError.invalid(str(exc)) from None
        else:
            self.limiter = None
        cache_cfg = getattr(config, "cache", None)
        if cache_cfg is not None and cache_cfg.enabled and cache_cfg.size > 0:
            self.cache = response_cache.ResponseCache(cache_cfg.size)
        else:
            self.cache = None
        self.submit = submit
        models = config.services.get("models")
        self.native_batcher = bool(getattr(models.config, "native_batcher", True)) if models is not None else True

    # ------------------------------------------------------------------ building --

    def create(self, lv: Any, spawn: Callable[[Any, str], Any]) -> ModelScheduler:
        """The scheduler for a LoadedVersion whose instances are created."""
        config = lv.config
        if ensemble.is_ensemble(config):
            manager = self.manager
            if manager is None:
                plan = ensemble.EnsemblePlan(config, _no_models)
            else:
                plan = ensemble.EnsemblePlan(config, manager.resolve, manager.namespace_of(lv.spec.repository))
            if plan.decoupled:
                # Triton marks an ensemble with a decoupled step decoupled itself.
                config.model_transaction_policy.decoupled = True
                lv.decoupled = True
            if config.HasField("response_cache") and config.response_cache.enable:
                log.warning("model '%s': the response cache does not serve ensembles; their composing models "
                            "may use it", lv.name)
            return ensemble.EnsembleScheduler(lv.name, lv.version, plan, self.submit, lv.recorder)
        wants_cache = response_cache.check_config(config)
        lv.instances = [self.limit(lv, inst, p) for inst, p in zip(lv.instances, instance_plan(config))]
        instances = lv.instances
        if config.HasField("sequence_batching"):
            if wants_cache:
                log.warning("model '%s': the sequence batcher does not use the response cache", lv.name)
            declared = [o.name for o in config.output]
            return SequenceScheduler(lv.name, lv.version, instances, config, lv.spec.model_dir, lv.recorder,
                                     spawn, declared, native_batcher=self.native_batcher)
        scheduler: Any = Scheduler(lv.name, lv.version, instances, BatchingConfig(config), lv.recorder, spawn,
                                   native=self.native_batcher)
        if wants_cache and self.cache is not None:
            scheduler = response_cache.CachingScheduler(scheduler, self.cache, lv.name, lv.version_str, lv.recorder)
        return scheduler

    def limit(self, lv: Any, instance: ModelInstance, planned: PlannedInstance) -> ModelInstance:
        """`instance` behind the rate limiter when it is on (closing it frees its gate)."""
        if self.limiter is None:
            return instance
        group = planned.group
        rl = group.rate_limiter if group.HasField("rate_limiter") else None
        gate = self.limiter.register(f"{lv.name}:{group.name}", rl, planned.spec.device_id)
        return RateLimitedInstance(instance, gate)


def _no_models(name: str, version: str) -> Any:
    raise InferenceError.unavailable(f"model '{name}' is not available")
