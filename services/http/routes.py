"""HTTP route handlers (SPEC §1.1). Each decodes the request, makes one bus request and
encodes the reply; nothing else. Inference logic (validation, shared memory, sequences,
classification, the decoupled check) lives behind the bus in the model manager."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from typing import Any, AsyncIterator, Callable

from naiad.kernel import header_forward
from naiad.kernel.bus import Bus, NoHandler
from naiad.kernel.inference import model_config
from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.messages import (
    SubmitInfer,
    CudaShmRegister,
    CudaShmStatus,
    CudaShmUnregister,
    LoadModel,
    LogSettingRequest,
    ModelConfigQuery,
    ModelMetadataQuery,
    ModelReadyQuery,
    ModelStatisticsQuery,
    RepositoryIndexQuery,
    ServerMetadataQuery,
    StreamInfer,
    SystemShmRegister,
    SystemShmStatus,
    SystemShmUnregister,
    TraceSettingRequest,
    UnloadModel,
)
from naiad.kernel.inference.trace import end_stream
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, QueueSink, ResponseSink
from naiad.kernel.messages import ServerLiveQuery, ServerReadyQuery

from . import compression, render
from .codec import (
    JSON_NOT_A,
    HEADER_LENGTH,
    ResponsePlan,
    decode_infer,
    encode_infer,
    json_payload_bytes,
    parse_json,
    payload_bytes,
)
from .config import HttpConfig, parse_restricted_api
from .errors import status_for
from .generate import ONE_RESPONSE, SSE_TYPE, decode_generate, encode_generate, error_json, sse_event
from .router import JSON_TYPE, HttpRequest, HttpResponse, Router, error_response

_OK = HttpResponse(200)
_INLINE_INFLATE = 64 << 10  # bodies larger than this are (de)compressed off the event loop


def _ok_json() -> HttpResponse:
    return HttpResponse(200, b"", {"Content-Type": JSON_TYPE})


def _json_object(body: bytes | bytearray | memoryview, what: str = "request") -> dict:
    doc = parse_json(body, what)
    if type(doc) is not dict:
        raise InferenceError.internal(f"failed to parse the {what} JSON buffer: expected a JSON object")
    return doc


def _optional_object(body: bytes | bytearray | memoryview) -> dict:
    """An optional JSON object body (an empty body is `{}`)."""
    return _json_object(body) if len(body) else {}


_CUDA_IPC_HANDLE_SIZE = 64  # sizeof(cudaIpcMemHandle_t)


def _lenient_object(body: bytes | bytearray | memoryview) -> dict:
    """A JSON body read as Triton's `Find` reads it: members of a non-object are absent."""
    doc = parse_json(body)
    return doc if type(doc) is dict else {}


def _json_uint(value: Any) -> int:
    """TritonJson's `AsUInt` (its bare error text, INTERNAL)."""
    if type(value) is not int or not 0 <= value < 1 << 64:
        raise InferenceError.internal(JSON_NOT_A["uint"])
    return value


def _json_member(obj: Any, key: str, typ: type, kind: str) -> Any:
    """TritonJson's `MemberAs<kind>` (bare error texts, INTERNAL)."""
    if type(obj) is not dict or key not in obj:
        raise InferenceError.internal(f"attempt to access non-existing object member '{key}'")
    value = obj[key]
    if type(value) is not typ:
        raise InferenceError.internal(JSON_NOT_A[kind])
    return value


class _InferReply(ResponseSink):
    """Encodes the one response of a task-less infer (`HttpRoutes.infer_now`) and replies."""

    __slots__ = ("reply", "plan", "offload_bytes", "done")

    def __init__(self, reply: Callable[[HttpResponse], None], plan: Any, offload_bytes: int) -> None:
        self.reply = reply
        self.plan = plan
        self.offload_bytes = offload_bytes
        self.done = False

    def send(self, response: InferenceResponse) -> None:
        if self.done:
            return
        self.done = True
        if response.error is not None:
            return self._fail(response.error)
        if json_payload_bytes(response, self.plan) > self.offload_bytes:
            # A large JSON reply is encoded off the event loop.
            future = asyncio.get_running_loop().run_in_executor(None, encode_infer, response, self.plan)
            future.add_done_callback(self._encoded)
            return
        try:
            status, headers, out = encode_infer(response, self.plan)
        except Exception as exc:
            return self._fail(exc)
        self.reply(HttpResponse(status, out, headers))

    def _encoded(self, future: asyncio.Future) -> None:
        exc = future.exception()
        if exc is not None:
            return self._fail(exc)
        status, headers, out = future.result()
        self.reply(HttpResponse(status, out, headers))

    def finish(self, error: InferenceError | None = None) -> None:
        if not self.done:
            self.done = True
            self._fail(error or InferenceError.internal("model finished the request without a response"))

    def _fail(self, exc: BaseException) -> None:
        self.reply(error_response(exc))


class HttpRoutes:
    """The handlers, bound to the bus and the service's settings."""

    def __init__(self, bus: Bus, config: HttpConfig, traces: Any = None) -> None:
        self.bus = bus
        self.traces = traces  # the kernel's TraceHub
        self.config = config
        self.offload_bytes = config.offload_bytes
        self.max_body_bytes = config.max_body_bytes
        self.max_inflated_bytes = min(config.max_body_bytes, config.max_decompressed_bytes)
        pattern = config.header_forward_pattern
        self.forward_re = header_forward.compile_pattern(pattern)  # None when not forwarding

    # ---------------------------------------------------------------- helpers --

    async def _offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def _forwarded(self, headers: Any) -> list[tuple[str, str]]:
        matches = self.forward_re
        if matches is None:
            return []
        # Plain str: a transport's case-insensitive key type must not reach the backends.
        return [(str(k), str(v)) for k, v in headers.items() if matches(k)]

    async def _body(self, request: HttpRequest) -> bytes | bytearray | memoryview:
        """The request body after its Content-Encoding (infer only)."""
        body = request.body
        encoding = compression.request_encoding(request.headers.get("Content-Encoding"))
        if encoding == compression.IDENTITY:
            return body
        try:
            if len(body) > _INLINE_INFLATE:
                return await self._offload(compression.decompress, body, encoding, self.max_inflated_bytes)
            return compression.decompress(body, encoding, self.max_inflated_bytes)
        except compression.BodyTooLarge as exc:
            raise _TooLarge(exc.message) from None

    # ---------------------------------------------------------------- health, metadata --

    async def live(self, _: HttpRequest) -> HttpResponse:
        return _OK if await self.bus.request(ServerLiveQuery()) else HttpResponse(400)

    async def ready(self, _: HttpRequest) -> HttpResponse:
        return _OK if await self.bus.request(ServerReadyQuery()) else HttpResponse(400)

    async def server_metadata(self, _: HttpRequest) -> HttpResponse:
        return HttpResponse.json(render.server_metadata(await self.bus.request(ServerMetadataQuery())))

    async def model_ready(self, request: HttpRequest) -> HttpResponse:
        p = request.params
        try:
            ready = await self.bus.request(ModelReadyQuery(p["model"], _version(p)))
        except InferenceError as exc:
            if exc.code != ErrorCode.NOT_FOUND:
                raise
            ready = False
        return _OK if ready else HttpResponse.error("Model version not ready", 400)

    async def model_metadata(self, request: HttpRequest) -> HttpResponse:
        p = request.params
        meta = await self.bus.request(ModelMetadataQuery(p["model"], _version(p)))
        return HttpResponse.json(render.model_metadata(meta))

    async def model_config(self, request: HttpRequest) -> HttpResponse:
        p = request.params
        config = await self.bus.request(ModelConfigQuery(p["model"], _version(p)))
        return HttpResponse.json(model_config.to_dict(config))

    # ---------------------------------------------------------------- inference --

    async def infer(self, request: HttpRequest) -> HttpResponse:
        recv_end = time.monotonic_ns() if request.recv_ns else 0
        p = request.params
        headers = request.headers
        try:
            body = await self._body(request)
        except _TooLarge as exc:
            return HttpResponse.error(exc.message, 413)
        header_value = headers.get(HEADER_LENGTH)
        forward = self._forwarded(headers) if self.forward_re is not None else ()
        json_size = len(body) if header_value is None else _int_prefix(header_value)
        if json_size > self.offload_bytes:
            infer_request, plan = await self._offload(
                decode_infer, body, header_value, p["model"], _version(p), forward)
        else:
            infer_request, plan = decode_infer(body, header_value, p["model"], _version(p), forward)
        tracer = self.traces.tracer if self.traces is not None else None
        if tracer is not None:
            trace = tracer.sample(infer_request.model_name, infer_request.id, headers)
            if trace is not None:
                trace.stamp("HTTP_RECV_START", request.recv_ns or None)
                trace.stamp("HTTP_RECV_END", recv_end or None)
                request.trace = infer_request.trace = trace
        response: InferenceResponse = await self.bus.request(infer_request)
        if response.error is not None:
            raise response.error
        encoding = compression.response_encoding(headers.get("Accept-Encoding"))
        if (json_payload_bytes(response, plan) > self.offload_bytes
                or (encoding != compression.IDENTITY and payload_bytes(response) > _INLINE_INFLATE)):
            status, out_headers, out = await self._offload(encode_infer, response, plan, encoding)
        else:
            status, out_headers, out = encode_infer(response, plan, encoding)
        return HttpResponse(status, out, out_headers)

    def infer_now(self, request: HttpRequest, reply: Callable[[HttpResponse], None]) -> bool:
        """The infer route without a task, for transports that hand over many requests in
        one callback: decode, submit synchronously, answer from the response sink. Returns
        False, having done nothing, when the request needs the awaited path (compressed or
        large bodies, a compressed reply, header forwarding, tracing)."""
        headers = request.headers
        body = request.body
        if (self.forward_re is not None or len(body) > self.offload_bytes
                or (self.traces is not None and self.traces.tracer is not None)
                or headers.get("Content-Encoding", compression.IDENTITY) != compression.IDENTITY):
            return False
        try:
            if compression.response_encoding(headers.get("Accept-Encoding")) != compression.IDENTITY:
                return False
        except Exception:
            return False  # the awaited path words the error
        p = request.params
        try:
            infer_request, plan = decode_infer(body, headers.get(HEADER_LENGTH), p["model"], _version(p), ())
            self.bus.submit(SubmitInfer(infer_request, _InferReply(reply, plan, self.offload_bytes), True))
        except (InferenceError, NoHandler) as exc:
            reply(error_response(exc))
        return True

    async def _generate_request(self, request: HttpRequest) -> tuple[InferenceRequest, QueueSink]:
        p = request.params
        model, version = p["model"], _version(p)
        meta = await self.bus.request(ModelMetadataQuery(model, version))
        encoding = request.headers.get("Content-Encoding")
        if encoding and encoding != compression.IDENTITY:
            raise InferenceError.invalid("Unsupported content-encoding, only 'identity' is supported.")
        body = request.body
        if len(body) > self.offload_bytes:
            infer_request = await self._offload(decode_generate, body, meta, model, version)
        else:
            infer_request = decode_generate(body, meta, model, version)
        if self.traces is not None:  # generate's transport sends and ends it; generate_stream's _sse_events
            request.trace = self.traces.begin(infer_request, request.headers, _HTTP_RECV, request.recv_ns or None)
        sink = QueueSink()
        return infer_request, sink

    async def generate(self, request: HttpRequest) -> HttpResponse:
        infer_request, sink = await self._generate_request(request)
        await self.bus.request(StreamInfer(infer_request, sink))
        items: list[bytes | InferenceError] = []
        while True:
            item = await sink.queue.get()
            if item is None:
                break
            items.append(_render_generate(item))
        if len(items) != 1:
            return HttpResponse.error(ONE_RESPONSE, 500)
        item = items[0]
        if isinstance(item, InferenceError):
            return error_response(item)
        return HttpResponse.raw_json(item)

    async def generate_stream(self, request: HttpRequest) -> HttpResponse:
        infer_request, sink = await self._generate_request(request)
        request.trace = None  # the stream's end, not the transport, ends this trace
        await self.bus.request(StreamInfer(infer_request, sink))
        # As Triton, the status line waits for the first response and reflects it.
        first = await sink.queue.get()
        rendered = None if first is None else _render_generate(first)
        status = status_for(rendered.code) if isinstance(rendered, InferenceError) else 200
        return HttpResponse(status, headers={"Content-Type": SSE_TYPE},
                            stream=_sse_events(rendered, sink, infer_request))

    # ---------------------------------------------------------------- statistics, settings --

    async def statistics(self, request: HttpRequest) -> HttpResponse:
        p = request.params
        stats = await self.bus.request(ModelStatisticsQuery(p.get("model", ""), _version(p)))
        return HttpResponse.json(render.statistics(stats))

    async def trace_setting(self, request: HttpRequest) -> HttpResponse:
        # The JSON goes as it is: the tracing service checks it in Triton's order of keys.
        model = request.params.get("model", "")
        updates: dict[str, Any] = {}
        if request.method == "POST":
            try:
                updates = _json_object(request.body)
            except InferenceError:
                await self.bus.request(TraceSettingRequest(model=model))  # Triton checks the model first
                raise
        reply = await self.bus.request(TraceSettingRequest(model=model, updates=updates))
        return HttpResponse.json(reply)

    async def logging(self, request: HttpRequest) -> HttpResponse:
        updates = _json_object(request.body) if request.method == "POST" else {}
        return HttpResponse.json(await self.bus.request(LogSettingRequest(updates=updates)))

    # ---------------------------------------------------------------- model repository --

    async def repository_index(self, request: HttpRequest) -> HttpResponse:
        doc = _optional_object(request.body)
        ready = doc.get("ready", False)
        if type(ready) is not bool:
            raise InferenceError.internal("Unable to parse 'ready': expected a boolean")
        entries = await self.bus.request(
            RepositoryIndexQuery(ready_only=ready, repository=request.params.get("repository", "")))
        return HttpResponse.json(render.repository_index(entries))

    async def repository_load(self, request: HttpRequest) -> HttpResponse:
        _no_repository_name(request)
        doc = _optional_object(request.body)
        config: str | None = None
        files: dict[str, bytes] = {}
        params = doc.get("parameters")
        if params is not None:
            if type(params) is not dict:
                raise InferenceError.internal("Unable to parse 'parameters': expected a JSON object")
            for key, value in params.items():
                if type(value) is not str:
                    raise InferenceError.internal(f"Unable to parse '{key}': expected a string")
                if key == "config":
                    config = value
                elif key.startswith("file:"):
                    try:
                        files[key] = base64.b64decode(value)
                    except (binascii.Error, ValueError):
                        raise InferenceError.invalid(f"failed to decode the base64 content of '{key}'") from None
                else:
                    raise InferenceError.internal("unexpected error on creating Triton parameter")
        await self.bus.request(LoadModel(request.params["model"], config=config, files=files))
        return _ok_json()

    async def repository_unload(self, request: HttpRequest) -> HttpResponse:
        _no_repository_name(request)
        doc = _optional_object(request.body)
        dependents = False
        params = doc.get("parameters")
        if type(params) is dict and "unload_dependents" in params:
            dependents = params["unload_dependents"]
            if type(dependents) is not bool:
                raise InferenceError.internal("Unable to parse 'unload_dependents': expected a boolean")
        await self.bus.request(UnloadModel(request.params["model"], unload_dependents=dependents))
        return _ok_json()

    # ---------------------------------------------------------------- shared memory --

    async def system_shm_status(self, request: HttpRequest) -> HttpResponse:
        regions = await self.bus.request(SystemShmStatus(request.params.get("region", "")))
        return HttpResponse.json(render.system_shm_status(regions))

    async def system_shm_register(self, request: HttpRequest) -> HttpResponse:
        region = request.params.get("region", "")
        if not region:
            raise InferenceError.invalid("'region name' is necessary to register system shared memory region")
        doc = _lenient_object(request.body)
        if "key" not in doc:
            raise InferenceError.invalid("Shared memory register request has no 'key' field")
        key = doc["key"]
        if type(key) is not str:
            raise InferenceError.internal(JSON_NOT_A["string"])
        offset = _json_uint(doc.get("offset", 0))
        if "byte_size" not in doc:
            raise InferenceError.invalid("Shared memory register request has no 'byte_size' field")
        await self.bus.request(SystemShmRegister(region, key, offset, _json_uint(doc["byte_size"])))
        return _ok_json()

    async def system_shm_unregister(self, request: HttpRequest) -> HttpResponse:
        await self.bus.request(SystemShmUnregister(request.params.get("region", "")))
        return _ok_json()

    async def cuda_shm_status(self, request: HttpRequest) -> HttpResponse:
        regions = await self.bus.request(CudaShmStatus(request.params.get("region", "")))
        return HttpResponse.json(render.cuda_shm_status(regions))

    async def cuda_shm_register(self, request: HttpRequest) -> HttpResponse:
        region = request.params.get("region", "")
        if not region:
            raise InferenceError.invalid("'region name' is necessary to register cuda shared memory region")
        doc = _lenient_object(request.body)
        if "raw_handle" not in doc:
            raise InferenceError.invalid("Shared memory register request has no 'raw_handle' field")
        b64 = _json_member(doc["raw_handle"], "b64", str, "string")
        byte_size = _json_uint(_json_member(doc, "byte_size", int, "uint"))
        device_id = _json_uint(_json_member(doc, "device_id", int, "uint"))
        try:
            raw = base64.b64decode(b64)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != _CUDA_IPC_HANDLE_SIZE:
            raise InferenceError.invalid("'raw_handle' must be a valid base64 encoded cudaIpcMemHandle_t")
        await self.bus.request(CudaShmRegister(region, raw, device_id, byte_size))
        return _ok_json()

    async def cuda_shm_unregister(self, request: HttpRequest) -> HttpResponse:
        await self.bus.request(CudaShmUnregister(request.params.get("region", "")))
        return _ok_json()


class _TooLarge(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _version(params: dict[str, str]) -> str:
    """The requested model version as the core keys it ("" = the policy's latest);
    the path pattern admits digits only, "007" means 7 as in Triton."""
    v = params.get("version")
    return str(int(v)) if v else ""


def _int_prefix(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        return 0


def _no_repository_name(request: HttpRequest) -> None:
    if request.params.get("repository"):
        raise InferenceError("'repository_name' specification is not supported", ErrorCode.UNSUPPORTED)


def _render_generate(item: Any) -> bytes | InferenceError:
    """One queue item of a generate request: its JSON, or the error it carries."""
    if isinstance(item, InferenceError):
        return item
    try:
        return encode_generate(item)
    except InferenceError as exc:
        return exc


_HTTP_RECV = ("HTTP_RECV_START", "HTTP_RECV_END")
_HTTP_SEND = ("HTTP_SEND_START", "HTTP_SEND_END")


async def _sse_events(first: bytes | InferenceError | None, sink: QueueSink,
                      request: InferenceRequest) -> AsyncIterator[bytes]:
    """`data: <json>\\n\\n` per response, `data: {"error": ...}\\n\\n` per failure; if the
    client goes away first, the request is cancelled."""
    finished = first is None
    send_start = time.monotonic_ns()
    try:
        item = first
        while item is not None:
            if isinstance(item, InferenceError):
                yield sse_event(error_json(item.message))
            else:
                yield sse_event(item)
            nxt = await sink.queue.get()
            if nxt is None:
                finished = True
                break
            item = _render_generate(nxt)
    finally:
        if not finished:
            request.cancel.cancel()
        end_stream(request.trace, _HTTP_SEND, send_start)


def build_router(bus: Bus, config: HttpConfig | None = None, traces: Any = None) -> Router:
    """Every route of Triton 2.45's HTTP frontend, with its restricted-API category."""
    config = config or HttpConfig()
    r = HttpRoutes(bus, config, traces)
    router = Router(parse_restricted_api(config.restricted_api))
    add = router.add
    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version:[0-9]+}"

    # Inference first: the hot path meets its pattern before any other. Its task-less
    # form is the one route a transport may take without awaiting (`Router.resolve_fast`).
    for base in (model, versioned):
        add("POST", base + "/infer", r.infer, "inference", fast=r.infer_now)
    add("GET", "/v2/models/stats", r.statistics, "statistics")
    add(("GET", "POST"), "/v2/logging", r.logging, "logging")
    for base in (model, versioned):
        add("POST", base + "/generate", r.generate, "inference")
        add("POST", base + "/generate_stream", r.generate_stream, "inference")
        add("GET", base + "/ready", r.model_ready, "health")
        add("GET", base + "/config", r.model_config, "model-config")
        add("GET", base + "/stats", r.statistics, "statistics")
        add("GET", base, r.model_metadata, "metadata")
    add(("GET", "POST"), model + "/trace/setting", r.trace_setting, "trace")

    add("GET", "/v2", r.server_metadata, "metadata")
    add("GET", "/v2/health/live", r.live, "health")
    add("GET", "/v2/health/ready", r.ready, "health")

    for kind, status, register, unregister in (
        ("systemsharedmemory", r.system_shm_status, r.system_shm_register, r.system_shm_unregister),
        ("cudasharedmemory", r.cuda_shm_status, r.cuda_shm_register, r.cuda_shm_unregister),
    ):
        for base in (f"/v2/{kind}", f"/v2/{kind}/region/{{region}}"):
            add("GET", base + "/status", status, "shared-memory")
            add("POST", base + "/register", register, "shared-memory")
            add("POST", base + "/unregister", unregister, "shared-memory")

    for base in ("/v2/repository", "/v2/repository/{repository}"):
        add("POST", base + "/index", r.repository_index, "model-repository")
        add("POST", base + "/models/{model}/load", r.repository_load, "model-repository")
        add("POST", base + "/models/{model}/unload", r.repository_unload, "model-repository")

    add(("GET", "POST"), "/v2/trace/setting", r.trace_setting, "trace")
    return router


__all__ = ["HttpRoutes", "ResponsePlan", "build_router"]
