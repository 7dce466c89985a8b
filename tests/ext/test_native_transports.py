"""The native front ends (`naiad.ext._native_http`, `_native_grpc`) beside the Python
transports (aiohttp, grpcio): the same requests against a real `naiad serve` on each,
with the real tritonclient, must get the same answers (uvloop's lesson: the reference
transport is the oracle). Plus the native adapters' fallback and a graceful-shutdown
drain on the native transports.

The HTTP and gRPC suites (tests/services/http, tests/services/grpc) run on the default
transport, native where it was built; this module runs a representative subset on both.
"""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import threading
import time
import urllib.request

import numpy as np
import pytest

from support.grpc_models import add_sub, echo_params, identity_fp32, repeat, slow
from support.naiad_process import NaiadProcess

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
import tritonclient.grpc.aio as grpc_aio  # noqa: E402
import tritonclient.http.aio as http_aio  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

try:
    from naiad.ext import _native_grpc  # noqa: F401
    from naiad.ext import _native_http  # noqa: F401
    NATIVE_MISSING = ""
except ImportError as exc:
    NATIVE_MISSING = f"native front ends not built here ({exc}); naiad serves on aiohttp/grpcio"

pytestmark = pytest.mark.skipif(bool(NATIVE_MISSING), reason=NATIVE_MISSING or "built")

TIMEOUT = 10.0
TRANSPORTS = {"native": ("native", "native"), "python": ("aiohttp", "grpcio")}


def _config(kind: str) -> str:
    http, grpc = TRANSPORTS[kind]
    return f'[services.http]\ntransport = "{http}"\n[services.grpc]\ntransport = "{grpc}"\n'


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("native_models")
    for make in (identity_fp32, add_sub, echo_params, repeat, slow):
        make(path)
    return path


@pytest.fixture(scope="module", params=sorted(TRANSPORTS))
def server(request, repo, tmp_path_factory):
    proc = NaiadProcess(tmp_path_factory.mktemp(f"server_{request.param}"),
                        ["--model-repository", str(repo)], config=_config(request.param))
    proc.transport = request.param  # type: ignore[attr-defined]
    proc.start()
    yield proc
    proc.kill_if_running()


def fp32(client_mod, name, values):
    inp = client_mod.InferInput(name, list(values.shape), "FP32")
    if client_mod is httpclient:
        inp.set_data_from_numpy(values, binary_data=True)
    else:
        inp.set_data_from_numpy(values)
    return inp


# ---------------------------------------------------------------------- start-up --

def test_the_log_names_the_transport(server):
    logs = server.logs()
    native = server.transport == "native"
    assert ("HTTP service listening on 127.0.0.1:%d (native)" % server.http_port in logs) == native
    assert ("(native)" in [line for line in logs.splitlines() if "gRPC service listening" in line][0]) == native


def test_fallback_reason_when_not_built(monkeypatch):
    from naiad.services.grpc import native as grpc_native
    from naiad.services.grpc.config import GrpcConfig
    from naiad.services.http import native as http_native
    from naiad.services.http.config import HttpConfig

    assert grpc_native.unsupported_reason(GrpcConfig()) == ""
    assert http_native.unsupported_reason(HttpConfig()) == ""
    monkeypatch.setattr(grpc_native, "_native", None)
    monkeypatch.setattr(http_native, "_native", None)
    assert "native gRPC front end was not built" in grpc_native.unsupported_reason(GrpcConfig())
    assert "native HTTP front end was not built" in http_native.unsupported_reason(HttpConfig())
    assert GrpcConfig().transport == "native" and HttpConfig().transport == "native"


# ---------------------------------------------------------------------- HTTP --

def test_http_infer_binary_and_json(server):
    values = np.arange(1024, dtype=np.float32).reshape(1, 1024)
    with httpclient.InferenceServerClient(server.http_address) as client:
        result = client.infer("identity_fp32", [fp32(httpclient, "INPUT0", values)])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)
        inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
        inp.set_data_from_numpy(values[:, :4], binary_data=False)
        out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)
        result = client.infer("identity_fp32", [inp], outputs=[out], request_id="json-1")
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values[:, :4])
        assert result.get_response()["id"] == "json-1"


def test_http_aio_concurrent_infers(server):
    async def main():
        client = http_aio.InferenceServerClient(server.http_address)
        try:
            arrays = [np.full((1, 16), i, dtype=np.float32) for i in range(32)]
            results = await asyncio.gather(*[
                client.infer("identity_fp32", [fp32(httpclient, "INPUT0", a)]) for a in arrays])
            for a, r in zip(arrays, results):
                np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a)
        finally:
            await client.close()

    asyncio.run(main())


def test_http_metadata_config_and_errors(server):
    with httpclient.InferenceServerClient(server.http_address) as client:
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_server_metadata()["name"] == "triton"
        assert client.get_model_metadata("identity_fp32")["inputs"][0]["name"] == "INPUT0"
        assert client.get_model_config("identity_fp32")["max_batch_size"] == 64
        assert client.get_system_shared_memory_status() == []
        with pytest.raises(InferenceServerException) as e:
            client.infer("no_such_model", [fp32(httpclient, "INPUT0", np.zeros((1, 4), np.float32))])
        assert "no_such_model" in e.value.message()


def _raw(server, method, path, body=b"", headers=None):
    req = urllib.request.Request(server.url + path, data=body if method == "POST" else None, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_http_router_answers_every_other_route(server):
    assert _raw(server, "GET", "/nope") == (404, b'{"error":"Not Found"}')
    assert _raw(server, "DELETE", "/v2/health/live")[0] == 405
    status, body = _raw(server, "POST", "/v2/models/add_sub/infer", b"{not json")
    assert status == 500 and b"failed to parse" in body
    status, body = _raw(server, "GET", "/v2/models/add_sub/stats")
    assert status == 200 and json.loads(body)["model_stats"][0]["name"] == "add_sub"


def test_http_chunked_request_body_and_keep_alive(server):
    import http.client

    doc = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=TIMEOUT)
    try:
        for _ in range(3):  # one connection, several requests
            conn.request("POST", "/v2/models/identity_fp32/infer", body=iter([doc[:10], doc[10:]]),
                         headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
            r = conn.getresponse()
            assert r.status == 200
            assert json.loads(r.read())["outputs"][0]["data"] == [1.0, 2.0]
    finally:
        conn.close()


# ---------------------------------------------------------------------- gRPC --

def test_grpc_infer_fast_and_parameters_paths(server):
    values = np.arange(1024, dtype=np.float32).reshape(1, 1024)
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        result = client.infer("identity_fp32", [fp32(grpcclient, "INPUT0", values)], request_id="r1",
                              outputs=[grpcclient.InferRequestedOutput("OUTPUT0")])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)
        assert result.get_response().id == "r1"
        # Request parameters take the servicer's protobuf path; the model sees them.
        inp = grpcclient.InferInput("IN", [1], "INT32")
        inp.set_data_from_numpy(np.array([1], dtype=np.int32))
        result = client.infer("echo_params", [inp], parameters={"k": "v", "n": 3})
        assert result.get_response().model_name == "echo_params"


def test_grpc_aio_infer_metadata_and_errors(server):
    async def main():
        client = grpc_aio.InferenceServerClient(server.grpc_address)
        try:
            assert await client.is_server_ready()
            meta = await client.get_model_metadata("identity_fp32")
            assert meta.inputs[0].name == "INPUT0"
            config = await client.get_model_config("identity_fp32")
            assert config.config.max_batch_size == 64
            arrays = [np.full((1, 8), i, dtype=np.float32) for i in range(16)]
            results = await asyncio.gather(*[
                client.infer("identity_fp32", [fp32(grpcclient, "INPUT0", a)]) for a in arrays])
            for a, r in zip(arrays, results):
                np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a)
            with pytest.raises(InferenceServerException) as e:
                await client.infer("no_such_model", [fp32(grpcclient, "INPUT0", arrays[0])])
            return e.value
        finally:
            await client.close()

    err = asyncio.run(main())
    assert err.status() == "StatusCode.NOT_FOUND" or "no_such_model" in err.message()


def test_grpc_wrong_input_gets_the_servicer_error(server):
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        inp = grpcclient.InferInput("NOPE", [1, 4], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 4), np.float32))
        with pytest.raises(InferenceServerException) as e:
            client.infer("identity_fp32", [inp])
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "NOPE" in e.value.message()
        shm = client.get_system_shared_memory_status()
        assert len(shm.regions) == 0


def test_grpc_stream_infer(server):
    items: queue.Queue = queue.Queue()
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        client.start_stream(callback=lambda result, error: items.put((result, error)))
        for i in range(5):
            client.async_stream_infer("identity_fp32", [fp32(grpcclient, "INPUT0", np.full((1, 4), i, np.float32))],
                                      request_id=str(i))
        got = {}
        for _ in range(5):
            result, error = items.get(timeout=TIMEOUT)
            assert error is None
            got[result.get_response().id] = result.as_numpy("OUTPUT0")
        client.stop_stream()
    assert sorted(got) == [str(i) for i in range(5)]
    for i in range(5):
        assert float(got[str(i)][0, 0]) == i


# ---------------------------------------------------------------------- shutdown --

def test_native_shutdown_drains_in_flight_work(repo, tmp_path):
    """SIGTERM with a slow request in flight on each protocol: both are answered, new HTTP
    connections are refused meanwhile while gRPC serves on (as Triton 24.04 does while its
    HTTP connections close), and the server exits 0."""
    proc = NaiadProcess(tmp_path / "drain", ["--model-repository", str(repo), "--exit-timeout-secs=20"],
                        config=_config("native"))
    proc.start()
    try:
        results: dict[str, object] = {}

        def slow_infer(proto):
            mod = httpclient if proto == "http" else grpcclient
            address = proc.http_address if proto == "http" else proc.grpc_address
            client = mod.InferenceServerClient(address)
            try:
                inp = mod.InferInput("SECONDS", [1], "FP32")
                inp.set_data_from_numpy(np.array([1.5], dtype=np.float32))
                results[proto] = client.infer("slow", [inp]).as_numpy("DONE")
            except Exception as exc:  # recorded for the assertion below
                results[proto] = exc
            finally:
                client.close()

        threads = [threading.Thread(target=slow_infer, args=(p,)) for p in ("http", "grpc")]
        for t in threads:
            t.start()
        time.sleep(0.5)
        proc.signal(signal.SIGTERM)
        time.sleep(0.3)
        with grpcclient.InferenceServerClient(proc.grpc_address) as other:
            other.infer("add_sub", [fp32(grpcclient, n, np.ones(4, np.float32)) for n in ("INPUT0", "INPUT1")])
        with pytest.raises(OSError):  # the HTTP listener is closed
            _raw(proc, "POST", "/v2/models/add_sub/infer", b"{}")
        for t in threads:
            t.join(TIMEOUT)
        for proto in ("http", "grpc"):
            assert not isinstance(results[proto], Exception), (proto, results[proto])
        assert proc.wait(30) == 0
    finally:
        proc.kill_if_running()
