"""`FrameworkInstance`: the execute path the onnxruntime, pytorch and tensorrt backends share.

One batch: on the instance's thread, assemble the inputs (`batch.assemble`), call the
framework (`infer`, the one method a backend writes), split the outputs per request
(`batch.split`); back on the loop thread, send each request its response. A model error
(a bad shape the framework refuses, a wrong output datatype) becomes an error response
for every request of the batch; only a failure of the instance itself raises.
"""

from __future__ import annotations

import abc
import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np

from naiad.kernel.inference.backend import ExecutionTimes, InstanceSpec, ModelInstance, ModelSpec
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, ResponseSink, Tensor

from .batch import Batch, assemble, split
from .io import ModelIO
from .worker import InstanceThread

log = logging.getLogger("naiad.backends")


class InstanceFailed(Exception):
    """Raised by `infer` when the instance can no longer run (its device failed): the
    scheduler then fails the batch and the instance is restarted by its backend."""


class FrameworkInstance(ModelInstance):
    #: Passed to `assemble`: whether inputs must be private, writable arrays.
    copy_inputs = False
    #: Passed to `assemble`: whether BYTES inputs go to the framework as str.
    bytes_as_text = False

    def __init__(self, model: ModelSpec, instance: InstanceSpec, backend_name: str) -> None:
        self.model = model
        self.instance = instance
        self.backend_name = backend_name
        self.io = ModelIO(model.config)
        self.version_str = str(model.version)
        self.thread = InstanceThread(f"{backend_name}-{instance.name}")
        self.pool: Any = None  # a HostBufferPool for batched inputs (set by GPU paths)
        self.closed = False

    # ------------------------------------------------------------------ the framework --

    @abc.abstractmethod
    def infer(self, inputs: dict[str, np.ndarray], outputs: tuple[str, ...]) -> Mapping[str, np.ndarray]:
        """Run the model on one batch (called on the instance's thread). `inputs` maps
        input names to arrays in the model's shape; return at least the named outputs as
        host arrays. Raise InferenceError for a model error, InstanceFailed when the
        instance itself is broken."""

    def release(self) -> None:
        """Free the framework's resources (called on the instance's thread at close)."""

    # ------------------------------------------------------------------ execution --

    def _execute_sync(self, requests: Sequence[InferenceRequest]) -> tuple[list[list[Tensor]] | InferenceError, ExecutionTimes]:
        t0 = time.monotonic_ns()
        t1 = t2 = t0
        try:
            batch: Batch = assemble(requests, self.io, pool=self.pool, copy=self.copy_inputs,
                                    bytes_as_text=self.bytes_as_text)
            t1 = t2 = time.monotonic_ns()
            results = self.infer(batch.inputs, batch.outputs)
            t2 = time.monotonic_ns()
            per_request: list[list[Tensor]] | InferenceError = split(results, batch, self.io, requests)
        except InferenceError as exc:
            per_request = exc
        except InstanceFailed:
            raise
        except Exception as exc:  # the framework refused the batch: a model error
            per_request = InferenceError.internal(self.describe_error(exc))
        t3 = time.monotonic_ns()
        return per_request, ExecutionTimes(t0, t1, t2, t3, isinstance(per_request, InferenceError))

    def describe_error(self, exc: BaseException) -> str:
        return f"{self.backend_name} failed to execute model '{self.model.name}': {exc}"

    async def execute(self, requests: Sequence[InferenceRequest], sinks: Sequence[ResponseSink]) -> ExecutionTimes:
        if self.closed:
            raise InferenceError.unavailable(f"instance '{self.instance.name}' is closed")
        try:
            per_request, times = await self.thread.run(self._execute_sync, requests)
        except InstanceFailed as exc:
            raise InferenceError.internal(f"instance '{self.instance.name}' of model '{self.model.name}' failed: {exc}") from exc
        name, version = self.model.name, self.version_str
        if isinstance(per_request, InferenceError):
            log.debug("model '%s': a batch of %d request(s) failed: %s", name, len(requests), per_request.message)
            for r, sink in zip(requests, sinks):
                sink.send(InferenceResponse(name, version, id=r.id, error=per_request))
        else:
            for r, sink, outputs in zip(requests, sinks, per_request):
                sink.send(InferenceResponse(name, version, outputs, id=r.id))
        return times

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self.thread.run(self.release)
        finally:
            await self.thread.close()
