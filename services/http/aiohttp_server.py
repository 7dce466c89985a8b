"""aiohttp's low-level server with a half-closed client answered, as Triton and the native
front end do: aiohttp's handler lets asyncio close the socket at the client's FIN, which
drops the reply to a request sent just before it (`shutdown(SHUT_WR)` after a request)."""

from __future__ import annotations

from aiohttp import web, web_protocol


class _HalfCloseHandler(web_protocol.RequestHandler):
    def eof_received(self) -> bool:
        # Idle between requests (or mid-head): nothing to answer, let the transport close.
        if self._waiter is not None and not self._messages:
            return False
        # A request is queued or running: keep the socket open for writing, answer it, then
        # close (no further request can come after a FIN).
        self._close = True
        return True


class Server(web.Server):
    """`web.Server` whose connections answer a request the client half-closed after."""

    def __call__(self) -> web_protocol.RequestHandler:
        return _HalfCloseHandler(self, loop=self._loop, **self._kwargs)
