"""The tracing contract: a per-request `Trace` that collects Triton's timestamps, and the
`TraceHub` through which protocols ask whether to trace a request.

With tracing off, `hub.tracer` is None and a protocol pays one attribute check per
request; `request.trace` stays None and the model manager skips every timestamp.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Protocol


class Trace:
    """Timestamps (Triton's names: HTTP_RECV_START, REQUEST_START, QUEUE_START, ...) and,
    at TENSORS level, tensors of one traced request."""

    __slots__ = ("id", "model_name", "model_version", "request_id", "parent_id", "timestamps",
                 "tensors", "want_tensors", "context", "_done", "_on_done")

    def __init__(self, trace_id: int, model_name: str, request_id: str = "", parent_id: int = 0,
                 want_tensors: bool = False, context: Any = None, on_done: Any = None) -> None:
        self.id = trace_id
        self.model_name = model_name
        self.model_version = ""
        self.request_id = request_id
        self.parent_id = parent_id
        self.timestamps: list[tuple[str, int]] = []
        self.tensors: list[tuple[str, Any]] = []  # (activity, Tensor)
        self.want_tensors = want_tensors
        self.context = context  # OpenTelemetry span context, when in that mode
        self._done = False
        self._on_done = on_done

    def stamp(self, name: str, ns: int | None = None) -> None:
        self.timestamps.append((name, time.monotonic_ns() if ns is None else ns))

    def not_before(self, name: str, ns: int) -> None:
        """Move an activity already stamped earlier than `ns` to `ns`. The response of a
        request leaves while its instance is still finishing the execution; as in Triton,
        the request ends (REQUEST_END) no earlier than its compute (COMPUTE_END)."""
        for i, (what, at) in enumerate(self.timestamps):
            if what == name and at < ns:
                self.timestamps[i] = (what, ns)

    def tensor(self, activity: str, tensor: Any) -> None:
        if self.want_tensors:
            self.tensors.append((activity, tensor))

    def finish(self) -> None:
        """The protocol is done with the request (after *_SEND_END); hand the trace over."""
        if self._done:
            return
        self._done = True
        if self._on_done is not None:
            self._on_done(self)


class Tracer(Protocol):
    def sample(self, model_name: str, request_id: str = "", headers: Mapping[str, str] | None = None,
               parent: Trace | None = None) -> Trace | None:
        """A new Trace when this request is to be traced (rate, count, level), else None."""


class TraceHub:
    """Set by the tracing service while it runs; read by protocols per request."""

    __slots__ = ("tracer",)

    def __init__(self) -> None:
        self.tracer: Tracer | None = None

    def begin(self, request: Any, headers: Mapping[str, str] | None, recv: tuple[str, str],
              recv_start_ns: int | None = None) -> Trace | None:
        """Sample a trace for `request` (an InferenceRequest) and stamp its two receive
        activities (`recv`, e.g. HTTP_RECV_START/END); it rides on `request.trace`. For the
        protocols whose responses stream: they call `end_stream` after the last one."""
        tracer = self.tracer
        if tracer is None:
            return None
        trace = tracer.sample(request.model_name, request.id, headers)
        if trace is not None:
            trace.stamp(recv[0], recv_start_ns)
            trace.stamp(recv[1])
            request.trace = trace
        return trace


def end_stream(trace: Trace | None, send: tuple[str, str], send_start_ns: int | None = None) -> None:
    """A streamed request's last response is written: stamp the send activities, hand the trace over."""
    if trace is not None:
        trace.stamp(send[0], send_start_ns)
        trace.stamp(send[1])
        trace.finish()
