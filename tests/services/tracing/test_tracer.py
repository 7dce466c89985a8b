"""The tracing service in-process, with the real model manager and a Python-backend model:
traces taken through the TraceHub as a protocol takes them, written to Triton's JSON trace
file or exported over OTLP/HTTP to a receiver running in the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from naiad.kernel import config as kc
from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.messages import TraceSettingRequest
from naiad.kernel.inference.types import InferenceRequest, Tensor
from naiad.kernel.kernel import run_kernel
from naiad.kernel.loop import run

from support.models import IDENTITY_MODEL, identity_config, write_model

CORE_ORDER = ["REQUEST_START", "QUEUE_START", "COMPUTE_START", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START",
              "COMPUTE_END"]


def _config(repo: Path, trace_config: list[str]) -> kc.NaiadConfig:
    off = {"enabled": False}
    return kc.from_table({
        "server": {"model_repository": [str(repo)]},
        "services": {"http": off, "grpc": off, "repository": off, "metrics": off,
                     "tracing": {"trace_config": trace_config}},
    })


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    write_model(repo, "ident", identity_config("ident"), IDENTITY_MODEL)
    return repo


async def _infer(kernel, n: int, headers: dict | None = None, model: str = "ident") -> int:
    """n requests as a protocol makes them; returns how many were traced."""
    traced = 0
    for i in range(n):
        tracer = kernel.traces.tracer
        trace = tracer.sample(model, f"req-{i}", headers) if tracer is not None else None
        if trace is not None:
            traced += 1
            trace.stamp("HTTP_RECV_START")
            trace.stamp("HTTP_RECV_END")
        request = InferenceRequest(model, [Tensor.from_numpy("INPUT0", np.arange(4, dtype=np.float32) + i)],
                                   id=f"req-{i}", trace=trace, protocol="http")
        response = await kernel.bus.request(request)
        assert response.error is None
        if trace is not None:
            trace.stamp("HTTP_SEND_START")
            trace.stamp("HTTP_SEND_END")
            trace.finish()
    return traced


def _by_id(records: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in records:
        out.setdefault(r["id"], []).append(r)
    return out


def test_trace_file_has_every_traced_request_with_ordered_timestamps(tmp_path):
    path = tmp_path / "trace.json"
    cfg = _config(_repo(tmp_path), ["level=TIMESTAMPS", "rate=2", f"triton,file={path}"])

    async def main():
        async with run_kernel(cfg) as kernel:
            assert await _infer(kernel, 10) == 5
            settings = await kernel.bus.request(TraceSettingRequest())
            assert settings["trace_rate"] == "2" and settings["trace_mode"] == "triton"

    run(main())
    traces = _by_id(json.loads(path.read_text()))
    assert sorted(traces) == [1, 2, 3, 4, 5]
    for trace_id, records in traces.items():
        header = records[0]
        assert header["model_name"] == "ident" and header["model_version"] == 1
        assert header["request_id"].startswith("req-")
        stamps = [r["timestamps"][0] for r in records[1:]]
        names = [s["name"] for s in stamps]
        ns = [s["ns"] for s in stamps]
        assert ns == sorted(ns), names
        assert names[:2] == ["HTTP_RECV_START", "HTTP_RECV_END"] and names[-2:] == ["HTTP_SEND_START", "HTTP_SEND_END"]
        assert [n for n in names if n in CORE_ORDER] == CORE_ORDER
        assert "REQUEST_END" in names
        assert names.index("COMPUTE_START") < names.index("REQUEST_END") < names.index("HTTP_SEND_START")


def test_settings_api_on_the_bus_and_tracer_installed_only_while_tracing(tmp_path):
    path = tmp_path / "trace.json"
    cfg = _config(_repo(tmp_path), [f"triton,file={path}", "rate=1"])

    async def main():
        async with run_kernel(cfg) as kernel:
            bus = kernel.bus
            assert kernel.traces.tracer is None  # level OFF: protocols pay one None check
            assert await _infer(kernel, 2) == 0
            try:
                await bus.request(TraceSettingRequest(updates={"trace_file": "/tmp/elsewhere"}))
                raise AssertionError("trace_file update accepted")
            except InferenceError as exc:
                assert exc.code == ErrorCode.UNSUPPORTED
                assert exc.message == "trace file location can not be updated through network protocol"
            try:
                await bus.request(TraceSettingRequest(model="nope", updates={"trace_rate": "1"}))
                raise AssertionError("unknown model accepted")
            except InferenceError as exc:
                assert exc.code == ErrorCode.INVALID_ARG and "Request for unknown model : nope" == exc.message
            # Per model: only 'ident' is traced, and only three times.
            reply = await bus.request(TraceSettingRequest(
                model="ident", updates={"trace_level": ["TIMESTAMPS"], "trace_count": "3"}))
            assert reply["trace_level"] == ["TIMESTAMPS"] and reply["trace_count"] == "3"
            assert (await bus.request(TraceSettingRequest()))["trace_level"] == ["OFF"]
            assert kernel.traces.tracer is not None
            assert await _infer(kernel, 5) == 3
            assert kernel.traces.tracer is None  # count used up
            assert (await bus.request(TraceSettingRequest(model="ident")))["trace_count"] == "0"
            # null clears the model's override: back to the global setting (OFF).
            reply = await bus.request(TraceSettingRequest(
                model="ident", updates={"trace_level": None, "trace_count": None}))
            assert reply["trace_level"] == ["OFF"] and reply["trace_count"] == "-1"

    run(main())
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("trace.json"))
    assert files == ["trace.json.0"]  # trace count reached: written to an indexed file, as Triton
    assert sorted({r["id"] for r in json.loads((tmp_path / files[0]).read_text())}) == [1, 2, 3]


def test_tensors_level_writes_inputs_and_outputs(tmp_path):
    path = tmp_path / "trace.json"
    cfg = _config(_repo(tmp_path), ["level=TENSORS", "rate=1", f"triton,file={path}"])

    async def main():
        async with run_kernel(cfg) as kernel:
            assert await _infer(kernel, 1) == 1

    run(main())
    records = json.loads(path.read_text())
    assert not [r for r in records if "timestamps" in r]  # TENSORS alone
    tensors = {r["activity"]: r["tensor"] for r in records if "activity" in r}
    assert tensors["TENSOR_QUEUE_INPUT"] == {"name": "INPUT0", "data": "0,1,2,3", "shape": "4", "dtype": "FP32"}
    assert tensors["TENSOR_BACKEND_OUTPUT"]["name"] == "OUTPUT0"
    assert tensors["TENSOR_BACKEND_OUTPUT"]["data"] == "0,1,2,3"


# ------------------------------------------------------------------ OpenTelemetry --

class OtlpReceiver:
    """A real OTLP/HTTP receiver on loopback: collects the spans of every export."""

    def __init__(self) -> None:
        self.spans: list = []
        self.resources: list[dict] = []
        self.content_types: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _traces(self, request: web.Request) -> web.Response:
        self.content_types.add(request.headers.get("Content-Type", ""))
        msg = ExportTraceServiceRequest.FromString(await request.read())
        for rs in msg.resource_spans:
            self.resources.append({a.key: a.value.string_value for a in rs.resource.attributes})
            for ss in rs.scope_spans:
                self.spans.extend(ss.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def __aenter__(self) -> "OtlpReceiver":
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1/traces"
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()


def test_opentelemetry_spans_events_parents_and_traceparent(tmp_path):
    repo = _repo(tmp_path)
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    caller_span = "00f067aa0ba902b7"

    async def main():
        async with OtlpReceiver() as receiver:
            cfg = _config(repo, ["mode=opentelemetry", "level=TIMESTAMPS", "rate=1",
                                 f"opentelemetry,url={receiver.url}", "opentelemetry,resource=service.name=naiad-test",
                                 "opentelemetry,bsp_schedule_delay=50"])
            async with run_kernel(cfg) as kernel:
                reply = await kernel.bus.request(TraceSettingRequest())
                assert reply["trace_mode"] == "opentelemetry" and reply["url"] == receiver.url
                assert "trace_file" not in reply
                assert await _infer(kernel, 2) == 2
                headers = {"traceparent": f"00-{caller_trace}-{caller_span}-01"}
                assert await _infer(kernel, 1, headers=headers) == 1
            return receiver  # the kernel's stop flushed the batch processor

    receiver = run(main())
    assert receiver.content_types == {"application/x-protobuf"}
    assert all(r.get("service.name") == "naiad-test" for r in receiver.resources)
    spans = receiver.spans
    assert len(spans) == 9  # three per request
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if s.name == "InferRequest"]
    assert len(roots) == 3
    for root in roots:
        events = [e.name for e in root.events]
        assert events == ["HTTP_RECV_START", "HTTP_RECV_END", "HTTP_SEND_START", "HTTP_SEND_END"]
        model = [s for s in spans if s.parent_span_id == root.span_id]
        assert [s.name for s in model] == ["ident"]
        model = model[0]
        attrs = {a.key: a.value for a in model.attributes}
        assert attrs["triton.model_name"].string_value == "ident"
        assert attrs["triton.model_version"].int_value == 1
        assert [e.name for e in model.events] == ["REQUEST_START", "QUEUE_START", "REQUEST_END"]
        compute = [s for s in spans if s.parent_span_id == model.span_id]
        assert [s.name for s in compute] == ["compute"]
        assert [e.name for e in compute[0].events] == CORE_ORDER[2:]
        assert root.start_time_unix_nano <= model.start_time_unix_nano <= compute[0].start_time_unix_nano
        assert compute[0].end_time_unix_nano <= model.end_time_unix_nano <= root.end_time_unix_nano
        assert model.trace_id == root.trace_id == compute[0].trace_id
    # The request that carried a traceparent continues the caller's trace.
    continued = [r for r in roots if r.trace_id.hex() == caller_trace]
    assert len(continued) == 1 and continued[0].parent_span_id.hex() == caller_span
    assert all(not r.parent_span_id for r in roots if r is not continued[0])
    assert all(s.parent_span_id in by_id or s.name == "InferRequest" for s in spans)
