"""Requests are checked against the model config before reaching a backend; errors use
Triton's wording and status; the server keeps serving."""

from __future__ import annotations

import json
import os
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.models import ADD_SUB_MODEL, IDENTITY_MODEL, add_sub_config, identity_config, write_model


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from support.naiad_process import NaiadProcess

    tmp = tmp_path_factory.mktemp("validation")
    repo = tmp / "repo"
    write_model(repo, "add_sub", add_sub_config(), ADD_SUB_MODEL)
    write_model(repo, "batched", identity_config("batched", dims="[ 3 ]", max_batch_size=4), IDENTITY_MODEL)
    proc = NaiadProcess(tmp / "naiad", ["--model-repository", str(repo)])
    proc.start()
    yield proc
    proc.stop()
    proc.kill_if_running()


def _post(proc, model, body):
    req = urllib.request.Request(f"{proc.url}/v2/models/{model}/infer", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _t(name, datatype, shape, data):
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


@pytest.mark.parametrize("model, inputs, outputs, message", [
    ("add_sub", [_t("INPUT0", "FP32", [4], [1, 2, 3, 4])], None,
     "expected 2 inputs but got 1 inputs for model 'add_sub'"),
    ("add_sub", [_t("INPUT0", "INT32", [4], [1, 2, 3, 4]), _t("INPUT1", "FP32", [4], [1, 2, 3, 4])], None,
     "inference input 'INPUT0' data-type is 'INT32', but model 'add_sub' expects 'FP32'"),
    ("add_sub", [_t("INPUT0", "FP32", [3], [1, 2, 3]), _t("INPUT1", "FP32", [4], [1, 2, 3, 4])], None,
     "unexpected shape for input 'INPUT0' for model 'add_sub'. Expected [4], got [3]"),
    ("add_sub", [_t("INPUT0", "FP32", [4], [1, 2, 3, 4]), _t("INPUT1", "FP32", [4], [1, 2, 3, 4]),
                 _t("EXTRA", "FP32", [1], [1])], None,
     # Triton counts before it looks at names, and drops the empty list's "[" (core r24.04).
     "expected 2 inputs but got 3 inputs for model 'add_sub'. Got input(s) ['INPUT0','INPUT1','EXTRA'], "
     "but missing required input(s) ]. Please provide all required input(s)."),
    ("add_sub", [_t("INPUT0", "FP32", [4], [1, 2, 3, 4]), _t("EXTRA", "FP32", [1], [1])], None,
     "unexpected inference input 'EXTRA' for model 'add_sub'"),
    ("add_sub", [_t("INPUT0", "FP32", [4], [1, 2, 3, 4]), _t("INPUT1", "FP32", [4], [1, 2, 3, 4])],
     [{"name": "NOPE"}], "unexpected inference output 'NOPE' for model 'add_sub'"),
    ("batched", [_t("INPUT0", "FP32", [5, 3], [0] * 15)], None,
     "inference request batch-size must be <= 4 for 'batched'"),
    ("batched", [_t("INPUT0", "FP32", [2, 2], [0] * 4)], None,
     "unexpected shape for input 'INPUT0' for model 'batched'. Expected [-1,3], got [2,2]"),
])
def test_invalid_requests_get_triton_errors(server, model, inputs, outputs, message):
    body = {"inputs": inputs}
    if outputs:
        body["outputs"] = outputs
    status, payload = _post(server, model, body)
    assert status == 400, payload
    assert message in payload["error"]


def test_binary_size_mismatch_and_unknown_model(server):
    client = httpclient.InferenceServerClient(server.http_address)
    with pytest.raises(InferenceServerException) as info:
        client.infer("missing_model", [])
    assert "Request for unknown model: 'missing_model' is not found" in str(info.value)
    assert info.value.status() in ("404", 404, None) or "404" in str(info.value.status())


def test_server_keeps_serving_after_errors(server):
    for _ in range(3):
        _post(server, "add_sub", {"inputs": [_t("INPUT0", "FP32", [4], [1, 2, 3, 4])]})
    client = httpclient.InferenceServerClient(server.http_address)
    a = np.ones(4, np.float32)
    inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(a)
    assert client.infer("add_sub", inputs).as_numpy("OUTPUT0").tolist() == [2, 2, 2, 2]
    assert client.is_server_ready()


def _our_shm_regions():
    return {n for n in os.listdir("/dev/shm") if n.startswith("naiad")}


def test_two_servers_same_repository_and_dev_shm_clean(naiad, tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "add_sub", add_sub_config(), ADD_SUB_MODEL)
    before = _our_shm_regions()
    a = naiad("--model-repository", str(repo))
    b = naiad("--model-repository", str(repo))
    x = np.arange(4, dtype=np.float32)
    for proc in (a, b):
        client = httpclient.InferenceServerClient(proc.http_address)
        inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
        inputs[0].set_data_from_numpy(x)
        inputs[1].set_data_from_numpy(x)
        assert client.infer("add_sub", inputs).as_numpy("OUTPUT0").tolist() == (2 * x).tolist()
    assert a.stop() == 0 and b.stop() == 0
    assert _our_shm_regions() - before == set()
