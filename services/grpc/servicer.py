"""Per-RPC logic of `inference.GRPCInferenceService` and `grpc.health.v1.Health/Check`.

Every RPC decodes its protobuf request (`convert`), makes one bus request, and encodes
the reply. Nothing here knows grpcio: the transport (`service.py`) hands each call a
small `Call` (metadata; for streams also `read`/`write`), cancels the handler's
coroutine when the client cancels, and turns an `InferenceError` raised here into the
gRPC status Triton would send (`convert.GRPC_CODE_NAME`).

ModelStreamInfer: a reader task (one per stream) submits each request as it arrives, so
several are in flight at once; the handler's own coroutine writes responses. As Triton
does, the responses of a non-decoupled model are written in request order and those of
a decoupled model as they come (in order per request). With `ordered_streams = true`, or
per stream with the metadata `naiad-ordered-stream: true`, every response waits for
the responses of the requests before it (Triton 24.04 has no such mode).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Awaitable, Callable, Protocol, Sequence

from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from naiad.kernel import header_forward
from naiad.kernel.bus import Bus, NoHandler
from naiad.kernel.inference import messages as m
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.trace import end_stream
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, ResponseSink
from naiad.kernel.lifecycle import Lifecycle
from naiad.kernel.messages import ServerLiveQuery, ServerReadyQuery
from naiad.protos import grpc_service_pb2 as pb

from . import convert
from .config import GrpcConfig
from .convert import InferReply, StreamReply

SHUTTING_DOWN = "GRPC server is shutting down and has stopped accepting new requests."
ORDERED_STREAM_HEADER = "naiad-ordered-stream"

#: RPC -> Triton's restricted-feature category (`grpc_server.cc`, `RestrictedCategory`).
CATEGORY: dict[str, str] = {
    "ServerLive": "health", "ServerReady": "health", "ModelReady": "health", "Check": "health",
    "ServerMetadata": "metadata", "ModelMetadata": "metadata",
    "ModelInfer": "inference", "ModelStreamInfer": "inference",
    "ModelConfig": "model-config",
    "ModelStatistics": "statistics",
    "RepositoryIndex": "model-repository", "RepositoryModelLoad": "model-repository",
    "RepositoryModelUnload": "model-repository",
    "SystemSharedMemoryStatus": "shared-memory", "SystemSharedMemoryRegister": "shared-memory",
    "SystemSharedMemoryUnregister": "shared-memory", "CudaSharedMemoryStatus": "shared-memory",
    "CudaSharedMemoryRegister": "shared-memory", "CudaSharedMemoryUnregister": "shared-memory",
    "TraceSetting": "trace",
    "LogSettings": "logging",
}

#: The unary RPCs of GRPCInferenceService: the request type and the reply's serializer
#: (ModelInfer's reply is an `InferReply`, written with its output buffers appended).
UNARY_RPCS: dict[str, tuple[type, Callable[[Any], bytes]]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse.SerializeToString),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse.SerializeToString),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse.SerializeToString),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse.SerializeToString),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse.SerializeToString),
    "ModelInfer": (pb.ModelInferRequest, convert.encode_infer_reply),
    "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse.SerializeToString),
    "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse.SerializeToString),
    "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse.SerializeToString),
    "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse.SerializeToString),
    "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse.SerializeToString),
    "SystemSharedMemoryStatus": (pb.SystemSharedMemoryStatusRequest,
                                 pb.SystemSharedMemoryStatusResponse.SerializeToString),
    "SystemSharedMemoryRegister": (pb.SystemSharedMemoryRegisterRequest,
                                   pb.SystemSharedMemoryRegisterResponse.SerializeToString),
    "SystemSharedMemoryUnregister": (pb.SystemSharedMemoryUnregisterRequest,
                                     pb.SystemSharedMemoryUnregisterResponse.SerializeToString),
    "CudaSharedMemoryStatus": (pb.CudaSharedMemoryStatusRequest, pb.CudaSharedMemoryStatusResponse.SerializeToString),
    "CudaSharedMemoryRegister": (pb.CudaSharedMemoryRegisterRequest,
                                 pb.CudaSharedMemoryRegisterResponse.SerializeToString),
    "CudaSharedMemoryUnregister": (pb.CudaSharedMemoryUnregisterRequest,
                                   pb.CudaSharedMemoryUnregisterResponse.SerializeToString),
    "TraceSetting": (pb.TraceSettingRequest, pb.TraceSettingResponse.SerializeToString),
    "LogSettings": (pb.LogSettingsRequest, pb.LogSettingsResponse.SerializeToString),
}
#: grpc.health.v1's one RPC, served beside the inference service.
HEALTH_RPC = ("Check", health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse.SerializeToString)


class Call(Protocol):
    """What the servicer needs of one call from the transport."""

    def metadata(self) -> Sequence[tuple[str, Any]]:
        """The client's metadata (headers) as (lower-case key, value) pairs."""


class StreamCall(Call, Protocol):
    async def read(self) -> Any | None:
        """The next request message, or None once the client is done sending."""

    async def write(self, reply: StreamReply) -> None:
        """Send one response (one write at a time)."""


# A bus request without a handler: the service that answers it is not running. Triton's
# words (UNAVAILABLE) where its build can leave the feature out (`grpc_server.cc`).
_MISSING_FEATURE = {
    "TraceSettingRequest": "the server does not support trace",
    "LogSettingRequest": "the server does not support dynamic logging",
    "ModelStatisticsQuery": "the server does not support model statistics",
}


def error_of(exc: BaseException) -> InferenceError:
    """Any exception from a handler -> the InferenceError the client gets."""
    if isinstance(exc, InferenceError):
        return exc
    if isinstance(exc, NoHandler):
        message_type = str(exc).rpartition(" ")[2]
        words = _MISSING_FEATURE.get(message_type, f"the service that answers {message_type} is not running")
        return InferenceError.unavailable(words)
    return InferenceError.internal(f"{exc.__class__.__name__}: {exc}")


def call_error(exc: BaseException, rpc: str, log: Any) -> InferenceError:
    """What a failed call answers (`error_of`); an exception that is neither a client's
    error nor a missing service is a bug, and is logged. Bytes that are not the RPC's
    message (protobuf refuses them, or a string field is not UTF-8) are the client's:
    INTERNAL as gRPC answers a message it cannot deserialize, without Python's words."""
    if isinstance(exc, (DecodeError, UnicodeDecodeError)):
        return InferenceError.internal(f"failed to parse the {rpc} request")
    if not isinstance(exc, (InferenceError, NoHandler)):
        log.exception("gRPC %s failed", rpc, exc_info=exc)
    return error_of(exc)


def _header(call: Call, key: str) -> Any:
    for k, v in call.metadata():
        if k == key:
            return v
    return None


class Servicer:
    def __init__(self, bus: Bus, lifecycle: Lifecycle, config: GrpcConfig, traces: Any = None) -> None:
        self.bus = bus
        self.traces = traces  # the kernel's TraceHub
        self.lifecycle = lifecycle
        self.config = config
        self.restrictions = config.restrictions()
        self._infer_restriction = self.restrictions.get("inference")
        pattern = config.header_forward_pattern
        self._forward = header_forward.compile_pattern(pattern)  # None when not forwarding
        self.draining = False
        self.streams: set[_Stream] = set()

    # ------------------------------------------------------------------ guards --

    def check_restricted(self, category: str, call: Call) -> None:
        restriction = self.restrictions.get(category)
        if restriction is not None:
            header, value = restriction
            got = _header(call, header)
            if isinstance(got, bytes):
                got = got.decode("latin-1")
            if got != value:
                raise InferenceError.unavailable(f"This protocol is restricted, expecting header '{header}'")

    def handler(self, name: str) -> Callable[[Any, Call], Awaitable[Any]]:
        """The guarded coroutine for a unary RPC: refused while shutting down (health
        RPCs excepted), checked against `restricted_protocol`, counted as in-flight."""
        method = getattr(self, name)
        if name == "ModelInfer":
            return method  # guards inline, on the hot path
        category = CATEGORY[name]
        restricted = category in self.restrictions
        health = category == "health"
        lifecycle = self.lifecycle

        async def guarded(request: Any, call: Call) -> Any:
            if not health and not lifecycle.accepting:
                raise InferenceError.unavailable(SHUTTING_DOWN)
            if restricted:
                self.check_restricted(category, call)
            lifecycle.enter()
            try:
                return await method(request, call)
            finally:
                lifecycle.leave()

        return guarded

    def infer_fast_path(self) -> bool:
        """Whether ModelInfer may take a transport's task-less path now (decoded from the
        wire natively, submitted without awaiting): only while no restricted protocol,
        header forwarding or tracing needs the call's metadata. The one RPC that may."""
        return (self._infer_restriction is None and self._forward is None
                and (self.traces is None or self.traces.tracer is None))

    def forwarded(self, call: Call) -> list[tuple[str, str]]:
        """Metadata matching `header_forward_pattern`, as string request parameters."""
        match = self._forward
        if match is None:
            return []
        out = []
        for k, v in call.metadata():
            if match(k):
                # binary (`-bin`) values arrive decoded; Triton passes them on as C strings,
                # so a value ends at its first NUL byte
                text = v if isinstance(v, str) else v.decode("latin-1")
                out.append((k, text.split("\0", 1)[0]))
        return out

    def drain(self) -> None:
        """Shutdown began: streams finish once their requests are answered."""
        self.draining = True
        for stream in list(self.streams):
            stream.wakeup()

    # ------------------------------------------------------------------ health --

    async def ServerLive(self, request: Any, call: Call) -> Any:
        return pb.ServerLiveResponse(live=await self.bus.request(ServerLiveQuery()))

    async def ServerReady(self, request: Any, call: Call) -> Any:
        return pb.ServerReadyResponse(ready=await self.bus.request(ServerReadyQuery()))

    async def ModelReady(self, request: Any, call: Call) -> Any:
        return pb.ModelReadyResponse(ready=await self.bus.request(m.ModelReadyQuery(request.name, request.version)))

    async def Check(self, request: Any, call: Call) -> Any:
        """grpc.health.v1: SERVING while the server is ready (Triton asks ServerIsReady)."""
        ready = await self.bus.request(ServerReadyQuery())
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)

    # ------------------------------------------------------------------ metadata --

    async def ServerMetadata(self, request: Any, call: Call) -> Any:
        return convert.server_metadata(await self.bus.request(m.ServerMetadataQuery()))

    async def ModelMetadata(self, request: Any, call: Call) -> Any:
        return convert.model_metadata(await self.bus.request(m.ModelMetadataQuery(request.name, request.version)))

    async def ModelConfig(self, request: Any, call: Call) -> Any:
        return convert.model_config(await self.bus.request(m.ModelConfigQuery(request.name, request.version)))

    async def ModelStatistics(self, request: Any, call: Call) -> Any:
        return convert.model_statistics(
            await self.bus.request(m.ModelStatisticsQuery(request.name, request.version)))

    # ------------------------------------------------------------------ repository --

    async def RepositoryIndex(self, request: Any, call: Call) -> Any:
        _no_repository_name(request.repository_name)
        return convert.repository_index(await self.bus.request(m.RepositoryIndexQuery(ready_only=request.ready)))

    async def RepositoryModelLoad(self, request: Any, call: Call) -> Any:
        _no_repository_name(request.repository_name)
        config, files = convert.load_parameters(request.parameters)
        await self.bus.request(m.LoadModel(request.model_name, config=config, files=files))
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, call: Call) -> Any:
        _no_repository_name(request.repository_name)
        dependents = convert.unload_dependents(request.parameters)
        await self.bus.request(m.UnloadModel(request.model_name, unload_dependents=dependents))
        return pb.RepositoryModelUnloadResponse()

    # ------------------------------------------------------------------ shared memory --

    async def SystemSharedMemoryStatus(self, request: Any, call: Call) -> Any:
        return convert.system_shm_status(await self.bus.request(m.SystemShmStatus(request.name)))

    async def SystemSharedMemoryRegister(self, request: Any, call: Call) -> Any:
        await self.bus.request(m.SystemShmRegister(request.name, request.key, request.offset, request.byte_size))
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, request: Any, call: Call) -> Any:
        await self.bus.request(m.SystemShmUnregister(request.name))
        return pb.SystemSharedMemoryUnregisterResponse()

    async def CudaSharedMemoryStatus(self, request: Any, call: Call) -> Any:
        return convert.cuda_shm_status(await self.bus.request(m.CudaShmStatus(request.name)))

    async def CudaSharedMemoryRegister(self, request: Any, call: Call) -> Any:
        await self.bus.request(m.CudaShmRegister(request.name, request.raw_handle, request.device_id,
                                                 request.byte_size))
        return pb.CudaSharedMemoryRegisterResponse()

    async def CudaSharedMemoryUnregister(self, request: Any, call: Call) -> Any:
        await self.bus.request(m.CudaShmUnregister(request.name))
        return pb.CudaSharedMemoryUnregisterResponse()

    # ------------------------------------------------------------------ trace and log settings --

    async def TraceSetting(self, request: Any, call: Call) -> Any:
        updates = convert.trace_updates(request.settings)
        reply = await self.bus.request(
            m.TraceSettingRequest(model=request.model_name, updates=updates, protocol="grpc"))
        return convert.trace_settings(reply)

    async def LogSettings(self, request: Any, call: Call) -> Any:
        updates = convert.log_updates(request.settings)
        return convert.log_settings(await self.bus.request(m.LogSettingRequest(updates=updates, protocol="grpc")))

    # ------------------------------------------------------------------ inference --

    async def ModelInfer(self, msg: Any, call: Call) -> InferReply:
        lifecycle = self.lifecycle
        if not lifecycle.accepting:
            raise InferenceError.unavailable(SHUTTING_DOWN)
        if self._infer_restriction is not None:
            self.check_restricted("inference", call)
        lifecycle.enter()
        tracer = self.traces.tracer if self.traces is not None else None
        trace = None
        read_ns = time.monotonic_ns() if tracer is not None else 0
        try:
            request, _ = convert.infer_request(msg, self.forwarded(call) if self._forward else ())
            if tracer is not None:
                trace = tracer.sample(request.model_name, request.id, dict(call.metadata()))
                if trace is not None:
                    trace.stamp("GRPC_WAITREAD_START", read_ns)
                    trace.stamp("GRPC_WAITREAD_END", read_ns)
                    request.trace = trace
            try:
                response: InferenceResponse = await self.bus.request(request)
            except asyncio.CancelledError:  # the client cancelled or went away
                request.cancel.cancel()
                raise
            if response.error is not None:
                raise response.error
            if trace is not None:
                trace.stamp("GRPC_SEND_START")
            return convert.infer_reply(response)
        finally:
            if trace is not None:
                trace.stamp("GRPC_SEND_END")
                trace.finish()
            lifecycle.leave()

    async def ModelStreamInfer(self, call: StreamCall) -> None:
        if not self.lifecycle.accepting:
            raise InferenceError.unavailable(SHUTTING_DOWN)
        self.check_restricted("inference", call)
        ordered = self.config.ordered_streams
        flag = _header(call, ORDERED_STREAM_HEADER)
        if flag is not None:
            ordered = (flag.decode("latin-1") if isinstance(flag, bytes) else flag).lower() in ("1", "true", "yes")
        stream = _Stream(self, call, ordered, self.forwarded(call))
        self.streams.add(stream)
        try:
            await stream.run()
        finally:
            self.streams.discard(stream)


def _no_repository_name(name: str) -> None:
    if name:
        raise InferenceError.unsupported("'repository_name' specification is not supported")


# ---------------------------------------------------------------------- streams --

class _Stream:
    """One ModelStreamInfer call: reads and submits requests, writes their responses.

    The out queue holds (reply or None, request done) entries; the writer leaves the
    in-flight count for a request once its last entry is written.
    """

    def __init__(self, servicer: Servicer, call: StreamCall, ordered_all: bool,
                 forwarded: list[tuple[str, str]]) -> None:
        self.servicer = servicer
        self.call = call
        self.ordered_all = ordered_all
        self.forwarded = forwarded
        self.out: deque[tuple[StreamReply | None, bool]] = deque()
        self.pending: deque[_StreamSink] = deque()  # ordered requests, in request order
        self.live: set[_StreamSink] = set()  # requests not answered yet (cancelled at close)
        self.outstanding = 0  # requests entered into the lifecycle, last entry not written
        self.reading_done = False
        self.read_error: BaseException | None = None
        self.closed = False
        self._wake: asyncio.Future | None = None
        self._decoupled: dict[tuple[str, str], bool] = {}

    def wakeup(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    # -------------------------------------------------------------- writer --

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read_all())
        lifecycle = self.servicer.lifecycle
        servicer = self.servicer
        out = self.out
        write = self.call.write
        try:
            while True:
                while out:
                    reply, done = out.popleft()
                    if reply is not None:
                        await write(reply)
                    if done:
                        self.outstanding -= 1
                        lifecycle.leave()
                if self.read_error is not None:
                    raise self.read_error
                if (self.reading_done or servicer.draining) and self.outstanding == 0:
                    return
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
        finally:
            self.closed = True
            reader.cancel()
            for sink in self.live:
                sink.request.cancel.cancel()
            self.live.clear()
            for _ in range(self.outstanding):
                lifecycle.leave()
            self.outstanding = 0
            try:
                await reader
            except BaseException:
                pass

    def push(self, reply: StreamReply | None, done: bool) -> None:
        self.out.append((reply, done))
        self.wakeup()

    def flush_ordered(self) -> None:
        pending = self.pending
        out = self.out
        while pending:
            head = pending[0]
            if head.buffer:
                out.extend(head.buffer)
                head.buffer.clear()
            if not head.done:
                break
            pending.popleft()
        self.wakeup()

    # -------------------------------------------------------------- reader --

    async def _read_all(self) -> None:
        read = self.call.read
        try:
            while not self.closed:
                msg = await read()
                if msg is None:
                    break
                await self._submit(msg)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.read_error = exc
        finally:
            self.reading_done = True
            self.wakeup()

    async def _is_decoupled(self, name: str, version: str) -> bool:
        key = (name, version)
        known = self._decoupled.get(key)
        if known is None:
            try:
                known = bool(await self.servicer.bus.request(m.ModelIsDecoupledQuery(name, version)))
            except (InferenceError, NoHandler):
                return False  # unknown model: its error is answered in order, as Triton does
            self._decoupled[key] = known
        return known

    async def _submit(self, msg: Any) -> None:
        servicer = self.servicer
        servicer.lifecycle.enter()
        self.outstanding += 1
        sink = _StreamSink(self, msg.id)
        if not servicer.lifecycle.accepting:
            sink.fail_early(InferenceError.unavailable(SHUTTING_DOWN))
            return
        if self.ordered_all or not await self._is_decoupled(msg.model_name, msg.model_version):
            sink.ordered = True
            self.pending.append(sink)
        try:
            request, sink.empty_final = convert.infer_request(msg, self.forwarded)
        except InferenceError as exc:
            sink.fail_early(exc)
            return
        sink.request = request
        traces = servicer.traces
        if traces is not None and traces.tracer is not None:
            traces.begin(request, dict(self.call.metadata()), _GRPC_READ)
        self.live.add(sink)
        try:
            await servicer.bus.request(m.StreamInfer(request, sink))
        except asyncio.CancelledError:
            request.cancel.cancel()
            raise
        except Exception as exc:  # refused before it was queued: answered with the id only
            self.live.discard(sink)
            sink.fail_early(error_of(exc))


_GRPC_READ = ("GRPC_WAITREAD_START", "GRPC_WAITREAD_END")
_GRPC_SEND = ("GRPC_SEND_START", "GRPC_SEND_END")


class _StreamSink(ResponseSink):
    """Receives one stream request's responses and queues them for the writer."""

    __slots__ = ("stream", "id", "request", "empty_final", "ordered", "buffer", "done")

    def __init__(self, stream: _Stream, request_id: str) -> None:
        self.stream = stream
        self.id = request_id
        self.request: InferenceRequest | None = None
        self.empty_final = False
        self.ordered = False
        self.buffer: list[tuple[StreamReply | None, bool]] = []
        self.done = False

    def _emit(self, reply: StreamReply | None, final: bool) -> None:
        if self.done or self.stream.closed:
            return
        if final:
            self.done = True
            self.stream.live.discard(self)
            if self.request is not None:  # its last reply is queued for the writer: the trace ends
                end_stream(self.request.trace, _GRPC_SEND)
        if self.ordered:
            self.buffer.append((reply, final))
            self.stream.flush_ordered()
        else:
            self.stream.push(reply, final)

    def send(self, response: InferenceResponse) -> None:
        final = response.final
        request = self.request
        if response.error is not None:
            reply = StreamReply(response.error.message, convert.empty_reply(request, final))
        else:
            try:
                reply = StreamReply("", convert.infer_reply(response, final))
            except Exception as exc:  # never raise into the model manager's callback
                reply = StreamReply(error_of(exc).message, convert.empty_reply(request, final))
        self._emit(reply, final)

    def finish(self, error: InferenceError | None = None) -> None:
        if error is not None:
            self._emit(StreamReply(error.message, convert.empty_reply(self.request, True)), True)
        elif self.empty_final:
            self._emit(StreamReply("", convert.empty_reply(self.request, True)), True)
        else:
            self._emit(None, True)

    def fail_early(self, error: InferenceError) -> None:
        """Refused before it reached the model: Triton sends the error with the id only."""
        self._emit(StreamReply(error.message, InferReply(pb.ModelInferResponse(id=self.id), [])), True)
