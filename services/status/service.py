"""The status service: samples model statistics over the bus every `interval_s` into
per-model series, and answers `PageQuery` so that the metrics service serves its page at
`path` and the page's data at `<path>status.json` (the page polls it once a second).

It serves no port of its own: with the metrics service off there is no page, and no sampling.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from importlib import resources
from typing import Any

import psutil

from naiad.kernel.bus import BusError
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.messages import (ModelStatisticsQuery, RepositoryIndexQuery, StubInfo,
                                             StubProcessQuery)
from naiad.kernel.messages import Page, PageQuery
from naiad.kernel.service import Service
from naiad.kernel.version import TRITON_COMPATIBLE_VERSION, __version__

from .config import StatusConfig
from .series import Series

_HTML = "text/html; charset=utf-8"
_JSON = "application/json"


class StatusService(Service):
    Config = StatusConfig
    essential = False  # inference goes on without the page

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config: StatusConfig
        self.started = time.time()
        self.series: dict[tuple[str, str], Series] = {}
        self._html = resources.files(__package__).joinpath("page.html").read_bytes()

    def setup(self) -> None:
        self.bus.handle(PageQuery, self._page, self.name)

    async def start(self) -> None:
        self.started = time.time()
        metrics = self.context.config.services.get("metrics")
        if metrics is None or not metrics.enabled:  # nobody can see the page: sample nothing
            self.log.info("status page off: the metrics service that serves it is not enabled")
            return
        self.spawn(self._sample_forever(), "sample")

    # ------------------------------------------------------------------ sampling --

    async def _sample_forever(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.config.interval_s)

    async def sample(self) -> None:
        stats = await self._ask(ModelStatisticsQuery(), [])
        now = time.time()
        size = max(2, int(self.config.window_s / self.config.interval_s))
        seen = set()
        for s in stats:
            key = (s.name, s.version)
            seen.add(key)
            self.series.setdefault(key, Series(size)).add(now, s)
        for key in [k for k in self.series if k not in seen]:  # unloaded: its history goes
            del self.series[key]

    async def _ask(self, msg: Any, default: Any) -> Any:
        if not self.bus.has_handler(type(msg)):
            return default
        try:
            return await self.bus.request(msg)
        except (BusError, InferenceError) as exc:
            self.log.debug("status: %s not answered: %s", type(msg).__name__, exc)
            return default

    # ------------------------------------------------------------------ pages --

    async def _page(self, msg: PageQuery) -> Page | None:
        if msg.method not in ("GET", "HEAD"):
            return None
        if msg.path == self.config.path:
            return Page(self._html, _HTML)
        if msg.path == self.config.path + "status.json":
            return Page(json.dumps(await self.status(), default=str).encode(), _JSON)
        return None

    async def status(self) -> dict:
        """Everything the page shows, as JSON-ready data."""
        index = await self._ask(RepositoryIndexQuery(), [])
        stubs: list[StubInfo] = await self._ask(StubProcessQuery(), [])
        return {
            "server": {"version": __version__, "triton_version": TRITON_COMPATIBLE_VERSION,
                       "id": self.context.config.server.id, "started": self.started,
                       "uptime_s": round(time.time() - self.started, 1), "now": time.time(),
                       "interval_s": self.config.interval_s, "window_s": self.config.window_s},
            "models": [{"name": e.name, "version": e.version, "state": e.state, "reason": e.reason} for e in index],
            "series": [{"name": n, "version": v, **s.to_json()} for (n, v), s in sorted(self.series.items())],
            "stubs": [{**dataclasses.asdict(s), "rss_bytes": _rss(s.pid)} for s in stubs],
            "config": self._effective_config(),
        }

    def _effective_config(self) -> dict:
        cfg = self.context.config
        services = {name: {"enabled": sec.enabled, **_fields(sec.config)} for name, sec in cfg.services.items()}
        return {"source": cfg.source, "server": _fields(cfg.server), "log": _fields(cfg.log),
                "cache": _fields(cfg.cache), "backends": _redact(cfg.backends), "services": services}


_SECRET = ("key", "secret", "token", "password", "credential")


def _fields(obj: Any) -> dict:
    return _redact(dataclasses.asdict(obj)) if dataclasses.is_dataclass(obj) else {}


def _redact(value: Any) -> Any:
    # The page has no auth: settings that look like secrets are shown only as set or not.
    if isinstance(value, dict):
        return {k: ("<set>" if v and any(w in str(k).lower() for w in _SECRET) else _redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _rss(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.Error, OSError):
        return None
