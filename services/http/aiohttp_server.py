"""aiohttp's low-level server with the limits of the native front end (`[services.http]`):
a half-closed client is answered (aiohttp lets asyncio close the socket at the client's
FIN, dropping the reply to a request sent just before it), head limits answered 431/414
rather than aiohttp's 400, a deadline for the head and a minimum rate for the body (408),
and a cap on open connections (503)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from .config import HttpConfig

# Room on a request line for the method, the version and their spaces (as the native one).
_METHOD_AND_VERSION = 64


def _raw_reply(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class _Handler(web_protocol.RequestHandler):
    limits: HttpConfig  # set on the subclass made per server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._body: Any = None  # the payload of the request being read
        self._window_bytes = 0
        self._began = False  # a request was taken off the queue on this connection
        manager = self._manager
        if manager is not None and len(manager.connections) > self.limits.max_connections:
            self._refuse(503, "Service Unavailable", "too many connections")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        if self.transport is not None:
            self.transport.write(_raw_reply(status, reason, message))
        self.force_close()

    def data_received(self, data: bytes) -> None:
        self._window_bytes += len(data)
        if self._head_since is None and self._body is None:
            self._head_since = self._loop.time()
            self._arm(self.limits.header_timeout_secs, self._check_head)
        super().data_received(data)

    def _arm(self, delay: float, check: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, check) if delay > 0 else None

    def head_done(self, payload: Any) -> None:
        """The request's head is parsed (called from the request factory)."""
        self._began = True
        self._head_since = None
        self._body = payload if not payload.is_eof() else None
        self._window_bytes = 0
        self._arm(self.limits.body_timeout_secs if self._body is not None else 0, self._check_body)

    def _check_head(self) -> None:
        if self._head_since is not None and self._body is None:
            self._refuse(408, "Request Timeout", "request timed out")

    def _check_body(self) -> None:
        if self._body is None or self._body.is_eof():
            self._body = None
            return
        if self._window_bytes == 0 or self._window_bytes < self.limits.body_min_bytes_per_sec * self.limits.body_timeout_secs:
            self._refuse(408, "Request Timeout", "request timed out")
            return
        self._window_bytes = 0
        self._arm(self.limits.body_timeout_secs, self._check_body)

    def connection_lost(self, exc: BaseException | None) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer.cancel()  # type: ignore[union-attr]
        super().connection_lost(exc)

    def eof_received(self) -> bool:
        # Idle between requests, mid-head, or before any request began (the request loop may
        # not wait yet): nothing to answer, let the transport close.
        if not self._messages and (self._waiter is not None or not self._began):
            return False
        # Mid-body: the rest can never come, so the request cannot complete; closing fails
        # its payload (the peer is gone, as Triton treats it) instead of waiting forever.
        if self._body is not None and not self._body.is_eof():
            return False
        # A request is queued or running: keep the socket open for writing, answer it, then
        # close (no further request can come after a FIN).
        self._close = True
        return True

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, LineTooLong):
            if exc.args[1] == self.limits.max_url_bytes + _METHOD_AND_VERSION:
                status, message = 414, f"request URL exceeds the limit of {self.limits.max_url_bytes} bytes"
            else:
                status, message = 431, f"request header field exceeds the limit of {self.limits.max_header_bytes} bytes"
        elif isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc.message):
            status, message = 431, f"request has more than {self.limits.max_headers} header fields"
        else:
            return super().handle_error(request, status, exc, message)
        resp = web.json_response({"error": message}, status=status)
        resp.force_close()
        return resp


class Server(web.Server):
    """`web.Server` whose connections keep `cfg`'s limits."""

    def __init__(self, handler: Any, cfg: HttpConfig, **kwargs: Any) -> None:
        super().__init__(handler, max_line_size=cfg.max_url_bytes + _METHOD_AND_VERSION,
                         max_field_size=cfg.max_header_bytes, max_headers=cfg.max_headers, **kwargs)
        self._handler_class = type("Handler", (_Handler,), {"limits": cfg})

    def __call__(self) -> web_protocol.RequestHandler:
        return self._handler_class(self, loop=self._loop, **self._kwargs)
