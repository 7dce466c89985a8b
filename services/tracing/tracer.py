"""The `Tracer` the protocols call per request (naiad.kernel.inference.trace): decides,
with the request's model setting, whether to trace it (level, rate 1-of-N, count left),
and hands finished traces to the writer.

`sample` runs on the event loop and does only counting and one object allocation; all
formatting and I/O happen on the writer thread.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, Callable, Mapping

from naiad.kernel.inference.trace import Trace

from .otel import extract_parent
from .records import snapshot_tensor
from .settings import SettingsTable, TraceSetting

BATCH = 256  # finished traces handed to the writer at once
FLUSH_DELAY_S = 0.05  # at most this long after a trace finished


class TraceState:
    """What the tracer keeps on a Trace (`trace.context`)."""

    __slots__ = ("setting", "parent_context", "epoch_offset", "sampled_ns")

    def __init__(self, setting: TraceSetting, parent_context: Any = None, epoch_offset: int = 0,
                 sampled_ns: int = 0) -> None:
        self.setting = setting
        self.parent_context = parent_context  # OpenTelemetry Context of the caller, if any
        self.epoch_offset = epoch_offset  # wall clock ns - monotonic ns, when sampled
        self.sampled_ns = sampled_ns


class NaiadTracer:
    """Implements naiad.kernel.inference.trace.Tracer."""

    def __init__(self, table: SettingsTable, on_exhausted: Callable[[], None] = lambda: None) -> None:
        self.table = table
        self.otel = table.mode == "opentelemetry"
        self._ids = itertools.count(1)
        self._submit: Callable[[list[Trace]], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_exhausted = on_exhausted
        self._finished_traces: list[Trace] = []
        self._flush_handle: asyncio.Handle | None = None

    def attach(self, submit: Callable[[list[Trace]], None] | None) -> None:
        """Where finished traces go, in batches (the writer); None drops them (service
        stopped). Called on the event loop."""
        if submit is None:
            self.flush()
        self._submit = submit
        self._loop = asyncio.get_running_loop() if submit is not None else None

    def sample(self, model_name: str, request_id: str = "", headers: Mapping[str, str] | None = None,
               parent: Trace | None = None) -> Trace | None:
        if parent is not None:
            return self._child(model_name, request_id, parent)
        setting = self.table.models.get(model_name) or self.table.global_
        if not setting.active:
            return None
        parent_context = extract_parent(headers) if self.otel and headers else None
        setting.seen += 1
        if parent_context is None:  # a propagated context is always traced, as Triton does
            rate = setting.rate
            if rate == 0 or setting.seen % rate:
                return None
        setting.created += 1
        if setting.count > 0:
            setting.count -= 1
            if setting.count == 0:
                self._on_exhausted()
        now = time.monotonic_ns()
        state = TraceState(setting, parent_context, (time.time_ns() - now) if self.otel else 0, now)
        return Trace(next(self._ids), model_name, request_id, 0, setting.tensors, state, self._finished)

    def _child(self, model_name: str, request_id: str, parent: Trace) -> Trace | None:
        state = parent.context
        if not isinstance(state, TraceState):
            return None
        child_state = TraceState(state.setting, None, state.epoch_offset, time.monotonic_ns())
        return Trace(next(self._ids), model_name, request_id, parent.id, parent.want_tensors, child_state,
                     self._finished)

    def _finished(self, trace: Trace) -> None:
        if self._submit is None:
            return
        if trace.tensors:  # copy tensor data now: its memory may be reused once the reply is out
            trace.tensors = [(activity, snapshot_tensor(t)) for activity, t in trace.tensors]
        # Finished traces go to the writer in batches: one thread wake-up per batch, not
        # per request. The delay also lets the scheduler add COMPUTE_* (stamped when the
        # model's execute() returns, just after the response that led here).
        pending = self._finished_traces
        pending.append(trace)
        loop = self._loop
        if loop is None:
            self.flush()
        elif len(pending) == BATCH:  # full: next loop turn (COMPUTE_* of this one are queued already)
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._flush_handle = loop.call_soon(self.flush)
        elif self._flush_handle is None:
            self._flush_handle = loop.call_later(FLUSH_DELAY_S, self.flush)

    def flush(self) -> None:
        """Hand the finished traces over now."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        traces, self._finished_traces = self._finished_traces, []
        if traces and self._submit is not None:
            self._submit(traces)
