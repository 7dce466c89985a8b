"""The tracing service: owns the trace settings (the `TraceSettingRequest` handler),
installs its tracer in the shared TraceHub while any setting can trace, and runs the
writer thread that turns finished traces into Triton's trace file or OpenTelemetry spans."""

from __future__ import annotations

import asyncio
from typing import Any

from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.messages import ModelReadyQuery, TraceSettingRequest
from naiad.kernel.service import Service

from .config import TracingConfig
from .options import TraceOptions
from .settings import SettingsTable, parse_updates
from .tracer import NaiadTracer
from .trace_file import TritonFileSink
from .writer import TraceWriter


class TracingService(Service):
    Config = TracingConfig
    essential = False  # inference goes on without traces

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config: TracingConfig
        self.options: TraceOptions = self.config.options()
        self.table = SettingsTable(self.options)
        self.tracer = NaiadTracer(self.table, on_exhausted=self._install)
        self.writer: TraceWriter | None = None

    def setup(self) -> None:
        self.bus.handle(TraceSettingRequest, self._settings, owner=self.name)

    async def start(self) -> None:
        if self.options.mode == "opentelemetry":
            from .otel import OtelSink

            sink: Any = OtelSink(self.options, self.log)
        else:
            sink = TritonFileSink(self.log)
        self.writer = TraceWriter(sink, self.log)
        self.writer.start()
        self.tracer.attach(self.writer.submit)
        self._install()
        g = self.table.global_
        if g.level and g.invalid_reason:
            self.log.warning("tracing is off: %s", g.invalid_reason)
        self.log.info("tracing: mode %s, level %s, rate %d%s", self.options.mode,
                      self.table.reply()["trace_level"], self.table.global_.rate,
                      f", file {self.table.global_.file}" if self.table.global_.file else "")

    async def stop(self) -> None:
        self.context.traces.tracer = None
        self.tracer.attach(None)
        writer, self.writer = self.writer, None
        if writer is not None:
            await asyncio.to_thread(writer.close, list(self.table.all_settings()))

    def _install(self) -> None:
        """Protocols see a tracer only while some setting can trace (else one None check)."""
        running = self.writer is not None
        self.context.traces.tracer = self.tracer if running and self.table.any_active() else None

    async def _settings(self, msg: TraceSettingRequest) -> dict:
        if msg.model and self.bus.has_handler(ModelReadyQuery):
            if not await self.bus.request(ModelReadyQuery(msg.model)):
                raise InferenceError.invalid(f"Request for unknown model : {msg.model}")
        if msg.updates:
            replaced = self.table.update(msg.model, parse_updates(msg.updates, msg.protocol))
            if self.writer is not None:
                self.tracer.flush()  # traces of the old settings go first
                for old in replaced:
                    self.writer.retire(old)
            self._install()
        return self.table.reply(msg.model)
