"""Streamed requests leave trace records like unary ones: HTTP generate_stream, gRPC
ModelStreamInfer and an OpenAI-endpoint stream, each against `tiny_generator`, traced to
the trace file at TIMESTAMPS level with rate 1."""

from __future__ import annotations

import json
import queue
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import openai
import tritonclient.grpc as grpcclient

from support.naiad_process import free_port

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "models"


def _names(recs: list[dict]) -> list[str]:
    return [r["timestamps"][0]["name"] for r in recs if "timestamps" in r]


def test_streams_are_traced(naiad, tmp_path):
    repo = tmp_path / "models"
    shutil.copytree(EXAMPLES / "tiny_generator", repo / "tiny_generator")
    trace_file = tmp_path / "trace.json"
    port = free_port()
    proc = naiad("--model-repository", str(repo), f"--trace-file={trace_file}", "--trace-level=TIMESTAMPS",
                 "--trace-rate=1", config=f'[services.openai]\nenabled = true\naddress = "127.0.0.1"\nport = {port}\n')

    # HTTP generate_stream: 3 SSE events.
    req = urllib.request.Request(proc.url + "/v2/models/tiny_generator/generate_stream", method="POST",
                                 data=json.dumps({"text_input": "hi", "max_tokens": 3, "stream": True}).encode())
    with urllib.request.urlopen(req, timeout=30) as r:
        events = [line for line in r.read().decode().split("\n\n") if line.startswith("data: ")]
    assert len(events) == 3

    # gRPC ModelStreamInfer: 4 responses then the final flag.
    got: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(proc.grpc_address)
    client.start_stream(callback=lambda result, error: got.put((result, error)))
    inputs = [grpcclient.InferInput("text_input", [1], "BYTES"), grpcclient.InferInput("max_tokens", [1], "INT32"),
              grpcclient.InferInput("stream", [1], "BOOL")]
    inputs[0].set_data_from_numpy(np.array([b"hello"], dtype=object))
    inputs[1].set_data_from_numpy(np.array([4], dtype=np.int32))
    inputs[2].set_data_from_numpy(np.array([True]))
    client.async_stream_infer("tiny_generator", inputs, request_id="g1")
    words = [got.get(timeout=30) for _ in range(4)]
    assert all(err is None for _, err in words)
    client.stop_stream()
    client.close()

    # OpenAI stream.
    oai = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
    chunks = list(oai.completions.create(model="tiny_generator", prompt="abc", max_tokens=5, stream=True))
    assert sum(1 for c in chunks if c.choices[0].text) == 5
    oai.close()

    assert proc.stop() == 0  # the trace file is completed at shutdown
    traces: dict[int, list[dict]] = {}
    for r in json.loads(trace_file.read_text()):
        traces.setdefault(r["id"], []).append(r)
    assert len(traces) == 3, traces
    grpc = [t for t in traces.values() if "GRPC_WAITREAD_START" in _names(t)]
    http = [t for t in traces.values() if "HTTP_RECV_START" in _names(t)]
    assert len(grpc) == 1 and len(http) == 2
    assert grpc[0][0]["request_id"] == "g1"
    for recs in traces.values():
        assert recs[0]["model_name"] == "tiny_generator"
        names = _names(recs)
        for activity in ("REQUEST_START", "QUEUE_START", "COMPUTE_START", "REQUEST_END"):
            assert activity in names, names
        assert names[-1] in ("HTTP_SEND_END", "GRPC_SEND_END")
        stamps = [r["timestamps"][0]["ns"] for r in recs if "timestamps" in r]
        assert stamps[0] <= stamps[-1]
