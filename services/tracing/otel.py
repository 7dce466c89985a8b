"""OpenTelemetry mode: each finished trace becomes spans exported over OTLP/HTTP
(protobuf) by the SDK's batch span processor, shaped as Triton's
(`server:src/tracer.cc`, `docs/user_guide/trace.md`):

- a top-level span "InferRequest" (kind SERVER) with the front end's timestamps
  (HTTP_*/GRPC_*) as events, a child of the caller's span when the request carried a W3C
  `traceparent` header;
- a model span named after the model (attributes triton.model_name, triton.model_version,
  triton.trace_id, triton.trace_parent_id) with REQUEST_START, QUEUE_START, REQUEST_END;
- a "compute" span under it with COMPUTE_START .. COMPUTE_END.
A child trace (BLS, ensemble step) puts its model span under its parent's model span.

Timestamps are taken on the monotonic clock and moved onto the wall clock with the offset
measured when the trace was sampled. Spans are built on the writer thread.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Mapping

from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from naiad.kernel.inference.trace import Trace

from .options import TraceOptions

_PROPAGATOR = TraceContextTextMapPropagator()
_REQUEST_EVENTS = ("REQUEST_START", "QUEUE_START", "REQUEST_END")
_COMPUTE_EVENTS = ("COMPUTE_START", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START", "COMPUTE_END")
_MAX_PENDING_CHILDREN = 10_000
_MAX_REMEMBERED = 10_000  # model spans kept for children that finish after their parent


def extract_parent(headers: Mapping[str, str] | None) -> Context | None:
    """The caller's span context from a W3C `traceparent` header, or None."""
    if not headers:
        return None
    value = headers.get("traceparent")
    if not value:
        return None
    carrier = {"traceparent": value}
    state = headers.get("tracestate")
    if state:
        carrier["tracestate"] = state
    ctx = _PROPAGATOR.extract(carrier)
    span = otel_trace.get_current_span(ctx)
    return ctx if span.get_span_context().is_valid else None


def make_exporter(url: str) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=url)


class OtelSink:
    def __init__(self, options: TraceOptions, log: logging.Logger, exporter: SpanExporter | None = None) -> None:
        self.log = log
        self.provider = TracerProvider(sampler=ALWAYS_ON, resource=Resource.create(options.resource_attributes()),
                                       shutdown_on_exit=False)
        bsp = options.bsp
        self.provider.add_span_processor(BatchSpanProcessor(
            exporter if exporter is not None else make_exporter(options.url),
            max_queue_size=bsp.get("bsp_max_queue_size", 2048),
            schedule_delay_millis=bsp.get("bsp_schedule_delay", 5000),
            max_export_batch_size=min(bsp.get("bsp_max_export_batch_size", 512),
                                      bsp.get("bsp_max_queue_size", 2048))))
        self.tracer = self.provider.get_tracer("triton-server")
        # trace id -> its model span's context (for children that finish after it) and
        # children waiting for their parent to finish.
        self._model_spans: OrderedDict[int, Context] = OrderedDict()
        self._waiting: dict[int, list[Trace]] = {}

    def write(self, trace: Trace) -> None:
        if trace.parent_id and trace.parent_id not in self._model_spans:
            waiting = self._waiting.setdefault(trace.parent_id, [])
            if sum(len(w) for w in self._waiting.values()) < _MAX_PENDING_CHILDREN:
                waiting.append(trace)
            return
        self._emit(trace)
        for child in self._waiting.pop(trace.id, ()):
            self._emit(child)

    def _emit(self, trace: Trace) -> None:
        state = trace.context
        offset = state.epoch_offset
        stamps = sorted(trace.timestamps, key=lambda s: s[1])
        first = stamps[0][1] if stamps else state.sampled_ns
        last = stamps[-1][1] if stamps else state.sampled_ns
        by_name = {name: ns for name, ns in stamps}

        if trace.parent_id:
            parent_ctx = self._model_spans.get(trace.parent_id)
            root = None
        else:
            root = self.tracer.start_span("InferRequest", context=state.parent_context,
                                          kind=otel_trace.SpanKind.SERVER, start_time=first + offset)
            for name, ns in stamps:
                if name not in _REQUEST_EVENTS and name not in _COMPUTE_EVENTS:
                    root.add_event(name, timestamp=ns + offset)
            parent_ctx = otel_trace.set_span_in_context(root)

        if "REQUEST_START" in by_name:
            start = by_name["REQUEST_START"]
            version: Any
            try:
                version = int(trace.model_version)
            except (TypeError, ValueError):
                version = -1
            attributes = {"triton.model_name": trace.model_name, "triton.model_version": version,
                          "triton.trace_id": trace.id, "triton.trace_parent_id": trace.parent_id}
            if trace.request_id:
                attributes["triton.request_id"] = trace.request_id
            model = self.tracer.start_span(trace.model_name, context=parent_ctx, kind=otel_trace.SpanKind.SERVER,
                                           attributes=attributes, start_time=start + offset)
            model_end = by_name.get("REQUEST_END", last)
            for name, ns in stamps:
                if name in _REQUEST_EVENTS:
                    model.add_event(name, timestamp=ns + offset)
            model_ctx = otel_trace.set_span_in_context(model)
            self._model_spans[trace.id] = model_ctx
            if len(self._model_spans) > _MAX_REMEMBERED:
                self._model_spans.popitem(last=False)
            if "COMPUTE_START" in by_name:
                compute = self.tracer.start_span("compute", context=model_ctx, kind=otel_trace.SpanKind.SERVER,
                                                 start_time=by_name["COMPUTE_START"] + offset)
                for name, ns in stamps:
                    if name in _COMPUTE_EVENTS:
                        compute.add_event(name, timestamp=ns + offset)
                compute.end(end_time=by_name.get("COMPUTE_END", model_end) + offset)
            model.end(end_time=model_end + offset)
        if root is not None:
            root.end(end_time=last + offset)

    def retire(self, setting: Any) -> None:
        """Settings changes need no flush in this mode."""

    def close(self, settings: Any = ()) -> None:
        for children in self._waiting.values():  # parents that never finished
            for child in children:
                try:
                    self._emit(child)
                except Exception as exc:  # one bad trace does not lose the others
                    self.log.error("failed exporting a trace: %s", exc)
        self._waiting.clear()
        self._model_spans.clear()
        self.provider.shutdown()  # flushes the batch processor
