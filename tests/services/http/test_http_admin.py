"""The HTTP service's administrative side against a real `naiad serve` in explicit model
control: repository load/unload (with a config override and files), restricted APIs,
forwarded headers, and the request body limit."""

from __future__ import annotations

import base64
import gzip
import http.client
import json

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from naiad_http_models import build_repository, model_source, serve

ADMIN = {"admin-key": "s3cret"}
STATS = {"stats-key": "k"}
LIMIT = 200_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("http_admin")
    repo = build_repository(root / "models", ["echo", "add_sub", "identity_fp32"])
    with serve(root / "naiad", "--model-repository", str(repo), "--model-control-mode=explicit",
               "--load-model=echo", "--load-model=identity_fp32",
               "--http-restricted-api=model-repository,shared-memory:admin-key=s3cret",
               "--http-restricted-api=statistics:stats-key=k",
               "--http-header-forward-pattern=^x-fwd-",
               config=f"[services.http]\nmax_body_bytes = {LIMIT}\n") as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(server.http_address, network_timeout=30)
    yield c
    c.close()


def request(server, method, path, body=b"", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


def test_restricted_apis_need_their_header(server, client):
    expected = (403, "This API is restricted, expecting header 'admin-key'")
    for method, path in (("POST", "/v2/repository/index"), ("GET", "/v2/repository/index"),
                         ("POST", "/v2/repository/models/add_sub/load"),
                         ("GET", "/v2/systemsharedmemory/status"), ("POST", "/v2/cudasharedmemory/unregister")):
        status, _, body = request(server, method, path)
        assert (status, error_of(body)) == expected, (method, path)
    status, _, body = request(server, "POST", "/v2/repository/index", headers={"admin-key": "wrong"})
    assert (status, error_of(body)) == expected
    # The restriction is checked before the method (as Triton).
    status, _, body = request(server, "GET", "/v2/repository/index", headers=ADMIN)
    assert status == 405
    status, _, body = request(server, "GET", "/v2/models/stats")
    assert (status, error_of(body)) == (403, "This API is restricted, expecting header 'stats-key'")
    assert request(server, "GET", "/v2/models/stats", headers=STATS)[0] == 200
    assert client.get_inference_statistics("echo", headers=STATS)["model_stats"][0]["name"] == "echo"
    with pytest.raises(InferenceServerException) as e:
        client.get_model_repository_index()
    assert e.value.status() == "403"
    assert client.get_system_shared_memory_status(headers=ADMIN) == []
    # Unrestricted groups answer without any header.
    assert client.is_server_ready() and client.get_model_metadata("echo")["name"] == "echo"


def test_explicit_load_and_unload(server, client):
    index = {e["name"]: e for e in client.get_model_repository_index(headers=ADMIN)}
    assert index["echo"]["state"] == "READY"
    assert not client.is_model_ready("add_sub")
    client.load_model("add_sub", headers=ADMIN)
    assert client.is_model_ready("add_sub")
    x = np.ones(4, dtype=np.float32)
    i0, i1 = httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")
    i0.set_data_from_numpy(x)
    i1.set_data_from_numpy(x)
    np.testing.assert_array_equal(client.infer("add_sub", [i0, i1]).as_numpy("OUTPUT0"), x + x)
    ready = client.get_model_repository_index(headers=ADMIN)
    st, _, body = request(server, "POST", "/v2/repository/index", b'{"ready": true}', ADMIN)
    assert st == 200 and {e["name"] for e in json.loads(body)} == {"echo", "identity_fp32", "add_sub"}
    assert len(ready) >= 3
    client.unload_model("add_sub", headers=ADMIN, unload_dependents=True)
    assert not client.is_model_ready("add_sub")
    entry = {e["name"]: e for e in client.get_model_repository_index(headers=ADMIN)}["add_sub"]
    assert entry["state"] == "UNAVAILABLE"
    st, _, body = request(server, "POST", "/v2/repository/models/add_sub/unload",
                          b'{"parameters": {"unload_dependents": "yes"}}', ADMIN)
    assert st == 500 and "unload_dependents" in error_of(body)
    st, _, body = request(server, "POST", "/v2/repository/models/nope/load", b"", ADMIN)
    assert st >= 400 and "nope" in error_of(body)


def test_load_with_config_override_and_files(server, client):
    config_text, code = model_source("add_sub")
    config = json.dumps({
        "name": "late", "backend": "python", "max_batch_size": 0,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]},
                  {"name": "INPUT1", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]},
                   {"name": "OUTPUT1", "data_type": "TYPE_FP32", "dims": [4]}],
    })
    client.load_model("late", headers=ADMIN, config=config, files={"file:1/model.py": code.encode()})
    assert client.is_model_ready("late")
    assert client.get_model_config("late")["name"] == "late"
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [5, 5, 5, 5]},
                                  {"name": "INPUT1", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]})
    st, _, reply = request(server, "POST", "/v2/models/late/infer", body.encode())
    assert st == 200 and json.loads(reply)["outputs"][1]["data"] == [4, 3, 2, 1]
    client.unload_model("late", headers=ADMIN)
    # Parameter values must be strings; unknown parameters are refused as Triton does.
    st, _, reply = request(server, "POST", "/v2/repository/models/late/load", b'{"parameters": {"config": 1}}', ADMIN)
    assert st == 500
    st, _, reply = request(server, "POST", "/v2/repository/models/late/load", b'{"parameters": {"what": "x"}}', ADMIN)
    assert (st, error_of(reply)) == (500, "unexpected error on creating Triton parameter")
    encoded = base64.b64encode(b"x").decode()
    st, _, reply = request(server, "POST", "/v2/repository/models/late/load",
                           json.dumps({"parameters": {"file:1/model.py": encoded}}).encode(), ADMIN)
    assert st >= 400


def test_forwarded_headers_become_string_parameters(client):
    inp = httpclient.InferInput("IN", [1], "INT32")
    inp.set_data_from_numpy(np.array([1], dtype=np.int32))
    result = client.infer("echo", [inp], headers={"X-Fwd-One": "a", "x-fwd-two": "b", "x-other": "c"},
                          parameters={"own": 1})
    params = {k.lower(): v for k, v in json.loads(result.as_numpy("INFO")[0])["parameters"].items()}
    assert params == {"x-fwd-one": "a", "x-fwd-two": "b", "own": 1}


def test_request_body_limit(server):
    x = np.zeros(LIMIT // 4 + 16, dtype=np.float32)
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, x.size],
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    status, headers, body = request(server, "POST", "/v2/models/identity_fp32/infer", header + x.tobytes(),
                                    {"Inference-Header-Content-Length": str(len(header))})
    assert status == 413 and error_of(body) == f"request body exceeds the limit of {LIMIT} bytes"
    assert headers.get("connection", "").lower() == "close"
    # A small compressed body that inflates beyond the limit is refused too.
    bomb = gzip.compress(header + x.tobytes())
    assert len(bomb) < LIMIT
    status, _, body = request(server, "POST", "/v2/models/identity_fp32/infer", bomb,
                              {"Inference-Header-Content-Length": str(len(header)), "Content-Encoding": "gzip"})
    assert status == 413 and "exceeds the limit" in error_of(body)
    # Just under the limit is fine, and the server is still healthy.
    y = np.arange(1000, dtype=np.float32)
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, y.size],
                                     "parameters": {"binary_data_size": y.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    status, headers, body = request(server, "POST", "/v2/models/identity_fp32/infer", header + y.tobytes(),
                                    {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200
    n = int(headers["inference-header-content-length"])
    np.testing.assert_array_equal(np.frombuffer(body[n:], dtype=np.float32), y)
    # (Not /ready: earlier failed loads may make a strictly-ready server not ready, as Triton.)
    assert request(server, "GET", "/v2/health/live")[0] == 200
