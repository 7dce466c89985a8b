"""One TensorRT model instance: the engine deserialised on the instance's GPU, one
execution context per optimisation profile it may use, one CUDA stream and one event.

An execution (on the instance's thread): pick the first allowed profile whose shape range
holds the batch, set the input shapes, copy the inputs (gathered into pinned pool buffers)
to device buffers on the stream, enqueue the engine (`execute_async_v3`), copy the
requested outputs back into pinned buffers, record the event and wait for it. Device
buffers grow to the largest batch seen and are reused. A CUDA error leaves the instance
failed (raised), a shape the engine refuses is an error response.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from naiad.backends.common.instance import FrameworkInstance, InstanceFailed
from naiad.backends.common.params import Params
from naiad.kernel.inference.backend import InstanceSpec, ModelSpec
from naiad.kernel.inference.errors import InferenceError

from .engine import EngineTensor, check_config, import_trt, instance_profiles, pick_profile, read_engine

log = logging.getLogger("naiad.backends")


class TrtInstance(FrameworkInstance):
    def __init__(self, model: ModelSpec, instance: InstanceSpec, path: Path, params: Params) -> None:
        super().__init__(model, instance, "tensorrt")
        self.path = path
        self.params = params
        self.device_id = instance.device_id
        self.runtime: Any = None
        self.engine: Any = None
        self.contexts: dict[int, Any] = {}
        self.buffers: dict[tuple[int, str], Any] = {}
        self.stream: Any = None
        self.event: Any = None
        self.tensors: dict[str, EngineTensor] = {}

    def load(self) -> None:
        from naiad.ext import cuda_path as cuda
        from naiad.ext.host_buffers import default_pool

        trt = import_trt()
        cuda.require(f"model '{self.model.name}' (TensorRT)")
        if self.instance.kind != "GPU":
            log.warning("model '%s': TensorRT runs on GPUs only; instance '%s' (KIND_%s) uses GPU %d",
                        self.model.name, self.instance.name, self.instance.kind, self.device_id)
        if not 0 <= self.device_id < cuda.device_count():
            raise InferenceError.invalid(
                f"instance '{self.instance.name}': GPU {self.device_id} does not exist ({cuda.device_count()} visible)")
        cuda.set_device(self.device_id)
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise InferenceError.invalid(
                f"unable to load model '{self.model.name}': TensorRT could not deserialize '{self.path}' (built with "
                f"another TensorRT version or for another GPU?)")
        tensors = read_engine(self.engine, trt)
        check_config(self.model.name, self.io, tensors)
        self.tensors = {t.config_name: t for t in tensors}
        self.engine_names = {t.config_name: t.name for t in tensors}
        self.profiles = instance_profiles(self.model.config, self.instance.group or None,
                                          int(self.engine.num_optimization_profiles))
        self.stream = cuda.Stream(self.device_id)
        self.event = cuda.Event()
        strategy = self.params.text("execution_context_allocation_strategy", "STATIC").upper()
        for p in self.profiles:
            if strategy == "ON_PROFILE_CHANGE" and hasattr(trt, "ExecutionContextAllocationStrategy"):
                ctx = self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE)
            else:
                ctx = self.engine.create_execution_context()
            if ctx is None:
                raise InferenceError.invalid(f"unable to create a TensorRT execution context for model '{self.model.name}'")
            if not ctx.set_optimization_profile_async(p, self.stream.handle):
                raise InferenceError.invalid(f"model '{self.model.name}': unable to select optimization profile {p}")
            self.contexts[p] = ctx
        self.stream.synchronize()
        self.pool = default_pool()
        self._cuda = cuda

    def _buffer(self, profile: int, name: str, nbytes: int) -> int:
        buf = self.buffers.get((profile, name))
        if buf is None:
            buf = self.buffers[(profile, name)] = self._cuda.DeviceBuffer(self.device_id)
        return buf.ensure(max(nbytes, 1))

    def infer(self, inputs: dict[str, np.ndarray], outputs: tuple[str, ...]) -> Mapping[str, np.ndarray]:
        cuda = self._cuda
        shapes = {n: tuple(a.shape) for n, a in inputs.items()}
        profile = pick_profile(self.tensors, shapes, self.profiles)
        if profile is None:
            raise InferenceError.invalid(
                f"no optimization profile of model '{self.model.name}' (instance '{self.instance.name}', profiles "
                f"{self.profiles}) accepts input shapes {', '.join(f'{n}{list(s)}' for n, s in shapes.items())}")
        ctx = self.contexts[profile]
        batch = next((a.shape[0] for n, a in inputs.items() if not self.tensors[n].is_shape_tensor and a.ndim), 0)
        keep: list[Any] = []
        try:
            for name, array in inputs.items():
                t = self.tensors[name]
                engine_name = self.engine_names[name]
                array = np.ascontiguousarray(array)
                keep.append(array)
                if t.is_shape_tensor:
                    if self.io.batching:  # Triton's shape tensors carry the batch size first
                        array = np.ascontiguousarray(np.concatenate([np.array([batch], array.dtype), array.reshape(-1)]))
                        keep.append(array)
                    # Shape-tensor values live in host memory for the whole execution.
                    ctx.set_tensor_address(engine_name, int(array.__array_interface__["data"][0]))
                    continue
                if not ctx.set_input_shape(engine_name, array.shape):
                    raise InferenceError.invalid(
                        f"model '{self.model.name}': TensorRT refused shape {list(array.shape)} for input '{name}'")
                ptr = self._buffer(profile, name, array.nbytes)
                cuda.copy_to_device(ptr, array, self.stream)
                ctx.set_tensor_address(engine_name, ptr)
            unresolved = ctx.infer_shapes()
            if unresolved:
                raise InferenceError.invalid(
                    f"model '{self.model.name}': TensorRT could not infer shapes for {', '.join(unresolved)}")
            out_shapes: dict[str, tuple[int, ...]] = {}
            for name, t in self.tensors.items():
                if t.is_input:
                    continue
                shape = tuple(int(d) for d in ctx.get_tensor_shape(self.engine_names[name]))
                if any(d < 0 for d in shape):
                    raise InferenceError.unsupported(
                        f"model '{self.model.name}': output '{name}' has a data-dependent shape, which naiad's "
                        f"tensorrt backend does not support")
                spec = self.io.output_map.get(name)
                itemsize = spec.dtype.itemsize if spec is not None else 4
                out_shapes[name] = shape
                ptr = self._buffer(profile, name, int(np.prod(shape, dtype=np.int64)) * itemsize)
                ctx.set_tensor_address(self.engine_names[name], ptr)
            if not ctx.execute_async_v3(self.stream.handle):
                raise InferenceError.internal(f"model '{self.model.name}': TensorRT failed to enqueue the execution")
            hosts = {}
            for name in outputs:
                spec = self.io.output_map.get(name)
                if spec is None or name not in out_shapes:
                    raise InferenceError.internal(f"model '{self.model.name}' has no output '{name}'")
                shape = out_shapes[name]
                count = int(np.prod(shape, dtype=np.int64))
                nbytes = count * spec.dtype.itemsize
                host = self.pool.acquire(max(nbytes, 1))
                cuda.copy_to_host(host, self.buffers[(profile, name)].ptr, self.stream, nbytes)
                hosts[name] = (host, shape, count, spec.dtype)
            self.event.record(self.stream)
            self.event.synchronize()
        except cuda.CudaError as exc:
            raise InstanceFailed(exc.message) from exc
        return {name: np.frombuffer(host, dtype=dtype, count=count).reshape(shape)
                for name, (host, shape, count, dtype) in hosts.items()}

    def describe_error(self, exc: BaseException) -> str:
        return f"TensorRT execution of model '{self.model.name}' failed: {exc}"

    def release(self) -> None:
        self.contexts.clear()
        self.engine = None
        self.runtime = None
        for buf in self.buffers.values():
            try:
                buf.close()
            except Exception as exc:  # keep releasing the rest
                log.warning("model '%s': freeing a device buffer failed: %s", self.model.name, exc)
        self.buffers.clear()
        for obj in (self.event, self.stream):
            if obj is not None:
                try:
                    obj.close()
                except Exception as exc:
                    log.warning("model '%s': %s", self.model.name, exc)
        self.event = self.stream = None
