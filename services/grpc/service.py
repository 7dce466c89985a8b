"""The gRPC service on grpcio's asyncio server: the only module that touches grpcio.

It listens (TLS, keepalive, message sizes and compression from the config), registers
`inference.GRPCInferenceService` and `grpc.health.v1.Health/Check`, and adapts each call
to the transport-neutral `Servicer`: a `Call` for metadata and streaming reads/writes,
and an `InferenceError` raised by the servicer becomes the call's status.

Shutdown: the kernel's drain makes `lifecycle.accepting` false, so new calls get
UNAVAILABLE, and open streams finish once their requests are answered (the kernel waits
for those through `lifecycle.inflight`); `stop()` then stops the server, cancelling what
is still open after `stop_grace_secs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import grpc
from grpc import aio

from naiad.kernel.schema import ConfigError
from naiad.kernel.service import Service
from naiad.protos import grpc_service_pb2 as pb

from . import convert
from .config import COMPRESSION_LEVELS, GrpcConfig
from .servicer import HEALTH_RPC, UNARY_RPCS, Servicer, call_error

SERVICE_NAME = "inference.GRPCInferenceService"
HEALTH_SERVICE_NAME = "grpc.health.v1.Health"

_STATUS = {code: getattr(grpc.StatusCode, name) for code, name in convert.GRPC_CODE_NAME.items()}


class _Call:
    """A grpcio ServicerContext seen through the servicer's `Call` interface."""

    __slots__ = ("context",)

    def __init__(self, context: Any) -> None:
        self.context = context

    def metadata(self) -> Any:
        return self.context.invocation_metadata() or ()

    async def read(self) -> Any:
        msg = await self.context.read()  # bytes: parsed here so a bad message gets our status
        return None if msg is aio.EOF else pb.ModelInferRequest.FromString(msg)

    async def write(self, reply: Any) -> None:
        await self.context.write(reply)


def channel_args(cfg: GrpcConfig) -> list[tuple[str, int]]:
    """grpc core channel arguments from the config (Triton's `grpc_server.cc` set), for
    both transports; message sizes and compression go to each its own way."""
    args = [
        ("grpc.so_reuseport", int(cfg.reuse_port)),
        ("grpc.keepalive_time_ms", cfg.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", cfg.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", int(cfg.keepalive_permit_without_calls)),
        ("grpc.http2.max_pings_without_data", cfg.http2_max_pings_without_data),
        ("grpc.http2.min_ping_interval_without_data_ms", cfg.http2_min_recv_ping_interval_without_data_ms),
        ("grpc.http2.max_ping_strikes", cfg.http2_max_ping_strikes),
    ]
    if cfg.max_connection_age_ms:
        args.append(("grpc.max_connection_age_ms", cfg.max_connection_age_ms))
    if cfg.max_connection_age_grace_ms:
        args.append(("grpc.max_connection_age_grace_ms", cfg.max_connection_age_grace_ms))
    return args


async def _abort(context: Any, exc: Exception, rpc: str, log: Any) -> None:
    """End a failed call with the status its error maps to."""
    if isinstance(exc, aio.AbortError):  # the call was ended already
        raise exc
    err = call_error(exc, rpc, log)
    await context.abort(_STATUS[err.code], err.message)


def _unary(method: Callable, rpc: str, log: Any, req_type: Any) -> Callable:
    """The grpcio handler of one unary RPC. It takes the request's bytes and parses them
    itself: grpcio would answer a message it cannot parse with UNKNOWN and Python's words."""
    async def handle(request: bytes, context: Any) -> Any:
        try:
            return await method(req_type.FromString(request), _Call(context))
        except Exception as exc:
            await _abort(context, exc, rpc, log)

    return handle


def _read_pem(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"[services.grpc].{what}: cannot read {path}: {exc.strerror}") from None


class GrpcService(Service):
    Config = GrpcConfig
    stop_timeout = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config: GrpcConfig
        self.servicer: Servicer | None = None
        self._server: aio.Server | None = None
        self._native: Any = None  # native.NativeGrpcServer when transport = "native"
        self.port = 0

    def options(self) -> list[tuple[str, Any]]:
        """grpcio's server options: message sizes, the channel arguments, compression."""
        cfg = self.config
        opts: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            *channel_args(cfg),
        ]
        level = COMPRESSION_LEVELS[cfg.response_compression_level]
        if level:
            opts.append(("grpc.default_compression_level", level))
        return opts

    def credentials(self) -> grpc.ServerCredentials | None:
        cfg = self.config
        if not (cfg.use_ssl or cfg.use_ssl_mutual):
            return None
        key = _read_pem(cfg.server_key, "server_key")
        cert = _read_pem(cfg.server_cert, "server_cert")
        root = _read_pem(cfg.root_cert, "root_cert") if cfg.root_cert else None
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=root,
                                           require_client_auth=cfg.use_ssl_mutual)

    def _handlers(self, servicer: Servicer) -> dict[str, grpc.RpcMethodHandler]:
        log = self.log
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for name, (req_type, serializer) in UNARY_RPCS.items():
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                _unary(servicer.handler(name), name, log, req_type), response_serializer=serializer)

        async def model_stream_infer(request_iterator: Any, context: Any) -> None:
            try:
                await servicer.ModelStreamInfer(_Call(context))
            except Exception as exc:
                await _abort(context, exc, "ModelStreamInfer", log)

        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            model_stream_infer, response_serializer=convert.encode_stream_reply)
        return handlers

    def _health_handlers(self, servicer: Servicer) -> dict[str, grpc.RpcMethodHandler]:
        name, req_type, serializer = HEALTH_RPC
        return {
            name: grpc.unary_unary_rpc_method_handler(
                _unary(servicer.handler(name), name, self.log, req_type), response_serializer=serializer)
        }

    async def start(self) -> None:
        cfg = self.config
        servicer = self.servicer = Servicer(self.bus, self.context.lifecycle, cfg, self.context.traces)
        if cfg.transport == "native":
            from . import native

            reason = native.unsupported_reason(cfg)
            if not reason:
                await self._start_native(native, servicer)
                return
            self.log.warning("gRPC: %s; serving on grpcio", reason)
        credentials = self.credentials()
        server = aio.server(options=self.options())
        for service_name, handlers in ((SERVICE_NAME, self._handlers(servicer)),
                                       (HEALTH_SERVICE_NAME, self._health_handlers(servicer))):
            if hasattr(server, "add_registered_method_handlers"):
                server.add_registered_method_handlers(service_name, handlers)
            else:  # grpcio < 1.63
                server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, handlers),))
        host = cfg.host
        address = f"[{host}]:{cfg.port}" if ":" in host else f"{host}:{cfg.port}"
        try:
            if credentials is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise OSError(f"gRPC service cannot listen on {address}: {exc}") from None
        await server.start()
        self._server = server
        self.log.info("gRPC service listening on %s:%d%s", host, self.port, " (TLS)" if credentials else "")

    async def _start_native(self, native: Any, servicer: Servicer) -> None:
        cfg = self.config
        tls = cfg.use_ssl or cfg.use_ssl_mutual
        key = _read_pem(cfg.server_key, "server_key") if tls else b""
        cert = _read_pem(cfg.server_cert, "server_cert") if tls else b""
        root = _read_pem(cfg.root_cert, "root_cert") if tls and cfg.root_cert else None
        self._native = native.NativeGrpcServer(cfg, servicer, self.log, spawn=self.spawn, owner=self.name)
        self.port = await self._native.start(key, cert, root)
        self.log.info("gRPC service listening on %s:%d (native)%s", cfg.host, self.port, " (TLS)" if tls else "")

    async def drain(self) -> None:
        if self._native is not None:
            self._native.drain()  # lanes off: new calls meet the servicer's refusal
        if self.servicer is not None:
            self.servicer.drain()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if self.servicer is not None:
            self.servicer.drain()
        if server is not None:
            await server.stop(self.config.stop_grace_secs)
        native, self._native = self._native, None
        if native is not None:
            await native.stop(self.config.stop_grace_secs)
