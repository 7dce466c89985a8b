"""The metrics service: its own aiohttp server (default port 8002) answering
`GET /metrics` with Triton's Prometheus families.

Each scrape makes one bus request, `ModelStatisticsQuery()` — the snapshot the statistics
API reads too — then renders synchronously from it. Model configs (for `metric_tags` and
the response cache) are asked once per loaded version. A background task owned by the
service samples CPU and GPU figures every `interval_ms` (and feeds the latency summaries
between scrapes when they are on).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from naiad.kernel.bus import NoHandler
from naiad.kernel.inference.messages import ModelStateChanged, ModelStatisticsQuery
from naiad.kernel.inference.stats import ModelStatistics
from naiad.kernel.messages import Page, PageQuery
from naiad.kernel.service import Service

from .config import MetricsConfig
from .custom import CustomFamilies
from .exposition import CONTENT_TYPE, render
from .families import ModelFamilies
from .gpu import GpuSampler
from .host_families import HostFamilies
from .model_info import ModelInfo, ModelInfoCache
from .options import MetricsOptions
from .system import CpuSampler


class MetricsService(Service):
    Config = MetricsConfig
    essential = False  # inference goes on without metrics

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config: MetricsConfig
        self.options: MetricsOptions = self.config.options()
        self.models = ModelFamilies(self.options)
        self.host = HostFamilies(self.context.config.server.pinned_memory_pool_byte_size)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.models)
        self.registry.register(self.host)
        self.registry.register(CustomFamilies())
        self.infos = ModelInfoCache(self.bus, self.context.config.cache.enabled)
        self._runner: web.ServerRunner | None = None
        self._gpu: GpuSampler | None = None
        self._cpu: CpuSampler | None = None
        self.port = 0

    def setup(self) -> None:
        self._model_events = self.bus.subscribe(ModelStateChanged, maxsize=256, overflow="drop_oldest")

    def address(self) -> str:
        if self.config.host:
            return self.config.host
        http = self.context.config.services.get("http")
        if http is not None and http.enabled:
            return getattr(http.config, "host", "0.0.0.0")
        return "0.0.0.0"

    async def start(self) -> None:
        cfg = self.config
        self._cpu = CpuSampler() if cfg.cpu else None
        self._gpu = await asyncio.to_thread(GpuSampler.open) if cfg.gpu else None
        if self._gpu is not None:
            self.log.info("GPU metrics for %d GPU(s)", len(self._gpu.uuids))
        await self._sample_host(first=True)
        self.spawn(self._forget_changed_models(), "model-events")
        if self._cpu is not None or self._gpu is not None or self.options.summary_latencies:
            self.spawn(self._poll(), "poll")

        server = web.Server(self._handle, access_log=None)
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        host = self.address()
        site = web.TCPSite(self._runner, host, cfg.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1] if sockets else cfg.port
        self.log.info("metrics service listening on %s:%d", host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._gpu is not None:
            gpu, self._gpu = self._gpu, None
            await asyncio.to_thread(gpu.close)

    # ------------------------------------------------------------------ scrape --

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path != "/metrics":
            return await self._page(request)
        if request.method != "GET":
            return web.Response(status=405, text="Method Not Allowed", headers={"Allow": "GET"})
        rows = await self._snapshot()
        self.models.update(rows)
        body = render(self.registry.collect())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _page(self, request: web.BaseRequest) -> web.Response:
        # Other paths belong to whoever answers PageQuery (the status service), if anyone.
        page: Page | None = None
        if self.bus.has_handler(PageQuery):
            page = await self.bus.request(PageQuery(request.method, request.path))
        if page is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(status=page.status, body=page.body, headers={"Content-Type": page.content_type,
                                                                         "Cache-Control": "no-store"})

    async def _snapshot(self) -> list[tuple[ModelStatistics, ModelInfo]]:
        try:
            stats: list[ModelStatistics] = await self.bus.request(ModelStatisticsQuery())
        except NoHandler:  # no model service in this build
            return []
        await self.infos.learn([(s.name, s.version) for s in stats])
        return [(s, self.infos.get(s.name, s.version)) for s in stats]

    # ------------------------------------------------------------------ background --

    async def _sample_host(self, first: bool = False) -> None:
        if self._cpu is not None:
            self.host.cpu = self._cpu.sample(memory_only=first)
        if self._gpu is not None:
            self.host.gpus = await asyncio.to_thread(self._gpu.sample)

    async def _poll(self) -> None:
        interval = self.config.interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval)
            try:
                await self._sample_host()
            except OSError as exc:  # out of descriptors (EMFILE): keep the last sample, serve on
                self.log.warning("host metrics not sampled: %s", exc)
            if self.options.summary_latencies:
                self.models.observe(await self._snapshot())

    async def _forget_changed_models(self) -> None:
        async for event in self._model_events:
            self.infos.forget(event.name)
