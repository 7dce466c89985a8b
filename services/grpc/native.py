"""The gRPC service on naiad's native front end (`naiad.ext._native_grpc`, grpc++).

The native thread owns the socket, HTTP/2 and the protobuf wire; this adapter only
drains its hand-off queue on the event loop (one eventfd wake-up for every call that
arrived meanwhile) and gives each call to the same `Servicer` the grpcio transport
uses. A ModelInfer request in the shape perf_analyzer and the clients send (no
parameters, raw tensors) arrives parsed, its inputs as views over the received
message, and its reply is encoded natively; every other call, and ModelInfer whenever
restricted protocols, header forwarding or tracing are on, arrives as its serialized
bytes and is parsed with the generated protobuf classes by the servicer's own handler.

Native lanes (ext/frontend/lane.h): the models service tells this adapter of its models'
lanes (`WatchLanes`, through `LaneGate`), and the native thread hands a plain ModelInfer
call straight to its model's lane, never waking Python for it. Lanes stay off when
`native_lanes` is false, go off whenever the servicer's fast path is off (tracing,
restricted protocols, header forwarding), and for good from the first sign of shutdown.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable, Coroutine

import grpc

from naiad.ext.lane_gate import LaneGate
from naiad.ext.native_front import NativeFront
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.messages import SubmitInfer
from naiad.kernel.inference.request_model import build_request
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, RequestedOutput, ResponseSink, Tensor
from naiad.protos import grpc_service_pb2 as pb

from . import convert
from .config import COMPRESSION_LEVELS, GrpcConfig
from .service import channel_args
from .servicer import HEALTH_RPC, SHUTTING_DOWN, UNARY_RPCS, Servicer, call_error

try:
    from naiad.ext import _native_grpc as _native
except ImportError as exc:  # built only where grpc++ was found (setup.py)
    _native = None
    IMPORT_ERROR = f"{exc}"
else:
    IMPORT_ERROR = ""

SERVICE_PREFIX = "/inference.GRPCInferenceService/"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"

#: The status code number (grpc/status.h) for each Triton error code.
_STATUS = {code: grpc.StatusCode[name].value[0] for code, name in convert.GRPC_CODE_NAME.items()}
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
_UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED.value[0]


def available() -> bool:
    return _native is not None


def unsupported_reason(cfg: GrpcConfig) -> str:
    """Why this configuration cannot be served natively ("" when it can)."""
    if _native is None:
        return f"the native gRPC front end was not built ({IMPORT_ERROR})"
    return ""


class _UnaryCall:
    """One native call seen through the servicer's `Call` interface."""

    __slots__ = ("event",)

    def __init__(self, event: Any) -> None:
        self.event = event

    def metadata(self) -> Any:
        return self.event.metadata()


class _StreamCall(_UnaryCall):
    """A ModelStreamInfer call: messages arrive from the drain, replies go to the native writer."""

    __slots__ = ("messages", "waiter", "ended", "sent")

    def __init__(self, event: Any, sent: Any) -> None:
        super().__init__(event)
        self.sent = sent
        self.messages: deque = deque()
        self.waiter: asyncio.Future | None = None
        self.ended = False

    def feed(self, event: Any) -> None:
        if event is None:
            self.ended = True
        else:
            self.messages.append(event)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> Any:
        while not self.messages:
            if self.ended:
                return None
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        event = self.messages.popleft()
        return pb.ModelInferRequest.FromString(memoryview(event))

    async def write(self, reply: Any) -> None:
        self.event.write(convert.encode_stream_reply(reply))
        self.sent()


# At stop, how long the calls already started may still be answered before they are cancelled.
_LAST_ANSWERS_SECS = 0.5


class _UnarySink(ResponseSink):
    """Answers a fast-path ModelInfer call when its one response arrives: no task waits."""

    __slots__ = ("server", "event", "request", "done")

    def __init__(self, server: "NativeGrpcServer", event: Any, request: InferenceRequest) -> None:
        self.server = server
        self.event = event
        self.request = request
        self.done = False

    def send(self, response: InferenceResponse) -> None:
        if not self.done:
            self.done = True
            self.server._answer(self.event, response, None)

    def finish(self, error: InferenceError | None = None) -> None:
        if not self.done:
            self.done = True
            self.server._answer(self.event, None, error or InferenceError.internal(
                "model finished the request without a response"))


class NativeGrpcServer(NativeFront):
    """Listens with the native front end and hands its calls to `servicer`. ModelInfer
    takes the task-less path while the servicer says it may (`infer_fast_path`); every
    other call runs as a task under `spawn` (the service's `Service.spawn`), so that a
    task's crash is the service's."""

    def __init__(self, config: GrpcConfig, servicer: Servicer, log: Any, *,
                 spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task], owner: str = "grpc") -> None:
        super().__init__()
        self.config = config
        self.owner = owner  # who watches the lanes (UnwatchLanes)
        self.servicer = servicer
        self.log = log
        self.spawn = spawn
        self.streams: dict[int, _StreamCall] = {}
        self.calls: dict[int, asyncio.Task] = {}  # unary calls being answered, by call id
        self.pending: dict[int, InferenceRequest] = {}  # fast-path infer calls, by call id
        self._handlers = {SERVICE_PREFIX + name: (servicer.handler(name), req_type, serializer, name)
                          for name, (req_type, serializer) in UNARY_RPCS.items()}
        name, req_type, serializer = HEALTH_RPC
        self._handlers[HEALTH_CHECK] = (servicer.handler(name), req_type, serializer, name)
        self._infer = None
        self.lanes: LaneGate | None = None  # while the models service tells us of its lanes

    async def start(self, key: bytes = b"", cert: bytes = b"", root: bytes | None = None) -> int:
        assert _native is not None
        cfg = self.config
        host = cfg.host
        address = f"[{host}]:{cfg.port}" if ":" in host else f"{host}:{cfg.port}"
        try:
            self.server = _native.Server(
                address, dict(channel_args(cfg)), min(cfg.max_message_bytes, 2147483647),
                COMPRESSION_LEVELS[cfg.response_compression_level],
                key.decode() if key else "", cert.decode() if cert else "", (root or b"").decode(),
                cfg.use_ssl_mutual)
        except RuntimeError as exc:
            raise OSError(str(exc)) from None
        self._infer = self.servicer.bus.request
        self._submit = self.servicer.bus.submit
        self.server.set_error_codes({int(code): status for code, status in _STATUS.items()})
        loop = asyncio.get_running_loop()
        loop.add_reader(self.server.fileno(), self._drain)
        self.port = self.server.port
        await self._watch_lanes()
        return self.port

    # ------------------------------------------------------------------ lanes --

    async def _watch_lanes(self) -> None:
        if not self.config.native_lanes:
            return
        self.lanes = LaneGate(self.server, self.servicer.bus, self.owner, self._lanes_allowed, self.log)
        await self.lanes.watch()

    def _lanes_allowed(self) -> bool:
        """Whether every plain ModelInfer call may skip Python now."""
        return self.servicer.lifecycle.accepting and self.servicer.infer_fast_path()

    def drain(self) -> None:
        """Shutdown began: every call takes the Python path (which refuses new work); the
        kernel's drain waits for the calls on lanes too."""
        if self.lanes is not None:
            self.lanes.drain()
            self.lanes.hold_inflight(self.servicer.lifecycle)

    async def stop(self, grace: float) -> None:
        # Open streams finish once their requests are answered (the servicer's drain woke
        # them); unary calls were drained by the kernel: wait up to the grace for them.
        # Then new calls are refused; the calls already started are answered (refused
        # UNAVAILABLE by now, the loop goes on taking them) rather than cancelled.
        if self.lanes is not None:
            grace = await self.lanes.close(grace)
        if self.server is not None:  # (the tests read it: how many calls never reached Python)
            self.log.info("gRPC: %d ModelInfer call(s) answered on native lanes", self.server.lane_served)
        await self._stop_native(grace, _LAST_ANSWERS_SECS)

    # ------------------------------------------------------------------ the hand-off --

    def _drain(self) -> None:
        fast = self.servicer.infer_fast_path()
        if self.lanes is not None:
            self.lanes.check()
        spawn = self._spawn
        for event in self.server.take():
            kind = event.kind
            if kind == 1 and fast:  # INFER: submitted here, answered by its sink
                self._infer_now(event)
            elif kind <= 1:  # UNARY, or INFER that must take the servicer's path
                spawn(self._unary(event), event.call_id)
            elif kind == 3:  # STREAM_MSG
                stream = self.streams.get(event.call_id)
                if stream is not None:
                    stream.feed(event)
            elif kind == 2:  # STREAM_START
                stream = self.streams[event.call_id] = _StreamCall(event, self._sent)
                spawn(self._stream(stream), event.call_id)
            elif kind == 4:  # STREAM_END: the client is done sending
                stream = self.streams.get(event.call_id)
                if stream is not None:
                    stream.feed(None)
            else:  # CANCELLED: the client cancelled or went away
                request = self.pending.get(event.call_id)
                if request is not None:
                    request.cancel.cancel()  # the model sees is_cancelled(); queued work is dropped
                task = self.calls.get(event.call_id)
                if task is not None:
                    task.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None], call_id: int) -> None:
        task = self.spawn(coro)
        self.tasks.add(task)
        calls = self.calls
        calls[call_id] = task

        def done(t: asyncio.Task) -> None:
            self.tasks.discard(t)
            if calls.get(call_id) is t:
                del calls[call_id]

        task.add_done_callback(done)

    def _infer_now(self, event: Any) -> None:
        """The fast path: build the request and submit it synchronously; its sink answers."""
        lifecycle = self.servicer.lifecycle
        if not lifecycle.accepting:
            event.fail(_UNAVAILABLE, SHUTTING_DOWN)
            self._sent()
            return
        lifecycle.enter()
        try:
            model, version, rid, inputs, outputs = event.fields()
            request = build_request(
                model, [Tensor(name, datatype, shape, raw=view) for name, datatype, shape, view in inputs],
                model_version=version, id=rid,
                outputs=[RequestedOutput(o) for o in outputs] if outputs is not None else None,
                protocol="grpc")
            self.pending[event.call_id] = request
            self._submit(SubmitInfer(request, _UnarySink(self, event, request), True))
        except Exception as exc:
            self.pending.pop(event.call_id, None)
            self._fail(event, exc, "ModelInfer")
            lifecycle.leave()

    def _answer(self, event: Any, response: InferenceResponse | None, error: InferenceError | None) -> None:
        try:
            if error is not None:
                raise error
            assert response is not None
            if response.error is not None:
                raise response.error
            if response.parameters or any(t.shm is not None for t in response.outputs):
                event.respond(convert.encode_infer_reply(convert.infer_reply(response)))
            else:
                event.respond_infer(response.model_name, response.model_version, response.id,
                                    [(t.name, t.datatype, t.shape, t.raw) for t in response.outputs])
            self._sent()
        except Exception as exc:
            self._fail(event, exc, "ModelInfer")
        finally:
            self.pending.pop(event.call_id, None)
            self.servicer.lifecycle.leave()

    async def _unary(self, event: Any) -> None:
        entry = self._handlers.get(event.method)
        if entry is None:
            event.fail(_UNIMPLEMENTED, f"Method not found: {event.method}")
            self._sent()
            return
        handler, req_type, serializer, name = entry
        try:
            msg = req_type.FromString(memoryview(event))
            reply = await handler(msg, _UnaryCall(event))
            event.respond(serializer(reply))
            self._sent()
        except Exception as exc:
            self._fail(event, exc, name)
        if self.lanes is not None:  # (a trace setting may have changed)
            self.lanes.check()

    async def _stream(self, stream: _StreamCall) -> None:
        event = stream.event
        try:
            await self.servicer.ModelStreamInfer(stream)
            event.finish(0, "")
            self._sent()
        except Exception as exc:
            err = self._error(exc, "ModelStreamInfer")
            event.finish(_STATUS[err.code], err.message)
            self._sent()
        finally:
            self.streams.pop(event.call_id, None)

    def _error(self, exc: BaseException, name: str) -> InferenceError:
        return call_error(exc, name, self.log)

    def _fail(self, event: Any, exc: BaseException, name: str) -> None:
        err = self._error(exc, name)
        event.fail(_STATUS[err.code], err.message)
        self._sent()
