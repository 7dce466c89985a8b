"""The pseudo-backend that loads ensembles: an ensemble has no instances, its scheduler
does the work."""

from __future__ import annotations

from typing import Sequence

from naiad.kernel.inference.backend import Backend, ExecutionTimes, InstanceSpec, ModelInstance, ModelSpec
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, ResponseSink

from .plan import PLATFORM

BACKEND = "ensemble"  # the manager's name for the pseudo-backend that loads ensembles


class _NoInstance(ModelInstance):
    async def execute(self, requests: Sequence[InferenceRequest], sinks: Sequence[ResponseSink]) -> ExecutionTimes:
        raise InferenceError.internal("an ensemble has no instances to execute")

    async def close(self) -> None:
        pass


class EnsembleBackend(Backend):
    """Loads ensembles: nothing to load, the scheduler does the work."""

    name = BACKEND
    platforms = (PLATFORM,)

    async def create_instance(self, model: ModelSpec, instance: InstanceSpec) -> ModelInstance:
        return _NoInstance()
