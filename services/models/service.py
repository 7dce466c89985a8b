"""The "models" service: answers the inference API on the bus.

Per request (the hot path): resolve the model version (dict lookups), validate against its
config, resolve shared-memory inputs, enqueue on its scheduler, await the response, then
write shared-memory outputs and classification results if the request asked for them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np

from naiad.kernel import objectstore
from naiad.kernel.inference import messages as m
from naiad.kernel.inference.backend import BackendContext
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import (
    FutureSink,
    InferenceRequest,
    InferenceResponse,
    QueueSink,
    ResponseSink,
    Tensor,
)
from naiad.kernel.lifecycle import SERVER_EXITING
from naiad.kernel.messages import DrainCut
from naiad.kernel.schema import setting
from naiad.kernel.service import Service
from naiad.kernel.version import TRITON_COMPATIBLE_VERSION

from . import composing
from .lanes import Lanes
from .lifecycle import LoadedVersion
from .manager import ModelManager
from .shm import SharedMemoryRegistry

log = logging.getLogger("naiad.services.models")

# What naiad implements of Triton's extensions, in Triton's order.
_EXTENSIONS = (
    "classification",
    "sequence",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory",
    "cuda_shared_memory",
    "binary_tensor_data",
    "parameters",
    "statistics",
)


@dataclass
class ModelsConfig:
    unload_timeout_secs: float = setting(30.0, "how long an unload waits for queued requests", "", minimum=0)
    native_batcher: bool = setting(
        True, "dynamic batcher queues and decisions in native code (naiad.ext._batcher) when it is built", "")


class _StreamSink(ResponseSink):
    """Wraps a caller's sink: post-processes each response and records statistics when
    the request ends. Every entry (awaited, submitted, streamed) goes through it, so the
    statistics count a request the same way whichever protocol or path brought it.

    The statistics record the model's answer, as Triton's core does (its backends report
    them): a classification or shared-memory write that fails after the model answered
    fails the reply, not the request's count (Triton classifies in its front ends, after
    the request was counted). A request of a non-decoupled model owes one response, so
    ending without one is a failure, whichever entry brought it; a decoupled one may end
    with only the final flag, a success."""

    __slots__ = ("inner", "service", "lv", "request", "answered")

    def __init__(self, inner: ResponseSink, service: "ModelService", lv: LoadedVersion,
                 request: InferenceRequest) -> None:
        self.inner = inner
        self.service = service
        self.lv = lv
        self.request = request
        self.answered = False

    def send(self, response: InferenceResponse) -> None:
        if not self.answered:
            self.answered = True
            self.lv.recorder.first_response(self.request.arrival_ns)
        if response.final:
            self.lv.recorder.request_done(self.request.arrival_ns, response.error, "BACKEND")
        try:
            self.service._postprocess(self.lv, self.request, response)
        except InferenceError as exc:
            response = InferenceResponse(self.lv.name, self.lv.version_str, id=self.request.id,
                                         error=exc, final=response.final)
        if response.final:
            trace = self.request.trace
            if trace is not None:
                for t in response.outputs:
                    trace.tensor("TENSOR_BACKEND_OUTPUT", t)
                trace.stamp("REQUEST_END")
        self.inner.send(response)

    def finish(self, error: InferenceError | None = None) -> None:
        if error is None and not self.lv.decoupled:
            error = InferenceError.internal("model finished the request without a response")
        self.lv.recorder.request_done(self.request.arrival_ns, error)
        if self.request.trace is not None:
            self.request.trace.stamp("REQUEST_END")
        self.inner.finish(error)


class ModelService(Service):
    Config = ModelsConfig
    start_timeout = 3600.0  # loading a large repository takes as long as it takes
    stop_timeout = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.manager: ModelManager | None = None
        self.mirrors: objectstore.Mirrors | None = None  # local copies of s3:// gs:// as:// repositories
        self._sync_lock = asyncio.Lock()  # one sync at a time: a poll and a load may ask together
        self.shm = SharedMemoryRegistry()
        server = self.context.config.server
        self._server_id = server.id
        self._strict = server.strict_readiness
        self._run_id = ""
        self.lanes = Lanes(self._record_for_lanes)

    # ------------------------------------------------------------------ setup --

    def setup(self) -> None:
        h = self.bus.handle
        own = self.name
        h(InferenceRequest, self.infer, own)
        h(m.StreamInfer, self.stream_infer, own)
        self.bus.handle_sync(m.SubmitInfer, self._submit_message, own)
        h(m.ServerMetadataQuery, self._server_metadata, own)
        h(m.ModelReadyQuery, self._model_ready, own)
        h(m.ModelMetadataQuery, self._model_metadata, own)
        h(m.ModelConfigQuery, self._model_config, own)
        h(m.ModelIsDecoupledQuery, self._is_decoupled, own)
        h(m.RepositoryIndexQuery, self._index, own)
        h(m.LoadModel, self._load, own)
        h(m.UnloadModel, self._unload, own)
        h(m.PollRepository, self._poll, own)
        h(m.ModelStatisticsQuery, self._statistics, own)
        h(m.StubProcessQuery, self._stubs, own)
        h(m.SystemShmRegister, self._shm_register, own)
        h(m.SystemShmUnregister, self._shm_unregister, own)
        h(m.SystemShmStatus, self._shm_status, own)
        h(m.CudaShmRegister, self._cuda_register, own)
        h(m.CudaShmUnregister, self._cuda_unregister, own)
        h(m.CudaShmStatus, self._cuda_status, own)
        h(m.WatchLanes, self.lanes.watch, own)
        h(m.UnwatchLanes, self.lanes.unwatch, own)
        self._drain_cuts = self.bus.subscribe(DrainCut, maxsize=4, overflow="drop_oldest")

    async def start(self) -> None:
        import uuid

        server = self.context.config.server
        self._run_id = uuid.uuid4().hex[:12]
        ctx = BackendContext(
            infer=self.infer_internal,
            stream=self.stream_internal,
            model_ready=self._bls_model_ready,
            load_model=self._bls_load,
            unload_model=self._bls_unload,
            server_id=server.id,
            run_id=self._run_id,
            log_verbose=self.context.config.log.verbose,
        )
        self.mirrors = objectstore.Mirrors(server.model_repository)
        await self._sync_mirrors()
        self.manager = ModelManager(
            repositories=[Path(p) for p in self.mirrors.local_paths(server.model_repository)],
            control_mode=server.model_control_mode,
            auto_complete=not server.disable_auto_complete_config,
            backend_context=ctx,
            backend_settings=self.context.config.backends,
            spawn=self.spawn,
            publish=self._publish,
            load_threads=server.model_load_thread_count,
            load_retries=server.model_load_retry_count,
            namespacing=server.model_namespacing,
        )
        self.manager.scheduling.configure(self.context.config, self.submit)
        self.spawn(self._end_work_when_cut(), "drain-cut")
        self._update_readiness()
        failures = await self.manager.load_at_start(server.load_model)
        self._update_readiness()
        if failures:
            names = ", ".join(sorted(failures))
            if server.exit_on_error:
                raise RuntimeError(f"failed to load model(s) {names} at start (--exit-on-error=true)")
            self.log.error("failed to load model(s) %s; serving the others", names)

    def _publish(self, event: Any) -> None:
        """The manager's events go out on the bus; a model's state change also brings its
        native lanes in line (once the manager's own bookkeeping for it has run)."""
        self.bus.publish_nowait(event)
        if isinstance(event, m.ModelStateChanged):
            asyncio.get_running_loop().call_soon(self.lanes.refresh, event.name)

    def _record_for_lanes(self, name: str) -> Any:
        return self.manager.record(name) if self.manager is not None else None

    async def stop(self) -> None:
        if self.manager is not None:
            try:
                await self.manager.close()
            except asyncio.CancelledError:  # the stop budget ran out: no stub outlives it
                self.manager.abort(InferenceError.unavailable(SERVER_EXITING))
                raise
        if self.mirrors is not None:
            self.mirrors.close()  # the downloaded versions go with the server
        self.shm.close()

    async def _end_work_when_cut(self) -> None:
        async for event in self._drain_cuts:
            if self.manager is not None:
                self.manager.abort(InferenceError.unavailable(event.message))

    def _update_readiness(self) -> None:
        ok = True if not self._strict or self.manager is None else self.manager.all_wanted_ready()
        self.context.lifecycle.set_condition("models", ok)

    # ------------------------------------------------------------------ inference --

    def _prepare(self, request: InferenceRequest, unary: bool) -> tuple[LoadedVersion, int]:
        manager = self.manager
        if manager is None:
            raise InferenceError.unavailable("models are not loaded yet")
        lv = manager.resolve(request.model_name, request.model_version)
        if unary and lv.decoupled:  # Triton's front ends refuse it before reading the request
            where = "HTTP end point" if request.protocol == "http" else "ModelInfer RPC"
            raise InferenceError.unsupported(f"{where} doesn't support models with decoupled transaction policy")
        trace = request.trace
        if trace is not None:
            trace.stamp("REQUEST_START")
            trace.model_version = lv.version_str
            for t in request.inputs:
                trace.tensor("TENSOR_QUEUE_INPUT", t)
        if len(request.inputs) == 1 and request.inputs[0].name == "raw_input" and not request.inputs[0].datatype:
            lv.schema.adopt_raw_input(request.inputs[0], request.id)
        batch = lv.schema.validate(request)
        for t in request.inputs:
            if t.shm is not None and t._raw is None:
                self.shm.resolve_input(t)
        if request.outputs:
            for out in request.outputs:
                if out.shm is not None:
                    self.shm.check_output(out.shm)
        return lv, batch

    def submit(self, request: InferenceRequest, sink: ResponseSink, unary: bool = False) -> None:
        """The one inference entry: validate and enqueue without waiting; the responses go
        to `sink`, the statistics are kept by `_StreamSink` whichever entry called. `unary`:
        the caller takes one response (ModelInfer, HTTP infer), so a decoupled model is
        refused. Raises InferenceError when the request is refused (counted nowhere, as in
        Triton, where such a request never reaches a backend)."""
        lv, batch = self._prepare(request, unary)
        lv.scheduler.enqueue(request, _StreamSink(sink, self, lv, request), batch)  # type: ignore[union-attr]

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """The awaited unary entry (bus handler for InferenceRequest): `submit` with a
        future for its one response."""
        future = asyncio.get_running_loop().create_future()
        self.submit(request, FutureSink(future), unary=True)
        try:
            return await future
        except asyncio.CancelledError:
            request.cancel.cancel()  # the caller went away: the model sees is_cancelled(); counted when it ends
            raise

    async def stream_infer(self, msg: m.StreamInfer) -> None:
        """The streaming entry: responses (any number for decoupled models) go to the sink."""
        self.submit(msg.request, msg.sink)

    def _submit_message(self, msg: m.SubmitInfer) -> None:
        """The task-less entry (bus.submit): front ends that answer from the sink."""
        self.submit(msg.request, msg.sink, msg.unary)

    def _postprocess(self, lv: LoadedVersion, request: InferenceRequest, response: InferenceResponse) -> None:
        if response.error is not None or not request.outputs:
            return
        wanted = {o.name: o for o in request.outputs}
        outputs = []
        for t in response.outputs:
            spec = wanted.get(t.name)
            if spec is None:
                continue
            if spec.classification:
                t = self._classify(lv, t, spec.classification, request)
            if spec.shm is not None:
                t = self.shm.write_output(t, spec.shm)
            outputs.append(t)
        response.outputs = outputs

    @staticmethod
    def _classify(lv: LoadedVersion, tensor: Tensor, k: int, request: InferenceRequest) -> Tensor:
        """Triton's classification extension: top-K "value:index[:label]" strings."""
        if tensor.datatype == "BYTES":
            raise InferenceError.invalid(f"class result not available for output due to unsupported type 'BYTES'")
        arr = np.asarray(tensor.array)
        batched = lv.schema.max_batch_size > 0 and arr.ndim >= 1
        rows = arr.reshape(arr.shape[0], -1) if batched else arr.reshape(1, -1)
        labels = lv.labels.get(tensor.name, [])
        k = min(k, rows.shape[1])
        out = np.empty((rows.shape[0], k), dtype=object)
        for r, row in enumerate(rows):
            order = np.argsort(-row.astype(np.float64), kind="stable")[:k]
            for j, idx in enumerate(order):
                value = row[idx]
                text = f"{float(value):f}:{idx}"
                if idx < len(labels):
                    text += f":{labels[idx]}"
                out[r, j] = text.encode()
        shape = out.shape if batched else (k,)
        return Tensor(tensor.name, "BYTES", shape, array=out.reshape(shape))

    # ------------------------------------------------------------------ BLS (from backends) --

    async def infer_internal(self, request: InferenceRequest) -> InferenceResponse:
        if not request.protocol:
            request.protocol = "bls"
        return await self.infer(request)

    async def stream_internal(self, request: InferenceRequest) -> AsyncIterator[InferenceResponse]:
        if not request.protocol:
            request.protocol = "bls"
        sink = QueueSink()
        await self.stream_infer(m.StreamInfer(request, sink))
        async for response in sink:
            yield response

    async def _bls_model_ready(self, name: str, version: str) -> bool:
        return await self._model_ready(m.ModelReadyQuery(name, version))

    async def _bls_load(self, name: str, config: str, files: dict[str, bytes]) -> None:
        await self._load(m.LoadModel(name, config or None, files))

    async def _bls_unload(self, name: str, unload_dependents: bool) -> None:
        await self._unload(m.UnloadModel(name, unload_dependents))

    # ------------------------------------------------------------------ metadata --

    async def _server_metadata(self, _: m.ServerMetadataQuery) -> m.ServerMetadata:
        extensions = list(_EXTENSIONS)
        if self.bus.has_handler(m.TraceSettingRequest):
            extensions.append("trace")
        if self.bus.has_handler(m.LogSettingRequest):
            extensions.append("logging")
        return m.ServerMetadata(self._server_id, TRITON_COMPATIBLE_VERSION, tuple(extensions))

    async def _model_ready(self, msg: m.ModelReadyQuery) -> bool:
        try:
            lv = self.manager.resolve(msg.name, msg.version)  # type: ignore[union-attr]
        except InferenceError:
            return False
        why = await lv.check_ready()
        if why is not None:
            log.debug("Model '%s' version %s is not ready: %s", lv.name, lv.version_str, why)
            return False
        return True

    async def _model_metadata(self, msg: m.ModelMetadataQuery) -> m.ModelMetadata:
        lv = self.manager.resolve(msg.name, msg.version)  # type: ignore[union-attr]
        record = self.manager.record(msg.name)  # type: ignore[union-attr]
        assert record is not None  # resolve found it
        if msg.version:
            versions = (lv.version_str,)
        else:
            versions = tuple(str(v) for v in sorted(record.versions) if record.versions[v].state.value == "READY")
        schema = lv.schema
        lead = (-1,) if schema.max_batch_size > 0 else ()
        inputs = tuple(m.TensorMetadata(s.name, s.datatype, lead + s.dims) for s in schema.inputs.values())
        outputs = tuple(m.TensorMetadata(s.name, s.datatype, lead + s.dims) for s in schema.outputs.values())
        platform = lv.config.platform or lv.config.backend
        return m.ModelMetadata(msg.name, versions, platform, inputs, outputs)

    async def _model_config(self, msg: m.ModelConfigQuery) -> Any:
        return self.manager.resolve(msg.name, msg.version).config  # type: ignore[union-attr]

    async def _is_decoupled(self, msg: m.ModelIsDecoupledQuery) -> bool:
        return self.manager.resolve(msg.name, msg.version).decoupled  # type: ignore[union-attr]

    # ------------------------------------------------------------------ repository --

    async def _sync_mirrors(self) -> None:
        """Bring the local copies of remote repositories up to date before the folders are read."""
        if self.mirrors is not None and self.mirrors.by_url:
            try:
                async with self._sync_lock:
                    await asyncio.to_thread(self.mirrors.sync)
            except Exception as exc:  # the store answered with an error or not at all
                self.log.error("failed to read the model repository from object storage: %s", exc)

    async def _index(self, msg: m.RepositoryIndexQuery) -> list:
        await self._sync_mirrors()
        return self.manager.index(msg.ready_only)  # type: ignore[union-attr]

    async def _load(self, msg: m.LoadModel) -> None:
        manager = self.manager
        assert manager is not None
        manager.check_control("load")
        if not msg.files:
            await self._sync_mirrors()
        if manager.control_mode == "poll":
            await manager.poll()
        else:
            await manager.load(msg.name, msg.config, msg.files)
        self._update_readiness()

    async def _unload(self, msg: m.UnloadModel) -> None:
        manager = self.manager
        assert manager is not None
        manager.check_control("unload")
        await composing.unload(manager, msg.name, msg.unload_dependents)
        self._update_readiness()

    async def _poll(self, _: m.PollRepository) -> None:
        if self.manager is not None and self.manager.control_mode == "poll":
            await self._sync_mirrors()
            await self.manager.poll()
            self._update_readiness()

    # ------------------------------------------------------------------ statistics --

    async def _statistics(self, msg: m.ModelStatisticsQuery) -> list:
        manager = self.manager
        assert manager is not None
        if msg.name:
            record = manager.record(msg.name)
            if record is None:
                raise InferenceError.not_found(f"Request for unknown model: '{msg.name}' is not found")
            if msg.version:
                return [record.resolve(msg.version).recorder.snapshot()]
            versions = [lv for lv in record.versions.values() if lv.state.value == "READY"]
            if not versions:
                raise InferenceError.unavailable(
                    f"Request for unknown model: '{msg.name}' has no available versions")
            return [lv.recorder.snapshot() for lv in sorted(versions, key=lambda v: v.version)]
        out = []
        for name in sorted(manager.records):
            for v in sorted(manager.records[name].versions):
                lv = manager.records[name].versions[v]
                if lv.state.value == "READY":
                    out.append(lv.recorder.snapshot())
        return out

    async def _stubs(self, msg: m.StubProcessQuery) -> list:
        # Instances running in a process of their own (Python stubs) expose pid and restarts.
        out: list[m.StubInfo] = []
        records = self.manager.records if self.manager is not None else {}
        for name in sorted(records):
            for v, lv in sorted(records[name].versions.items()):
                for inst in lv.instances:
                    if not hasattr(inst, "restarts"):
                        continue
                    spec = getattr(inst, "instance", None)
                    out.append(m.StubInfo(name, str(v), getattr(spec, "name", ""), getattr(inst, "pid", None),
                                          int(inst.restarts)))
        return out

    # ------------------------------------------------------------------ shared memory --

    async def _shm_register(self, msg: m.SystemShmRegister) -> None:
        self.shm.register_system(msg.name, msg.key, msg.offset, msg.byte_size)

    async def _shm_unregister(self, msg: m.SystemShmUnregister) -> None:
        self.shm.unregister_system(msg.name)

    async def _shm_status(self, msg: m.SystemShmStatus) -> list:
        return self.shm.system_status(msg.name)

    async def _cuda_register(self, msg: m.CudaShmRegister) -> None:
        self.shm.register_cuda(msg.name, msg.raw_handle, msg.device_id, msg.byte_size)

    async def _cuda_unregister(self, msg: m.CudaShmUnregister) -> None:
        self.shm.unregister_cuda(msg.name)

    async def _cuda_status(self, msg: m.CudaShmStatus) -> list:
        return self.shm.cuda_status(msg.name)
