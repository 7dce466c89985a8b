"""The HTTP service on aiohttp: listens, tracks live requests for the drain, and hands every
request to the transport-neutral router. This is the only module that knows aiohttp."""

from __future__ import annotations

import socket
import time
from typing import Any

from aiohttp import web

from naiad.kernel.service import Service

from . import aiohttp_server
from .config import HttpConfig
from .router import SHUTTING_DOWN, HttpRequest, HttpResponse, Router
from .routes import build_router

LISTENER = "HTTP"  # as Triton names it in "Found N HTTP service connections"


class HttpService(Service):
    Config = HttpConfig
    stop_timeout = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config: HttpConfig
        self.router: Router | None = None
        self._runner: web.ServerRunner | None = None
        self._native: Any = None  # native.NativeHttpServer when transport = "native"
        self.port = 0

    async def start(self) -> None:
        cfg = self.config
        self.router = build_router(self.bus, cfg, self.context.traces)
        if cfg.transport == "native":
            from . import native

            reason = native.unsupported_reason(cfg)
            if not reason:
                self._native = native.NativeHttpServer(cfg, self.router, self.context.lifecycle, self.log,
                                                       self.context.traces, spawn=self.spawn, bus=self.bus,
                                                       owner=self.name)
                self.port = await self._native.start()
                self.context.lifecycle.add_listener(LISTENER, self._native.close_listener,
                                                    lambda native=self._native: native.connections)
                self.log.info("HTTP service listening on %s:%d (native)", cfg.host, self.port)
                return
            self.log.warning("HTTP: %s; serving on aiohttp", reason)
        max_body = cfg.max_body_bytes

        def request_factory(message, payload, protocol, writer, task, _cls=web.BaseRequest):  # type: ignore[no-untyped-def]
            protocol.head_done(payload)  # the head deadline ends, the body's rate starts
            return _cls(message, payload, protocol, writer, task, protocol._loop, client_max_size=max_body)

        # Request bodies reach the router as sent: the routes decode Content-Encoding
        # themselves, as Triton does (gzip/deflate for /infer, identity elsewhere).
        server = aiohttp_server.Server(self._handle, cfg, request_factory=request_factory,
                                       auto_decompress=False, keepalive_timeout=cfg.keepalive_timeout_secs,
                                       access_log=None)
        # stop() runs after the kernel's drain: whatever is still running then is cut off.
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port, reuse_port=cfg.reuse_port or None,
                           backlog=1024)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1] if sockets else cfg.port
        for sock in sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listening = site._server  # type: ignore[union-attr]
        # asyncio's Server.close() stops listening and leaves open connections alone.
        self.context.lifecycle.add_listener(LISTENER, listening.close, lambda: len(server.connections))
        self.log.info("HTTP service listening on %s:%d", cfg.host, self.port)

    async def stop(self) -> None:
        self.context.lifecycle.remove_listener(LISTENER)
        native, self._native = self._native, None
        if native is not None:
            await native.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        lifecycle = self.context.lifecycle
        path = request.path
        if not lifecycle.accepting and not path.startswith("/v2/health"):
            return _to_aiohttp(SHUTTING_DOWN, close=True)
        lifecycle.enter()
        recv_ns = time.monotonic_ns() if self.context.traces.tracer is not None else 0
        try:
            refused = _refuse_framing(request, self.config.max_body_bytes)
            if refused is not None:  # answered before a byte of the body is read
                return await _send_and_close(request, _to_aiohttp(refused, close=True))
            try:
                body = await request.read() if request.body_exists else b""
            except web.HTTPRequestEntityTooLarge:
                return _to_aiohttp(_too_large(self.config.max_body_bytes), close=True)
            assert self.router is not None
            http_request = HttpRequest(request.method, path, request.headers, body, recv_ns=recv_ns)
            response = await self.router.dispatch(http_request)
            if response.stream is not None:
                return await _stream(request, response)
            if http_request.trace is not None:
                return await _send_traced(request, response, http_request.trace, close=not lifecycle.accepting)
            return _to_aiohttp(response, close=not lifecycle.accepting)
        finally:
            lifecycle.leave()


def _too_large(limit: int) -> HttpResponse:
    return HttpResponse.error(f"request body exceeds the limit of {limit} bytes", 413)


def _refuse_framing(request: web.BaseRequest, limit: int) -> HttpResponse | None:
    """What aiohttp's parser lets through and the native front end refuses: a declared body
    over the limit (413 at once) and a transfer coding besides chunked (RFC 9112 §6.1: 501)."""
    if request.content_length is not None and request.content_length > limit:
        return _too_large(limit)
    codings = [c.strip().lower() for v in request.headers.getall("Transfer-Encoding", ()) for c in v.split(",")]
    if any(c and c != "chunked" for c in codings):
        return HttpResponse.error("unsupported transfer coding", 501)
    return None


def _to_aiohttp(response: HttpResponse, close: bool = False) -> web.Response:
    headers = response.headers
    if close:
        headers = dict(headers or {})
        headers["Connection"] = "close"
    out = web.Response(status=response.status, body=response.body, headers=headers)
    if close:
        out.force_close()  # the header alone leaves aiohttp reading the next request
    return out


async def _send_and_close(request: web.BaseRequest, out: web.Response) -> web.Response:
    """Send now and close, without aiohttp's lingering read of a body that was refused."""
    await out.prepare(request)
    await out.write_eof()
    request.protocol.force_close()
    return out


async def _send_traced(request: web.BaseRequest, response: HttpResponse, trace: Any, close: bool) -> web.Response:
    """Send now, not after the handler returns, so that HTTP_SEND_END is when it was sent."""
    out = _to_aiohttp(response, close=close)
    trace.stamp("HTTP_SEND_START")
    try:
        await out.prepare(request)
        await out.write_eof()
    finally:
        trace.stamp("HTTP_SEND_END")
        trace.finish()
    return out


async def _stream(request: web.BaseRequest, response: HttpResponse) -> web.StreamResponse:
    """Send a streamed reply chunk by chunk (Server-Sent Events); a client that goes away
    ends the iterator, which cancels the work behind it."""
    out = web.StreamResponse(status=response.status, headers=response.headers)
    out.enable_chunked_encoding()
    chunks = response.stream
    assert chunks is not None
    try:
        await out.prepare(request)
        async for chunk in chunks:
            await out.write(chunk)
        await out.write_eof()
    except ConnectionError:
        pass  # the client went away; closing the iterator below cancels the request
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    return out
