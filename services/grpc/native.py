"""The gRPC service on naiad's native front end (`naiad.ext._native_grpc`, grpc++).

The native thread owns the socket, HTTP/2 and the protobuf wire; this adapter only
drains its hand-off queue on the event loop (one eventfd wake-up for every call that
arrived meanwhile) and gives each call to the same `Servicer` the grpcio transport
uses. A ModelInfer request in the shape perf_analyzer and the clients send (no
parameters, raw tensors) arrives parsed, its inputs as views over the received
message, and its reply is encoded natively; every other call, and ModelInfer whenever
restricted protocols, header forwarding or tracing are on, arrives as its serialized
bytes and is parsed with the generated protobuf classes by the servicer's own handler.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from grpc_health.v1 import health_pb2

from naiad.kernel.bus import NoHandler
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.messages import SubmitInfer
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, RequestedOutput, ResponseSink, Tensor
from naiad.protos import grpc_service_pb2 as pb

from . import convert
from .config import COMPRESSION_LEVELS, GrpcConfig
from .servicer import SHUTTING_DOWN, UNARY_RPCS, Servicer, error_of

try:
    from naiad.ext import _native_grpc as _native
except ImportError as exc:  # built only where grpc++ was found (setup.py)
    _native = None
    IMPORT_ERROR = f"{exc}"
else:
    IMPORT_ERROR = ""

SERVICE_PREFIX = "/inference.GRPCInferenceService/"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"

#: grpc status code numbers (grpc/status.h) by name.
_CODE = {"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "NOT_FOUND": 5, "ALREADY_EXISTS": 6,
         "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14}
_STATUS = {code: _CODE[name] for code, name in convert.GRPC_CODE_NAME.items()}


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


class NativeGrpcServer:
    """Listens with the native front end and hands its calls to `servicer`."""

    def __init__(self, config: GrpcConfig, servicer: Servicer, log: Any, traces: Any = None) -> None:
        self.config = config
        self.servicer = servicer
        self.log = log
        self.traces = traces
        self.server: Any = None
        self.port = 0
        self.tasks: set[asyncio.Task] = set()
        self.streams: dict[int, _StreamCall] = {}
        self.calls: dict[int, asyncio.Task] = {}  # unary calls being answered, by call id
        self.pending: dict[int, InferenceRequest] = {}  # fast-path infer calls, by call id
        self._handlers = {SERVICE_PREFIX + name: (servicer.handler(name), req_type, name)
                          for name, (req_type, _) in UNARY_RPCS.items()}
        self._handlers[HEALTH_CHECK] = (servicer.handler("Check"), health_pb2.HealthCheckRequest, "Check")
        self._infer = None
        self._flush_soon = False

    def _flush(self) -> None:
        self._flush_soon = False
        self.server.flush()

    def _sent(self) -> None:
        """A reply was queued: wake the native thread once, at the end of this loop iteration."""
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def int_args(self) -> dict[str, int]:
        cfg = self.config
        args = {
            "grpc.so_reuseport": int(cfg.reuse_port),
            "grpc.keepalive_time_ms": cfg.keepalive_time_ms,
            "grpc.keepalive_timeout_ms": cfg.keepalive_timeout_ms,
            "grpc.keepalive_permit_without_calls": int(cfg.keepalive_permit_without_calls),
            "grpc.http2.max_pings_without_data": cfg.http2_max_pings_without_data,
            "grpc.http2.min_ping_interval_without_data_ms": cfg.http2_min_recv_ping_interval_without_data_ms,
            "grpc.http2.max_ping_strikes": cfg.http2_max_ping_strikes,
        }
        if cfg.max_connection_age_ms:
            args["grpc.max_connection_age_ms"] = cfg.max_connection_age_ms
        if cfg.max_connection_age_grace_ms:
            args["grpc.max_connection_age_grace_ms"] = cfg.max_connection_age_grace_ms
        return args

    async def start(self, key: bytes = b"", cert: bytes = b"", root: bytes | None = None) -> int:
        assert _native is not None
        cfg = self.config
        host = cfg.host
        address = f"[{host}]:{cfg.port}" if ":" in host else f"{host}:{cfg.port}"
        try:
            self.server = _native.Server(
                address, self.int_args(), min(cfg.max_message_bytes, 2147483647),
                COMPRESSION_LEVELS[cfg.response_compression_level],
                key.decode() if key else "", cert.decode() if cert else "", (root or b"").decode(),
                cfg.use_ssl_mutual)
        except RuntimeError as exc:
            raise OSError(str(exc)) from None
        self._infer = self.servicer.bus.request
        self._submit = self.servicer.bus.submit
        loop = asyncio.get_running_loop()
        loop.add_reader(self.server.fileno(), self._drain)
        self.port = self.server.port
        return self.port

    async def stop(self, grace: float) -> None:
        server = self.server
        if server is None:
            return
        loop = asyncio.get_running_loop()
        # Open streams finish once their requests are answered (the servicer's drain woke
        # them); unary calls were drained by the kernel. Wait up to the grace for them.
        deadline = loop.time() + grace
        while self.tasks and loop.time() < deadline:
            await asyncio.wait(list(self.tasks), timeout=max(0.0, deadline - loop.time()))
        await loop.run_in_executor(None, server.stop, 0.0)
        loop.remove_reader(server.fileno())
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=1.0)
        # The Server object stays referenced: events still held by Python point at it.

    # ------------------------------------------------------------------ the hand-off --

    def _drain(self) -> None:
        loop = asyncio.get_event_loop()
        tracer = self.traces.tracer if self.traces is not None else None
        servicer = self.servicer
        fast = tracer is None and servicer._infer_restriction is None and servicer._forward is None
        spawn = self._spawn
        for event in self.server.take():
            kind = event.kind
            if kind == 1 and fast:  # INFER: submitted here, answered by its sink
                self._infer_now(event)
            elif kind <= 1:  # UNARY, or INFER that must take the servicer's path
                spawn(loop.create_task(self._unary(event)), event.call_id)
            elif kind == 3:  # STREAM_MSG
                stream = self.streams.get(event.call_id)
                if stream is not None:
                    stream.feed(event)
            elif kind == 2:  # STREAM_START
                stream = self.streams[event.call_id] = _StreamCall(event, self._sent)
                spawn(loop.create_task(self._stream(stream)), event.call_id)
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

    def _spawn(self, task: asyncio.Task, call_id: int) -> None:
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
            event.fail(_CODE["UNAVAILABLE"], SHUTTING_DOWN)
            self._sent()
            return
        lifecycle.enter()
        try:
            model, version, rid, inputs, outputs = event.fields()
            request = InferenceRequest(
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
            event.fail(_CODE["UNIMPLEMENTED"], f"Method not found: {event.method}")
            self._sent()
            return
        handler, req_type, name = entry
        try:
            msg = req_type.FromString(memoryview(event))
            reply = await handler(msg, _UnaryCall(event))
            event.respond(convert.encode_infer_reply(reply) if name == "ModelInfer" else reply.SerializeToString())
            self._sent()
        except Exception as exc:
            self._fail(event, exc, name)

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
        if not isinstance(exc, (InferenceError, NoHandler)):
            if exc.__class__.__name__ == "DecodeError":
                return InferenceError.internal(f"failed to parse the {name} request")
            self.log.exception("gRPC %s failed", name, exc_info=exc)
        return error_of(exc)

    def _fail(self, event: Any, exc: BaseException, name: str) -> None:
        err = self._error(exc, name)
        event.fail(_STATUS[err.code], err.message)
        self._sent()
