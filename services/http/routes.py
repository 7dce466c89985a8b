"""HTTP route handlers. They decode, make one bus request, and encode; nothing else."""

from __future__ import annotations

from naiad.kernel.bus import Bus
from naiad.kernel.messages import ServerLiveQuery, ServerReadyQuery

from .router import HttpRequest, HttpResponse, Router

_EMPTY_OK = HttpResponse(200)


def build_router(bus: Bus) -> Router:
    router = Router()

    async def live(_: HttpRequest) -> HttpResponse:
        return HttpResponse(200) if await bus.request(ServerLiveQuery()) else HttpResponse(400)

    async def ready(_: HttpRequest) -> HttpResponse:
        return HttpResponse(200) if await bus.request(ServerReadyQuery()) else HttpResponse(400)

    router.add("GET", "/v2/health/live", live)
    router.add("GET", "/v2/health/ready", ready)
    return router
