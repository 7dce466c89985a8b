"""An example third-party naiad service, loaded by module path:

    [services.status]
    module = "status_service:StatusService"   # importable from PYTHONPATH
    port = 8090

It shows the three things a plug-in does: validate its own config section (`Config`),
talk to the rest of naiad only over the bus (it asks the kernel whether the server is
ready and listens to service state events), and count the work it accepts so graceful
shutdown waits for it. It serves `GET /status` (JSON) and `GET /work?ms=N` (holds a
request for N ms, as a slow piece of work would).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from naiad.kernel.messages import ServerReadyQuery, ServiceStateChanged
from naiad.kernel.schema import setting
from naiad.kernel.service import Service


@dataclass
class StatusConfig:
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(8090, "port to listen on", minimum=0)


class StatusService(Service):
    Config = StatusConfig
    essential = False  # the server keeps serving inference if this one gives up

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.states: dict[str, str] = {}
        self._runner: web.AppRunner | None = None

    def setup(self) -> None:
        # Subscribe once, before the bus freezes; drop old events rather than block others.
        self._events = self.bus.subscribe(ServiceStateChanged, maxsize=256, overflow="drop_oldest")

    async def start(self) -> None:
        self.spawn(self._follow_states(), "follow-states")
        app = web.Application()
        app.router.add_get("/status", self._status)
        app.router.add_get("/work", self._work)
        # The kernel has drained already when stop() runs: cancel stragglers quickly.
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.config.host, self.config.port).start()
        self.log.info("status service listening on %s:%d", self.config.host, self.config.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _follow_states(self) -> None:
        async for event in self._events:
            self.states[event.service] = event.state

    async def _status(self, request: web.Request) -> web.Response:
        ready = await self.bus.request(ServerReadyQuery())
        return web.json_response({"ready": ready, "services": self.states})

    async def _work(self, request: web.Request) -> web.Response:
        lifecycle = self.context.lifecycle
        if not lifecycle.accepting:
            return web.json_response({"error": "Server is shutting down"}, status=503)
        lifecycle.enter()  # graceful shutdown waits for this request
        try:
            await asyncio.sleep(int(request.query.get("ms", "100")) / 1000)
            return web.json_response({"done": True})
        finally:
            lifecycle.leave()
