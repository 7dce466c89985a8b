"""The HTTP service on naiad's native front end (`naiad.ext._native_http`).

The native thread owns the sockets and the HTTP/1.1 framing; this adapter drains its
hand-off queue on the event loop (one eventfd wake-up for every request that arrived
meanwhile) and gives each request — method, path, headers, and the body as a buffer over
the received bytes — to the same transport-neutral `Router` the aiohttp transport uses.
The reply goes back as one native call; the native thread writes it.

Native lanes (ext/frontend/lane.h): the models service tells this adapter of its models'
lanes (`WatchLanes`, through `LaneGate`), and the native thread hands a plain infer
request (tensors in binary or as JSON data) straight to its model's lane, never waking
Python for it. Lanes stay off when `native_lanes` is false, header forwarding is
configured or the inference API is restricted (for good), while tracing is on, and from
the first sign of shutdown.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Coroutine
from urllib.parse import unquote

from multidict import CIMultiDict, CIMultiDictProxy

from naiad.ext.lane_gate import LaneGate
from naiad.ext.native_front import NativeFront
from naiad.kernel.inference.errors import ErrorCode

from .config import HttpConfig
from .errors import status_for
from .router import SHUTTING_DOWN, HttpRequest, HttpResponse, Router, error_response

try:
    from naiad.ext import _native_http as _native
except ImportError as exc:  # built by setup.py's optional section
    _native = None
    IMPORT_ERROR = f"{exc}"
else:
    IMPORT_ERROR = ""

_BAD_REQUEST = HttpResponse.error("malformed request", 400)


def unsupported_reason(cfg: HttpConfig) -> str:
    """Why this configuration cannot be served natively ("" when it can)."""
    if _native is None:
        return f"the native HTTP front end was not built ({IMPORT_ERROR})"
    return ""


def _headers(response: HttpResponse) -> list[tuple[str, str]] | None:
    headers = response.headers
    if not headers:
        return None
    return [(k, v) for k, v in headers.items() if k.lower() not in ("content-length", "transfer-encoding")]


class NativeHttpServer(NativeFront):
    """`spawn` runs a request's task under its owner (the service's `Service.spawn`), so
    that a task's crash is the service's."""

    def __init__(self, config: HttpConfig, router: Router, lifecycle: Any, log: Any, traces: Any = None, *,
                 spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task], bus: Any = None,
                 owner: str = "http") -> None:
        super().__init__()
        self.config = config
        self.spawn = spawn
        self.router = router
        self.lifecycle = lifecycle
        self.log = log
        self.traces = traces
        self.bus = bus  # where the models service publishes its lanes (None: no lanes)
        self.owner = owner
        self.lanes: LaneGate | None = None

    async def start(self) -> int:
        assert _native is not None
        cfg = self.config
        try:
            self.server = _native.Server(
                cfg.host, cfg.port, cfg.reuse_port, cfg.max_body_bytes, cfg.keepalive_timeout_secs,
                max_header_bytes=cfg.max_header_bytes, max_headers=cfg.max_headers,
                max_url_bytes=cfg.max_url_bytes, header_timeout_secs=cfg.header_timeout_secs,
                body_timeout_secs=cfg.body_timeout_secs, body_min_bytes_per_sec=cfg.body_min_bytes_per_sec,
                max_connections=cfg.max_connections)
        except RuntimeError as exc:
            raise OSError(str(exc)) from None
        asyncio.get_running_loop().add_reader(self.server.fileno(), self._drain)
        self.port = self.server.port
        await self._watch_lanes()
        return self.port

    # ------------------------------------------------------------------ lanes --

    def _lanes_possible(self) -> bool:
        """What never changes while the server runs: lanes built, wanted, and nothing the
        Python path does per request configured (header forwarding, a restricted inference
        API)."""
        cfg = self.config
        return (self.bus is not None and cfg.native_lanes and getattr(self.server, "lanes_supported", False)
                and not cfg.header_forward_pattern and "inference" not in self.router.restrictions)

    def _lanes_allowed(self) -> bool:
        """What may change: accepting work, and tracing (sampled per request in Python)."""
        return self.lifecycle.accepting and (self.traces is None or self.traces.tracer is None)

    async def _watch_lanes(self) -> None:
        if not self._lanes_possible():
            return
        self.server.set_error_status({int(code): status_for(code) for code in ErrorCode})
        self.lanes = LaneGate(self.server, self.bus, self.owner, self._lanes_allowed, self.log)
        await self.lanes.watch()

    def _stop_lanes(self) -> None:
        """Shutdown began: every request takes the Python path from now on, and the kernel's
        drain waits for the requests on lanes too (once)."""
        lanes = self.lanes
        if lanes is not None and not lanes.draining:
            lanes.drain()
            lanes.hold_inflight(self.lifecycle)

    def close_listener(self) -> None:
        """No new connections; the open ones are served on (shutdown's first step)."""
        self._stop_lanes()
        close = getattr(self.server, "close_listener", None)  # absent from builds before it
        if close is not None:
            close()

    @property
    def connections(self) -> int:
        return self.server.connections if self.server is not None else 0

    async def stop(self, grace: float = 1.0) -> None:
        # The kernel drained the work it counts; streamed replies and answers on lanes
        # may remain.
        if self.lanes is not None:
            grace = await self.lanes.close(grace)
            # (how many requests never reached Python: the tests and benchmarks read it)
            self.log.info("HTTP: %d infer request(s) answered on native lanes", self.server.lane_served)
        await self._stop_native(grace, grace)

    def _drain(self) -> None:
        lanes = self.lanes
        if lanes is not None:
            if not self.lifecycle.accepting:
                self._stop_lanes()
            else:
                lanes.check()
        spawn = self.spawn
        tracer = self.traces.tracer if self.traces is not None else None
        recv_ns = time.monotonic_ns() if tracer is not None else 0
        tasks = self.tasks
        for req in self.server.take():
            # One request that trips us up must not cost the others in this batch.
            try:
                if recv_ns == 0 and self._fast(req):
                    continue
                task = spawn(self._handle(req, recv_ns))
            except Exception:
                self.log.exception("HTTP request could not be taken")
                self.server.respond(req.conn, 400, _headers(_BAD_REQUEST), _BAD_REQUEST.body, True)
                self._sent()
                continue
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def _fast(self, req: Any) -> bool:
        """A request its route's declared fast form takes without a task (infer: it
        submits synchronously and replies from the response sink). False when the route
        declares none or it declines the request."""
        path, _, _ = req.target.partition("?")
        if "%" in path:
            return False
        found = self.router.resolve_fast(req.method, path)
        if found is None:
            return False
        fast, params = found
        lifecycle = self.lifecycle
        if not lifecycle.accepting:
            return False  # the awaited path answers 503
        request = HttpRequest(req.method, path, CIMultiDictProxy(CIMultiDict(req.headers())),
                              memoryview(req) if req.body_len else b"", params=params)
        conn = req.conn
        keep_alive = req.keep_alive
        server = self.server

        def reply(response: HttpResponse) -> None:
            try:
                close = not lifecycle.accepting or not keep_alive
                server.respond(conn, response.status, _headers(response), response.body, close)
                self._sent()
            finally:
                lifecycle.leave()

        lifecycle.enter()
        try:
            taken = fast(request, reply)
        except Exception:  # a bug: let the awaited path answer (and log) it
            self.log.exception("HTTP fast path failed on %s", path)
            taken = False
        if not taken:
            lifecycle.leave()
        return taken

    async def _handle(self, req: Any, recv_ns: int) -> None:
        server = self.server
        conn = req.conn
        target = req.target
        path, _, _ = target.partition("?")
        if "%" in path:
            path = unquote(path)
        lifecycle = self.lifecycle
        if not lifecycle.accepting and not path.startswith("/v2/health"):
            server.respond(conn, 503, _headers(SHUTTING_DOWN), SHUTTING_DOWN.body, True)
            self._sent()
            return
        lifecycle.enter()
        try:
            request = HttpRequest(req.method, path, CIMultiDictProxy(CIMultiDict(req.headers())),
                                  memoryview(req) if req.body_len else b"", recv_ns=recv_ns)
            response = await self.router.dispatch(request)
            if self.lanes is not None:  # (it may have changed a trace setting): before the reply leaves
                self.lanes.check()
            close = not lifecycle.accepting or not req.keep_alive
            if response.stream is not None:
                await self._stream(conn, response, close)
                return
            trace = request.trace
            if trace is not None:
                trace.stamp("HTTP_SEND_START")
            server.respond(conn, response.status, _headers(response), response.body, close)
            self._sent()
            if trace is not None:
                trace.stamp("HTTP_SEND_END")
                trace.finish()
        except Exception as exc:  # the router answers errors itself; this is a bug
            self.log.exception("HTTP %s %s failed", req.method, path)
            err = error_response(exc)
            server.respond(conn, err.status, _headers(err), err.body, True)
            self._sent()
        finally:
            lifecycle.leave()

    async def _stream(self, conn: int, response: HttpResponse, close: bool) -> None:
        """A streamed reply (Server-Sent Events), chunk by chunk."""
        server = self.server
        chunks = response.stream
        assert chunks is not None
        server.start_chunked(conn, response.status, _headers(response))
        try:
            self._sent()
            async for chunk in chunks:
                server.chunk(conn, chunk)
                self._sent()
        finally:
            server.end_chunked(conn, close)
            self._sent()
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
