"""The HTTP/REST service against a real `naiad serve`: health, metadata, config, inference
(JSON and binary tensors, every datatype, BYTES, FP16/BF16, compression, parameters,
classification, shared memory), generate and generate_stream, statistics, settings,
Triton's error replies, and keep-alive. One server for the whole module; clients are
tritonclient (sync and aio) and raw http.client."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import struct
import time
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException

from naiad_http_models import build_repository, serve
from support.shared_memory import shared_memory_module


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("http_infer")
    repo = build_repository(root / "models")
    with serve(root / "naiad", "--model-repository", str(repo)) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(server.http_address, network_timeout=30)
    yield c
    c.close()


def request(server, method, path, body=b"", headers=None, conn=None):
    """(status, headers, body) of one raw HTTP request."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        if own:
            conn.close()


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


def infer_json(model, inputs, outputs=None, parameters=None):
    doc = {"inputs": inputs}
    if outputs is not None:
        doc["outputs"] = outputs
    if parameters is not None:
        doc["parameters"] = parameters
    return json.dumps(doc).encode()


def assert_healthy(server):
    assert request(server, "GET", "/v2/health/ready")[0] == 200
    status, _, body = request(server, "POST", "/v2/models/add_sub/infer", infer_json("add_sub", [
        {"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]},
        {"name": "INPUT1", "datatype": "FP32", "shape": [4], "data": [1, 1, 1, 1]}]))
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["data"] == [2, 3, 4, 5]


# ------------------------------------------------------------------ health, metadata, config --


def test_health_server_metadata_and_model_metadata(server, client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("add_sub") and client.is_model_ready("add_sub", "1")
    meta = client.get_server_metadata()
    assert meta["name"] == "triton" and meta["version"] == "2.45.0"
    assert "binary_tensor_data" in meta["extensions"]
    m = client.get_model_metadata("identity_fp32")
    assert m == {"name": "identity_fp32", "versions": ["1"], "platform": "python",
                 "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, -1]}],
                 "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, -1]}]}
    assert client.get_model_metadata("add_sub", "1")["versions"] == ["1"]
    config = client.get_model_config("identity_fp32")
    assert config["name"] == "identity_fp32" and config["max_batch_size"] == 64
    assert config["input"][0]["data_type"] == "TYPE_FP32" and "dynamic_batching" in config
    status, headers, body = request(server, "GET", "/v2/models/add_sub/versions/1/config")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["output"][1]["name"] == "OUTPUT1"


def test_unknown_model_and_version_errors(server):
    status, _, body = request(server, "GET", "/v2/models/nope")
    assert status == 404 and "nope" in error_of(body)
    status, _, body = request(server, "GET", "/v2/models/nope/ready")
    assert (status, error_of(body)) == (400, "Model version not ready")
    assert request(server, "GET", "/v2/models/add_sub/versions/7/ready")[0] == 400
    assert request(server, "GET", "/v2/models/nope/config")[0] == 404
    status, _, body = request(server, "POST", "/v2/models/nope/infer", infer_json("nope", []))
    assert status == 404, body


def test_not_found_and_method_not_allowed(server):
    for path in ("/v2/nothing", "/v2/models/add_sub/versions/x", "/v2/models/add_sub/versions/1/trace/setting",
                 "/", "/v2/health/alive"):
        status, headers, body = request(server, "GET", path)
        assert (status, error_of(body)) == (404, "Not Found"), path
    for method, path in (("GET", "/v2/models/add_sub/infer"), ("POST", "/v2/health/live"),
                         ("POST", "/v2"), ("DELETE", "/v2/models/add_sub"),
                         ("POST", "/v2/systemsharedmemory/status"), ("GET", "/v2/repository/index")):
        status, _, body = request(server, method, path)
        assert (status, error_of(body)) == (405, "Method Not Allowed"), (method, path)


# ------------------------------------------------------------------ inference --

NUMERIC = {
    "BOOL": np.array([True, False, True]),
    "UINT8": np.array([0, 7, 255], dtype=np.uint8),
    "UINT16": np.array([0, 65535], dtype=np.uint16),
    "UINT32": np.array([1, 2**32 - 1], dtype=np.uint32),
    "UINT64": np.array([3, 2**64 - 1], dtype=np.uint64),
    "INT8": np.array([-128, 127], dtype=np.int8),
    "INT16": np.array([-3, 30000], dtype=np.int16),
    "INT32": np.array([-(2**31), 5], dtype=np.int32),
    "INT64": np.array([-(2**62), 9], dtype=np.int64),
    "FP32": np.array([0.5, -1.25, 3e38], dtype=np.float32),
    "FP64": np.array([1e-300, 2.5], dtype=np.float64),
    "BYTES": np.array([b"alpha", b"", "\u00fcber".encode()], dtype=np.object_),
}


@pytest.mark.parametrize("datatype", list(NUMERIC))
def test_identity_every_datatype_json_and_binary(client, datatype):
    arr = NUMERIC[datatype]
    for binary_in in (True, False):
        for binary_out in (True, False):
            inp = httpclient.InferInput(f"IN_{datatype}", list(arr.shape), datatype)
            inp.set_data_from_numpy(arr, binary_data=binary_in)
            out = httpclient.InferRequestedOutput(f"OUT_{datatype}", binary_data=binary_out)
            result = client.infer("identity_all", [inp], outputs=[out])
            got = result.as_numpy(f"OUT_{datatype}")
            if datatype == "BYTES":
                got = [g if isinstance(g, bytes) else g.encode() for g in got]
                assert got == list(arr)
            else:
                np.testing.assert_array_equal(got, arr)
                assert got.dtype == arr.dtype


def test_fp16_and_bf16_travel_as_binary_only(server, client):
    h = np.array([1.5, -0.25, 65504], dtype=np.float16)
    bf = np.array([1.0, -2.5], dtype=np.float32)
    i_h = httpclient.InferInput("IN_FP16", [3], "FP16")
    i_h.set_data_from_numpy(h)
    i_bf = httpclient.InferInput("IN_BF16", [2], "BF16")
    i_bf.set_data_from_numpy(bf)
    result = client.infer("identity_all", [i_h, i_bf])  # no outputs named: all binary
    np.testing.assert_array_equal(result.as_numpy("OUT_FP16"), h)
    np.testing.assert_array_equal(result.as_numpy("OUT_BF16"), bf)
    # FP16 as JSON: refused both ways, 400.
    status, _, body = request(server, "POST", "/v2/models/identity_all/infer", infer_json("identity_all", [
        {"name": "IN_FP16", "datatype": "FP16", "shape": [1], "data": [1.0]}]))
    assert status == 400 and "receiving FP16 data via JSON is not supported" in error_of(body)
    i_h.set_data_from_numpy(h)
    with pytest.raises(InferenceServerException) as e:
        client.infer("identity_all", [i_h], outputs=[httpclient.InferRequestedOutput("OUT_FP16", binary_data=False)])
    assert e.value.status() == "400" and "sending FP16 data via JSON is not supported" in e.value.message()


def test_batched_binary_request_and_aio_client(server):
    async def go():
        async with aioclient.InferenceServerClient(server.http_address) as c:
            assert await c.is_server_ready()
            x = np.random.default_rng(0).random((3, 1024), dtype=np.float32)
            inp = aioclient.InferInput("INPUT0", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            results = await asyncio.gather(*(c.infer("identity_fp32", [inp]) for _ in range(8)))
            for r in results:
                np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), x)
            meta = await c.get_model_metadata("identity_fp32")
            assert meta["name"] == "identity_fp32"

    asyncio.run(go())


def test_bytes_model_and_raw_binary_framing(server, client):
    words = np.array([[b"abc", b"hello"]], dtype=np.object_)
    inp = httpclient.InferInput("TEXT", [1, 2], "BYTES")
    inp.set_data_from_numpy(words)
    assert client.infer("reverse", [inp]).as_numpy("OUT").tolist() == [[b"cba", b"olleh"]]
    # The same by hand: JSON header, then the BYTES blob (4-byte little-endian lengths).
    blob = b"".join(struct.pack("<I", len(w)) + w for w in (b"xy", b"z\x00"))
    header = json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 2],
                                     "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": [{"name": "OUT", "parameters": {"binary_data": True}}]}).encode()
    status, headers, body = request(server, "POST", "/v2/models/reverse/infer", header + blob,
                                    {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    n = int(headers["inference-header-content-length"])
    doc = json.loads(body[:n])
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == len(body) - n
    assert body[n:] == struct.pack("<I", 2) + b"yx" + struct.pack("<I", 2) + b"\x00z"


def test_binary_size_errors_and_malformed_bodies_leave_the_server_healthy(server):
    x = np.arange(4, dtype=np.float32).tobytes()
    header = json.dumps({"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}},
        {"name": "INPUT1", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}}]}).encode()
    hl = {"Inference-Header-Content-Length": str(len(header))}
    cases = [
        (header + x, hl, 400, "unexpected size for input 'INPUT1', expecting 16 additional bytes"),
        (header + x + x + b"!", hl, 400, "unexpected additional input data for model 'add_sub'"),
        (header + x + x, {"Inference-Header-Content-Length": "99999"}, 400, "inference header size should be in range"),
        (b'{"inputs": [', {}, 500, "failed to parse the request JSON"),
        (b"[1, 2]", {}, 500, "Unable to parse 'inputs'"),
        (b'{"inputs": {}}', {}, 500, "Unable to parse 'inputs'"),
        (infer_json("add_sub", [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2]}]), {}, 500,
         "Shape does not match"),
        (infer_json("add_sub", [{"name": "INPUT0", "datatype": "FP32", "shape": [4]}]), {}, 400, "no field is set"),
        (infer_json("add_sub", [], parameters={"triton_enable_empty_final_response": True}), {}, 400,
         "parameter keys starting with 'triton_' are reserved"),
        (infer_json("add_sub", [{"name": "INPUT0", "datatype": "INT32", "shape": [4], "data": [1, 2, 3, 4]},
                                {"name": "INPUT1", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]), {},
         400, "data-type is 'INT32'"),
        (b"\xff\xfe garbage", {}, 500, "failed to parse the request JSON"),
    ]
    for body, headers, status, words in cases:
        got, _, reply = request(server, "POST", "/v2/models/add_sub/infer", body, headers)
        assert got == status, (words, reply)
        assert words in error_of(reply), reply
    assert_healthy(server)


def test_compressed_requests_and_responses(server, client):
    x = np.linspace(0, 1, 4, dtype=np.float32)
    i0 = httpclient.InferInput("INPUT0", [4], "FP32")
    i0.set_data_from_numpy(x)
    i1 = httpclient.InferInput("INPUT1", [4], "FP32")
    i1.set_data_from_numpy(x, binary_data=False)
    for req in ("gzip", "deflate", None):
        for resp in ("gzip", "deflate", None):
            r = client.infer("add_sub", [i0, i1], request_compression_algorithm=req,
                             response_compression_algorithm=resp)
            np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), x + x)
    # Raw: the reply is compressed as Accept-Encoding asks, weights honoured.
    body = infer_json("add_sub", [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]},
                                  {"name": "INPUT1", "datatype": "FP32", "shape": [4], "data": [1, 1, 1, 1]}])
    status, headers, reply = request(server, "POST", "/v2/models/add_sub/infer", gzip.compress(body),
                                     {"Content-Encoding": "gzip", "Accept-Encoding": "gzip;q=0.2, deflate;q=0.9"})
    assert status == 200 and headers["content-encoding"] == "deflate"
    assert json.loads(zlib.decompress(reply))["outputs"][1]["data"] == [0, 1, 2, 3]
    status, headers, reply = request(server, "POST", "/v2/models/add_sub/infer", body, {"Content-Encoding": "br"})
    assert status == 501 and error_of(reply) == "Unsupported compression type"
    assert headers["accept-encoding"] == "gzip, deflate"
    status, _, reply = request(server, "POST", "/v2/models/add_sub/infer", b"not gzip at all",
                               {"Content-Encoding": "gzip"})
    assert status == 400 and "decompress" in error_of(reply)
    assert_healthy(server)


def test_request_parameters_sequence_ids_and_request_id(client):
    inp = httpclient.InferInput("IN", [2], "INT32")
    inp.set_data_from_numpy(np.array([4, 5], dtype=np.int32))

    def info(**kw):
        result = client.infer("echo", [inp], **kw)
        return json.loads(result.as_numpy("INFO")[0]), result.get_response()

    got, resp = info(request_id="req-1", parameters={"s": "text", "i": 3, "b": True, "f": 0.25})
    assert got["id"] == "req-1" and resp["id"] == "req-1"
    assert got["parameters"] == {"s": "text", "i": 3, "b": True, "f": 0.25}
    got, resp = info()
    assert "id" not in resp and got["correlation_id"] == 0
    assert info(sequence_id=77, sequence_start=True)[0]["correlation_id"] == 77
    assert info(sequence_id="corr-x", sequence_end=True)[0]["correlation_id"] == "corr-x"
    with pytest.raises(InferenceServerException) as e:
        client.infer("echo", [inp], parameters={"triton_x": 1})
    assert e.value.status() == "400"


def test_classification(client):
    inp = httpclient.InferInput("IN", [4], "FP32")
    inp.set_data_from_numpy(np.array([0.1, 0.9, 0.5, 0.2], dtype=np.float32))
    for binary in (True, False):
        out = httpclient.InferRequestedOutput("OUT", binary_data=binary, class_count=2)
        result = client.infer("classifier", [inp], outputs=[out])
        got = [g if isinstance(g, bytes) else g.encode() for g in result.as_numpy("OUT")]
        assert got == [b"0.900000:1:dog", b"0.500000:2:bird"]
        assert result.get_output("OUT")["datatype"] == "BYTES"


def test_system_shared_memory_inputs_and_outputs(server, client):
    shm = shared_memory_module()
    key_in, key_out = f"/naiad_http_in_{server.http_port}", f"/naiad_http_out_{server.http_port}"
    h_in = shm.create_shared_memory_region("in_r", key_in, 32)
    h_out = shm.create_shared_memory_region("out_r", key_out, 32)
    try:
        a, b = np.arange(4, dtype=np.float32), np.full(4, 2, dtype=np.float32)
        shm.set_shared_memory_region(h_in, [a, b])
        client.register_system_shared_memory("in_r", key_in, 32)
        client.register_system_shared_memory("out_r", key_out, 32)
        status = client.get_system_shared_memory_status()
        assert {"name": "in_r", "key": key_in, "offset": 0, "byte_size": 32} in status
        assert client.get_system_shared_memory_status("out_r") == [
            {"name": "out_r", "key": key_out, "offset": 0, "byte_size": 32}]
        i0 = httpclient.InferInput("INPUT0", [4], "FP32")
        i0.set_shared_memory("in_r", 16)
        i1 = httpclient.InferInput("INPUT1", [4], "FP32")
        i1.set_shared_memory("in_r", 16, offset=16)
        o0 = httpclient.InferRequestedOutput("OUTPUT0")
        o0.set_shared_memory("out_r", 16)
        o1 = httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)
        result = client.infer("add_sub", [i0, i1], outputs=[o0, o1])
        assert result.get_output("OUTPUT0") == {"name": "OUTPUT0", "datatype": "FP32", "shape": [4]}
        np.testing.assert_array_equal(shm.get_contents_as_numpy(h_out, np.float32, [4]), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
        # Errors: a region registered twice (400), an unknown one (404).
        with pytest.raises(InferenceServerException) as e:
            client.register_system_shared_memory("in_r", key_in, 32)
        assert e.value.status() == "400" and "already in manager" in e.value.message()
        with pytest.raises(InferenceServerException) as e:
            client.get_system_shared_memory_status("nope")
        assert e.value.status() == "404"
        st, _, body = request(server, "POST", "/v2/systemsharedmemory/register", b"{}")
        assert st == 400 and "'region name' is necessary" in error_of(body)
        st, _, body = request(server, "POST", "/v2/systemsharedmemory/region/x/register", b'{"byte_size": 4}')
        assert (st, error_of(body)) == (400, "Shared memory register request has no 'key' field")
        client.unregister_system_shared_memory("in_r")
        assert [r["name"] for r in client.get_system_shared_memory_status()] == ["out_r"]
        client.unregister_system_shared_memory()
        assert client.get_system_shared_memory_status() == []
    finally:
        try:
            client.unregister_system_shared_memory()
        finally:
            shm.destroy_shared_memory_region(h_in)
            shm.destroy_shared_memory_region(h_out)


def test_cuda_shared_memory_routes_answer(server, client):
    assert client.get_cuda_shared_memory_status() == []
    with pytest.raises(InferenceServerException) as e:
        client.register_cuda_shared_memory("gpu_r", b"\0" * 64, 0, 16)
    assert e.value.status() == "400"
    client.unregister_cuda_shared_memory()
    st, _, body = request(server, "POST", "/v2/cudasharedmemory/region/c/register", b'{"byte_size": 4}')
    assert (st, error_of(body)) == (400, "Shared memory register request has no 'raw_handle' field")


def test_model_error_and_empty_input(server):
    status, _, body = request(server, "POST", "/v2/models/fail/infer", infer_json("fail", [
        {"name": "IN", "datatype": "INT32", "shape": [1], "data": [1]}]))
    assert status >= 400 and "model says no" in error_of(body)
    assert_healthy(server)


# ------------------------------------------------------------------ decoupled, generate --


def test_decoupled_model_on_infer_is_501(server):
    status, _, body = request(server, "POST", "/v2/models/repeat/infer", infer_json("repeat", [
        {"name": "IN", "datatype": "INT32", "shape": [2], "data": [1, 2]}]))
    assert (status, error_of(body)) == (501, "HTTP end point doesn't support models with decoupled transaction policy")


def _sse(body: bytes) -> list[dict]:
    events = body.decode().split("\n\n")
    assert events[-1] == ""
    out = []
    for e in events[:-1]:
        assert e.startswith("data: "), e
        out.append(json.loads(e[len("data: "):]))
    return out


def test_generate_stream_from_a_decoupled_model(server):
    status, headers, body = request(server, "POST", "/v2/models/repeat/generate_stream",
                                    json.dumps({"IN": [7, 8, 9]}).encode())
    assert status == 200 and headers["content-type"] == "text/event-stream; charset=utf-8"
    events = _sse(body)
    assert [(e["OUT"], e["IDX"]) for e in events] == [(7, 0), (8, 1), (9, 2)]
    assert events[0]["model_name"] == "repeat" and events[0]["model_version"] == "1"


def test_generate_stream_arrives_incrementally(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        conn.request("POST", "/v2/models/repeat/versions/1/generate_stream",
                     body=json.dumps({"IN": [1, 2, 3], "DELAY_MS": 300}).encode())
        sent = time.monotonic()
        r = conn.getresponse()
        assert r.status == 200
        first = r.read1(65536)  # the first event is on the wire while the model still works
        first_at = time.monotonic() - sent
        assert first.startswith(b"data: ") and json.loads(first[6:])["OUT"] == 1
        rest = r.read()
        done_at = time.monotonic() - sent
        assert [e["OUT"] for e in _sse(first + rest)] == [1, 2, 3]
        assert done_at - first_at > 0.4, (first_at, done_at)
    finally:
        conn.close()


def test_generate_single_response_models_and_errors(server):
    status, headers, body = request(server, "POST", "/v2/models/reverse/generate",
                                    json.dumps({"TEXT": "stressed", "parameters": {"note": "x"}}).encode())
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"OUT": "desserts", "model_name": "reverse", "model_version": "1"}
    status, _, body = request(server, "POST", "/v2/models/reverse/generate_stream",
                              json.dumps({"TEXT": ["ab", "cd"]}).encode())
    assert status == 200 and _sse(body)[0]["OUT"] == ["ba", "dc"]
    # A decoupled model may answer /generate only with exactly one response.
    status, _, body = request(server, "POST", "/v2/models/repeat/generate", json.dumps({"IN": [5]}).encode())
    assert status == 200 and json.loads(body)["OUT"] == 5
    status, _, body = request(server, "POST", "/v2/models/repeat/generate", json.dumps({"IN": [5, 6]}).encode())
    assert status == 500 and "generate expects model to produce exactly 1 response" in error_of(body)
    status, _, body = request(server, "POST", "/v2/models/reverse/generate", b'{"TEXT": "a"}',
                              {"Content-Encoding": "gzip"})
    assert (status, error_of(body)) == (400, "Unsupported content-encoding, only 'identity' is supported.")
    status, _, body = request(server, "POST", "/v2/models/nope/generate", b"{}")
    assert status == 404
    status, _, body = request(server, "POST", "/v2/models/reverse/generate", b"{nope")
    assert status == 500
    status, _, body = request(server, "POST", "/v2/models/reverse/generate", b'{"TEXT": "a", "bad": [1]}')
    assert status == 400 and "has invalid type" in error_of(body)
    status, _, body = request(server, "POST", "/v2/models/fail/generate_stream", b'{"IN": [1]}')
    assert status >= 400 and "model says no" in _sse(body)[0]["error"]
    assert_healthy(server)


# ------------------------------------------------------------------ statistics, settings --


def test_statistics(server, client):
    inp = httpclient.InferInput("INPUT0", [2, 3], "FP32")
    inp.set_data_from_numpy(np.ones((2, 3), dtype=np.float32))
    for _ in range(3):
        client.infer("identity_fp32", [inp])
    stats = client.get_inference_statistics("identity_fp32")["model_stats"]
    (s,) = stats
    assert s["name"] == "identity_fp32" and s["version"] == "1"
    assert s["inference_count"] >= 6 and s["execution_count"] >= 1
    assert set(s["inference_stats"]) == {"success", "fail", "queue", "compute_input", "compute_infer",
                                         "compute_output", "cache_hit", "cache_miss"}
    assert s["inference_stats"]["success"]["count"] >= 3 and s["inference_stats"]["success"]["ns"] > 0
    sizes = [b["batch_size"] for b in s["batch_stats"]]
    assert sizes == sorted(sizes) and sizes
    assert set(s["batch_stats"][0]) == {"batch_size", "compute_input", "compute_infer", "compute_output"}
    everything = client.get_inference_statistics()["model_stats"]
    assert {"identity_fp32", "add_sub", "repeat"} <= {m["name"] for m in everything}
    st, _, body = request(server, "GET", "/v2/models/identity_fp32/versions/1/stats")
    assert st == 200 and json.loads(body)["model_stats"][0]["name"] == "identity_fp32"
    assert request(server, "GET", "/v2/models/nope/stats")[0] == 404


def test_logging_and_trace_settings(server, client):
    settings = client.get_log_settings()
    assert set(settings) == {"log_file", "log_info", "log_warning", "log_error", "log_verbose_level", "log_format"}
    updated = client.update_log_settings({"log_verbose_level": 1, "log_info": True})
    assert updated["log_verbose_level"] == 1
    assert client.update_log_settings({"log_verbose_level": 0})["log_verbose_level"] == 0
    st, _, body = request(server, "POST", "/v2/logging", b'{"log_file": "/tmp/x.log"}')
    assert (st, error_of(body)) == (501, "log file location can not be updated through network protocol")
    st, _, body = request(server, "POST", "/v2/logging", b"not json")
    assert st == 500
    # Tracing is a separate service: without it the route answers 503 in Triton's words.
    st, _, body = request(server, "GET", "/v2/trace/setting")
    if st == 503:
        assert error_of(body) == "the server does not support tracing"
    else:
        assert st == 200 and "trace_level" in json.loads(body)
    st, _, body = request(server, "POST", "/v2/trace/setting", b'{"trace_file": "/tmp/t.json"}')
    assert (st, error_of(body)) == (501, "trace file location can not be updated through network protocol")
    st, _, body = request(server, "GET", "/v2/models/add_sub/trace/setting")
    assert st in (200, 503)
    if st == 200:
        assert json.loads(body)["trace_rate"]
        st, _, body = request(server, "GET", "/v2/models/nope/trace/setting")
        assert (st, error_of(body)) == (400, "Request for unknown model : nope")
        st, _, body = request(server, "POST", "/v2/models/add_sub/trace/setting", b'{"trace_rate": "7"}')
        assert st == 200 and json.loads(body)["trace_rate"] == "7"
        st, _, body = request(server, "POST", "/v2/models/add_sub/trace/setting", b'{"trace_rate": null}')
        assert st == 200 and json.loads(body)["trace_rate"] != "7"
        st, _, body = request(server, "POST", "/v2/trace/setting", b'{"trace_level": "TIMESTAMPS"}')
        assert st == 500


def test_keep_alive_serves_many_requests_on_one_connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        conn.connect()
        sock = conn.sock
        body = infer_json("add_sub", [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]},
                                      {"name": "INPUT1", "datatype": "FP32", "shape": [4], "data": [0, 0, 0, 0]}])
        for i in range(20):
            status, _, reply = request(server, "POST", "/v2/models/add_sub/infer", body, conn=conn)
            assert status == 200
            # Errors do not close the connection either.
            status, _, reply = request(server, "GET", "/v2/models/nope", conn=conn)
            assert status == 404
        assert conn.sock is sock  # never reconnected
    finally:
        conn.close()


def test_repository_index_and_repository_name_variants(server, client):
    index = client.get_model_repository_index()
    assert {"name": "add_sub", "version": "1", "state": "READY"} in index
    st, _, body = request(server, "POST", "/v2/repository/index", b'{"ready": true}')
    assert st == 200 and all(e["state"] == "READY" for e in json.loads(body))
    st, _, body = request(server, "POST", "/v2/repository/anyname/index")
    assert st == 200 and json.loads(body)
    for action in ("load", "unload"):
        st, _, body = request(server, "POST", f"/v2/repository/anyname/models/add_sub/{action}")
        assert (st, error_of(body)) == (501, "'repository_name' specification is not supported")
    # This server runs without explicit model control: load/unload are refused.
    st, _, body = request(server, "POST", "/v2/repository/models/add_sub/unload")
    assert st == 503, body


def test_large_json_bodies_are_decoded_and_encoded_off_the_loop(server):
    # Over the 1 MiB default `offload_bytes` both ways; a health check answers meanwhile.
    values = np.arange(300_000, dtype=np.float32) / 7
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, values.size],
                                   "data": values.tolist()}]}).encode()
    assert len(body) > 1 << 20
    status, headers, reply = request(server, "POST", "/v2/models/identity_fp32/infer", body)
    assert status == 200 and headers["content-type"] == "application/json"
    out = json.loads(reply)["outputs"][0]
    assert out["shape"] == [1, values.size]
    np.testing.assert_array_equal(np.asarray(out["data"], dtype=np.float32), values)
    status, headers, reply = request(server, "POST", "/v2/models/identity_fp32/infer", gzip.compress(body),
                                     {"Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(reply))["outputs"][0]["shape"] == [1, values.size]


def test_client_leaving_a_stream_cancels_it_and_the_server_goes_on(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    conn.request("POST", "/v2/models/repeat/generate_stream",
                 body=json.dumps({"IN": list(range(50)), "DELAY_MS": 100}).encode())
    r = conn.getresponse()
    assert r.status == 200 and r.read1(65536).startswith(b"data: ")
    conn.close()  # gone after the first of 50 events, 5 s of work
    started = time.monotonic()
    status, _, body = request(server, "POST", "/v2/models/repeat/generate_stream",
                              json.dumps({"IN": [1, 2]}).encode())
    assert status == 200 and [e["OUT"] for e in _sse(body)] == [1, 2]
    assert time.monotonic() - started < 4
    assert_healthy(server)
