"""Header-forward patterns as Triton's: RE2 expressions, case-insensitive unless the pattern
says `(?-i)`, matched anywhere in the header name; matching headers reach the model as
string request parameters over HTTP and gRPC, and through an ensemble to its steps."""

from __future__ import annotations

import http.client
import json
import textwrap

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from naiad.kernel import header_forward
from naiad.kernel.schema import ConfigError
from support.models import write_model

ECHO_PARAMETERS = '''
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            params = np.array([r.parameters().encode()], dtype=np.object_)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("PARAMS", params)]))
        return out
'''

ECHO_CONFIG = textwrap.dedent("""
    name: "echo"
    backend: "python"
    max_batch_size: 0
    input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]
    output [ { name: "PARAMS" data_type: TYPE_STRING dims: [ 1 ] } ]
    """)

ENSEMBLE_CONFIG = textwrap.dedent("""
    name: "echo_ensemble"
    platform: "ensemble"
    max_batch_size: 0
    input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ]
    output [ { name: "OUT" data_type: TYPE_STRING dims: [ 1 ] } ]
    ensemble_scheduling { step [ {
        model_name: "echo" model_version: -1
        input_map { key: "INPUT0" value: "IN" }
        output_map { key: "PARAMS" value: "OUT" } } ] }
    """)

HEADERS = {"my_header_1": "one", "MY_HEADER_2": "two", "other": "three"}


def test_pattern_is_case_insensitive_unless_it_says_otherwise():
    match = header_forward.compile_pattern("MY_HEADER.*")
    assert match("my_header_1") and match("x-my_header") and not match("other")
    strict = header_forward.compile_pattern("(?-i)MY_HEADER.*")
    assert strict("MY_HEADER_2") and not strict("my_header_1")
    assert header_forward.compile_pattern("") is None


def test_a_pattern_re2_cannot_parse_is_refused_at_start():
    with pytest.raises(ConfigError, match=r"not a valid RE2 expression: missing \): \($"):
        header_forward.compile_pattern("(")


@pytest.fixture
def server(naiad, tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "echo", ECHO_CONFIG, ECHO_PARAMETERS)
    (repo / "echo_ensemble" / "1").mkdir(parents=True)
    (repo / "echo_ensemble" / "config.pbtxt").write_text(ENSEMBLE_CONFIG)

    def start(http_pattern: str, grpc_pattern: str):
        return naiad(f"--model-repository={repo}", f"--http-header-forward-pattern={http_pattern}",
                     f"--grpc-header-forward-pattern={grpc_pattern}")
    return start


def _http_params(proc, model: str, inp: str, out: str) -> dict:
    client = httpclient.InferenceServerClient(proc.http_address)
    x = httpclient.InferInput(inp, [1], "FP32")
    x.set_data_from_numpy(np.array([1], dtype=np.float32))
    result = client.infer(model, [x], headers=dict(HEADERS), parameters={"key": "value"})  # it adds to the dict
    client.close()
    return json.loads(result.as_numpy(out)[0])


def _grpc_params(proc, model: str, inp: str, out: str, stream: bool = False) -> dict:
    client = grpcclient.InferenceServerClient(proc.grpc_address)
    x = grpcclient.InferInput(inp, [1], "FP32")
    x.set_data_from_numpy(np.array([1], dtype=np.float32))
    # gRPC metadata keys travel in lower case, whatever the client wrote.
    headers = {k.lower(): v for k, v in HEADERS.items()}
    if stream:
        results: list = []
        client.start_stream(callback=lambda result, error: results.append(error or result), headers=headers)
        client.async_stream_infer(model, [x], parameters={"key": "value"})
        client.stop_stream()
        assert len(results) == 1 and not isinstance(results[0], Exception), results
        result = results[0]
    else:
        result = client.infer(model, [x], headers=headers, parameters={"key": "value"})
    client.close()
    return json.loads(result.as_numpy(out)[0])


def _raw_http_params(proc) -> dict:
    """tritonclient's HTTP client writes header names in lower case; this keeps their case."""
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1]}],
                       "parameters": {"key": "value"}})
    conn = http.client.HTTPConnection(proc.http_address, timeout=10)
    conn.request("POST", "/v2/models/echo/infer", body, {**HEADERS, "Content-Type": "application/json"})
    reply = json.loads(conn.getresponse().read())
    conn.close()
    assert "outputs" in reply, reply
    return json.loads(reply["outputs"][0]["data"][0])


def test_forwarded_headers_reach_the_model_over_http_and_grpc_and_through_an_ensemble(server):
    proc = server("MY_HEADER.*", "my_header.*")
    lower = {"key": "value", "my_header_1": "one", "my_header_2": "two"}
    assert _http_params(proc, "echo", "INPUT0", "PARAMS") == lower
    assert _http_params(proc, "echo_ensemble", "IN", "OUT") == lower
    assert _raw_http_params(proc) == {"key": "value", "my_header_1": "one", "MY_HEADER_2": "two"}
    assert _grpc_params(proc, "echo", "INPUT0", "PARAMS") == lower
    assert _grpc_params(proc, "echo_ensemble", "IN", "OUT") == lower
    assert _grpc_params(proc, "echo", "INPUT0", "PARAMS", stream=True) == lower


def test_case_sensitive_pattern_forwards_only_exact_case(server):
    proc = server("(?-i)MY_HEADER.*", "(?-i)MY_HEADER.*")
    assert _raw_http_params(proc) == {"key": "value", "MY_HEADER_2": "two"}
    # gRPC metadata keys are lower case, so an upper-case case-sensitive pattern matches none.
    assert _grpc_params(proc, "echo", "INPUT0", "PARAMS") == {"key": "value"}


def test_binary_grpc_metadata_is_forwarded_up_to_its_first_nul(server):
    proc = server("MY_HEADER.*", "my_header.*")
    client = grpcclient.InferenceServerClient(proc.grpc_address)
    x = grpcclient.InferInput("INPUT0", [1], "FP32")
    x.set_data_from_numpy(np.array([1], dtype=np.float32))
    result = client.infer("echo", [x], headers={"my_header-bin": b"raw\x00tail", "other-bin": b"x"})
    client.close()
    assert json.loads(result.as_numpy("PARAMS")[0]) == {"my_header-bin": "raw"}
