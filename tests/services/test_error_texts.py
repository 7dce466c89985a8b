"""Error texts, HTTP statuses and gRPC codes as Triton 24.04 gives them, one row per case.

Each row names the request, how it is sent (tritonclient HTTP or gRPC, or a raw HTTP
request), the status or code Triton answers with and its exact words (read from
`core/src/infer_request.cc` r24.04, `server/src/http_server.cc`, `server/src/grpc/` and
`server/src/shared_memory_manager.cc` at v2.45.0, and TritonJson's accessor errors).
Everything runs against one real server."""

from __future__ import annotations

import json
import os
import textwrap
import urllib.error
import urllib.request
from typing import Any, Callable

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.models import IDENTITY_MODEL, add_sub_config, identity_config, ADD_SUB_MODEL, write_model

NO_ID = "[request id: <id_unknown>] "
NOTE = ("NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be prepended "
        "to each input shape. If you want to specify the full shape including the batch dim in your input dims "
        "config, try setting max_batch_size to zero. See the model configuration docs for more info on "
        "max_batch_size.")
SHM_KEY = f"/naiad_errtexts_{os.getpid()}"
SHM_SIZE = 64

GENERATE_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "TEXT", pb_utils.get_input_tensor_by_name(r, "PROMPT").as_numpy())]) for r in requests]
'''


def _config(name: str, inputs: str, outputs: str) -> str:
    return textwrap.dedent(f"""
        name: "{name}"
        backend: "python"
        max_batch_size: 0
        input [ {inputs} ]
        output [ {outputs} ]
        """)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from support.naiad_process import NaiadProcess

    tmp = tmp_path_factory.mktemp("error_texts")
    repo = tmp / "repo"
    fp1 = 'data_type: TYPE_FP32 dims: [ 1 ]'
    write_model(repo, "optional", _config(
        "optional",
        f'{{ name: "INPUT0" {fp1} }}, {{ name: "INPUT1" {fp1} }}, {{ name: "INPUT2" {fp1} }}, '
        f'{{ name: "INPUT3" {fp1} optional: true }}',
        f'{{ name: "OUTPUT0" {fp1} }}'), IDENTITY_MODEL)
    write_model(repo, "required3", _config(
        "required3", f'{{ name: "INPUT0" {fp1} }}, {{ name: "INPUT1" {fp1} }}, {{ name: "INPUT2" {fp1} }}',
        f'{{ name: "OUTPUT0" {fp1} }}'), IDENTITY_MODEL)
    write_model(repo, "add_sub", add_sub_config(), ADD_SUB_MODEL)
    write_model(repo, "ident", identity_config("ident", dims="[ 4 ]"), IDENTITY_MODEL)
    write_model(repo, "batched", identity_config("batched", dims="[ 3 ]", max_batch_size=4), IDENTITY_MODEL)
    write_model(repo, "bytes1", identity_config("bytes1", "TYPE_STRING", "[ 1 ]"), IDENTITY_MODEL)
    write_model(repo, "bytesvar", identity_config("bytesvar", "TYPE_STRING", "[ -1 ]"), IDENTITY_MODEL)
    write_model(repo, "fp16var", identity_config("fp16var", "TYPE_FP16", "[ -1, -1 ]"), IDENTITY_MODEL)
    write_model(repo, "gen", _config(
        "gen", '{ name: "PROMPT" data_type: TYPE_STRING dims: [ 1 ] }, '
               '{ name: "STREAM" data_type: TYPE_BOOL dims: [ 1 ] }',
        '{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }'), GENERATE_MODEL)
    import tritonclient.utils.shared_memory as shm

    handle = shm.create_shared_memory_region("errtexts", SHM_KEY, SHM_SIZE)
    proc = NaiadProcess(tmp / "naiad", ["--model-repository", str(repo)])
    proc.start()
    httpclient.InferenceServerClient(proc.http_address).register_system_shared_memory("r", SHM_KEY, SHM_SIZE)
    yield proc
    proc.stop()
    proc.kill_if_running()
    shm.destroy_shared_memory_region(handle)


# ------------------------------------------------------------------ ways to send --


def raw_http(method: str, path: str, body: Any = None, headers: dict | None = None
             ) -> Callable[[Any], tuple[Any, str]]:
    """A plain HTTP request; `body` is sent as is when bytes/str, else as JSON."""
    def send(server):
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        if isinstance(data, str):
            data = data.encode()
        req = urllib.request.Request(server.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            payload = e.read()
            assert e.headers["Content-Type"].startswith("application/json"), payload
            return e.code, json.loads(payload)["error"]
    return send


def _expect_raise(fn: Callable[[], Any]) -> tuple[Any, str]:
    try:
        fn()
    except InferenceServerException as e:
        return e.status(), e.message()
    return "OK", ""


def with_http(call: Callable[[httpclient.InferenceServerClient], Any]) -> Callable[[Any], tuple[Any, str]]:
    def send(server):
        status, message = _expect_raise(lambda: call(httpclient.InferenceServerClient(server.http_address)))
        return (int(status) if status != "OK" else status), message
    return send


def with_grpc(call: Callable[[grpcclient.InferenceServerClient], Any]) -> Callable[[Any], tuple[Any, str]]:
    return lambda server: _expect_raise(lambda: call(grpcclient.InferenceServerClient(server.grpc_address)))


def grpc_stub(method: str, request: Any) -> Callable[[Any], tuple[Any, str]]:
    """A hand-built gRPC request, for what tritonclient cannot send (a setting's wrong type)."""
    import grpc

    def send(server):
        try:
            client = grpcclient.InferenceServerClient(server.grpc_address)  # held: it closes its channel when freed
            getattr(client._client_stub, method)(request)
        except grpc.RpcError as e:
            return str(e.code()), e.details()
        return "OK", ""
    return send


def _log_request(**params: dict[str, Any]) -> Any:
    """A LogSettingsRequest whose settings carry the given oneof values, e.g. log_info={"string_param": "x"}."""
    req = grpcclient.service_pb2.LogSettingsRequest()
    for key, choice in params.items():
        setting = req.settings[key]  # present even with no value set
        for which, value in choice.items():
            setattr(setting, which, value)
    return req


def grpc_inputs(*specs: tuple[str, list[int], str]) -> list:
    out = []
    for name, shape, datatype in specs:
        t = grpcclient.InferInput(name, shape, datatype)
        t.set_data_from_numpy(np.ones(shape, np.float32 if datatype == "FP32" else np.int32))
        out.append(t)
    return out


def _j(name: str, datatype: str, shape: list[int], data: Any) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def _shm_input(offset: int, byte_size: int, region: str = "r") -> dict:
    return {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "parameters": {
        "shared_memory_region": region, "shared_memory_offset": offset, "shared_memory_byte_size": byte_size}}]}


F4 = [1.0, 2.0, 3.0, 4.0]
REG = "/v2/systemsharedmemory/region"
IA, INT, NF, AE = ("StatusCode.INVALID_ARGUMENT", "StatusCode.INTERNAL", "StatusCode.NOT_FOUND",
                   "StatusCode.ALREADY_EXISTS")
UNIMPL = "StatusCode.UNIMPLEMENTED"
TRACE, LOG = "/v2/trace/setting", "/v2/logging"
NOT_STRING = "attempt to access JSON non-string as string"

CASES = [
    # ---- input counts, optional inputs, list formatting (core ValidateRequestInputs)
    ("count-optional-grpc", with_grpc(lambda c: c.infer("optional", grpc_inputs(("INPUT0", [1], "FP32")))), IA,
     NO_ID + "expected number of inputs between 3 and 4 but got 1 inputs for model 'optional'. Got input(s) "
     "['INPUT0'], but missing required input(s) ['INPUT1','INPUT2']. Please provide all required input(s)."),
    ("count-optional-empty-http", raw_http("POST", "/v2/models/optional/infer", {"inputs": []}), 400,
     NO_ID + "expected number of inputs between 3 and 4 but got 0 inputs for model 'optional'. Got input(s) [], "
     "but missing required input(s) ['INPUT0','INPUT1','INPUT2']. Please provide all required input(s)."),
    ("count-required-http", raw_http("POST", "/v2/models/required3/infer",
                                     {"inputs": [_j("INPUT0", "FP32", [1], [1.0])]}), 400,
     NO_ID + "expected 3 inputs but got 1 inputs for model 'required3'. Got input(s) ['INPUT0'], but missing "
     "required input(s) ['INPUT1','INPUT2']. Please provide all required input(s)."),
    ("count-too-many-http", raw_http("POST", "/v2/models/add_sub/infer", {"inputs": [
        _j("INPUT0", "FP32", [4], F4), _j("INPUT1", "FP32", [4], F4), _j("EXTRA", "FP32", [1], [1.0])]}), 400,
     NO_ID + "expected 2 inputs but got 3 inputs for model 'add_sub'. Got input(s) ['INPUT0','INPUT1','EXTRA'], "
     "but missing required input(s) ]. Please provide all required input(s)."),
    ("unknown-input-grpc", with_grpc(lambda c: c.infer("add_sub", grpc_inputs(
        ("INPUT0", [4], "FP32"), ("EXTRA", [4], "FP32")))), IA,
     "unexpected inference input 'EXTRA' for model 'add_sub'"),
    ("unknown-output-http", raw_http("POST", "/v2/models/add_sub/infer", {
        "inputs": [_j("INPUT0", "FP32", [4], F4), _j("INPUT1", "FP32", [4], F4)], "outputs": [{"name": "NOPE"}]}),
     400, "unexpected inference output 'NOPE' for model 'add_sub'"),
    ("duplicate-input-http", raw_http("POST", "/v2/models/add_sub/infer", {
        "inputs": [_j("INPUT0", "FP32", [4], F4), _j("INPUT0", "FP32", [4], F4)]}), 400,
     NO_ID + "input 'INPUT0' already exists in request"),
    # ---- datatypes, shapes, byte sizes (core Normalize), with the request id when set
    ("datatype-with-id-grpc", with_grpc(lambda c: c.infer("add_sub", grpc_inputs(
        ("INPUT0", [4], "INT32"), ("INPUT1", [4], "FP32")), request_id="r1")), IA,
     "[request id: r1] inference input 'INPUT0' data-type is 'INT32', but model 'add_sub' expects 'FP32'"),
    ("shape-http", raw_http("POST", "/v2/models/add_sub/infer", {
        "inputs": [_j("INPUT0", "FP32", [3], F4[:3]), _j("INPUT1", "FP32", [4], F4)]}), 400,
     NO_ID + "unexpected shape for input 'INPUT0' for model 'add_sub'. Expected [4], got [3]. "),
    ("shape-batched-grpc", with_grpc(lambda c: c.infer("batched", grpc_inputs(("INPUT0", [2, 2], "FP32")))), IA,
     NO_ID + "unexpected shape for input 'INPUT0' for model 'batched'. Expected [-1,3], got [2,2]. " + NOTE),
    ("batch-too-large-http", raw_http("POST", "/v2/models/batched/infer",
                                      {"inputs": [_j("INPUT0", "FP32", [5, 3], [0.0] * 15)]}), 400,
     NO_ID + "inference request batch-size must be <= 4 for 'batched'"),
    ("byte-size-http", raw_http(
        "POST", "/v2/models/ident/infer",
        json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4],
                                "parameters": {"binary_data_size": 12}}]}).encode() + bytes(12),
        {"Inference-Header-Content-Length": str(len(json.dumps({"inputs": [{
            "name": "INPUT0", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 12}}]})))}),
     400, NO_ID + "input byte size mismatch for input 'INPUT0' for model 'ident'. Expected 16, got 12"),
    # ---- JSON data of the wrong type (TritonJson, INTERNAL: HTTP 500)
    ("json-fp32-bool", raw_http("POST", "/v2/models/ident/infer",
                                {"inputs": [_j("INPUT0", "FP32", [4], [1.0, True, 3.0, 4.0])]}), 500,
     "Unable to parse 'data': attempt to access JSON non-number as double"),
    ("json-bytes-number", raw_http("POST", "/v2/models/bytes1/infer",
                                   {"inputs": [_j("INPUT0", "BYTES", [1], [7])]}), 500,
     "Unable to parse JSON bytes array: attempt to access JSON non-string as string"),
    ("json-data-count", raw_http("POST", "/v2/models/ident/infer",
                                 {"inputs": [_j("INPUT0", "FP32", [4], [1.0, 2.0])]}), 500,
     "Unable to parse 'data': Shape does not match true shape of 'data' field"),
    ("json-shape-negative", raw_http("POST", "/v2/models/ident/infer",
                                     {"inputs": [_j("INPUT0", "FP32", [-4], F4)]}), 500,
     "Unable to parse 'shape': attempt to access JSON non-unsigned-integer as unsigned-integer"),
    ("json-no-name", raw_http("POST", "/v2/models/ident/infer",
                              {"inputs": [{"datatype": "FP32", "shape": [4], "data": F4}]}), 500,
     "Unable to parse 'name': attempt to access non-existing object member 'name'"),
    # ---- raw binary requests (Inference-Header-Content-Length: 0)
    ("raw-bytes-two-elements", raw_http("POST", "/v2/models/bytesvar/infer", b"427",
                                        {"Inference-Header-Content-Length": "0"}), 400,
     NO_ID + "For BYTE datatype raw input 'INPUT0', the model must have input shape [1]"),
    ("raw-two-variable-dims", raw_http("POST", "/v2/models/fp16var/infer", bytes(8),
                                       {"Inference-Header-Content-Length": "0"}), 400,
     NO_ID + "The shape of the raw input 'INPUT0' can not be deduced because there are more than one "
     "variable-sized dimension"),
    ("raw-two-inputs", raw_http("POST", "/v2/models/add_sub/infer", bytes(16),
                                {"Inference-Header-Content-Length": "0"}), 400,
     NO_ID + "Raw request must only have 1 input (found 1) to be deduced but got 2 inputs in 'add_sub' model "
     "configuration"),
    # ---- system shared memory: register, status, unregister (shared_memory_manager.cc)
    ("shm-register-empty-grpc", with_grpc(lambda c: c.register_system_shared_memory("", "", 0)), INT,
     "Unable to open shared memory region: ''"),
    ("shm-register-no-such-key-http", with_http(lambda c: c.register_system_shared_memory("x", "/nope_nope", 8)),
     500, "Unable to open shared memory region: '/nope_nope'"),
    ("shm-register-out-of-bounds-grpc", with_grpc(
        lambda c: c.register_system_shared_memory("big", SHM_KEY, SHM_SIZE + 1)), IA,
     "failed to register shared memory region 'big': invalid args"),
    ("shm-register-zero-size-http", with_http(lambda c: c.register_system_shared_memory("z", SHM_KEY, 0)), 400,
     "failed to register shared memory region 'z': unable to process address spaceInvalid argument"),
    ("shm-register-twice-grpc", with_grpc(lambda c: c.register_system_shared_memory("r", SHM_KEY, 8)), AE,
     "shared memory region 'r' already in manager"),
    ("shm-register-twice-http", with_http(lambda c: c.register_system_shared_memory("r", SHM_KEY, 8)), 400,
     "shared memory region 'r' already in manager"),
    ("shm-register-no-key-http", raw_http("POST", f"{REG}/y/register", {"byte_size": 8}), 400,
     "Shared memory register request has no 'key' field"),
    ("shm-register-key-type-http", raw_http("POST", f"{REG}/y/register", {"key": 1, "byte_size": 8}), 500,
     "attempt to access JSON non-string as string"),
    ("shm-register-size-type-http", raw_http("POST", f"{REG}/y/register", {"key": SHM_KEY, "byte_size": -8}),
     500, "attempt to access JSON non-unsigned-integer as unsigned-integer"),
    ("shm-status-unknown-grpc", with_grpc(lambda c: c.get_system_shared_memory_status("zz")), NF,
     "Unable to find system shared memory region: 'zz'"),
    ("shm-cuda-status-unknown-http", raw_http("GET", "/v2/cudasharedmemory/region/zz/status"), 404,
     "Unable to find system shared memory region: 'zz'"),
    ("shm-cuda-status-of-system-grpc", with_grpc(lambda c: c.get_cuda_shared_memory_status("r")), NF,
     "The region named 'r' is registered as system shared memory, not CUDA shared memory"),
    ("shm-unregister-unknown-http", with_http(lambda c: c.unregister_system_shared_memory("zz")), "OK", ""),
    # ---- shared memory in inference: offsets and sizes out of bounds (GetMemoryInfo)
    ("shm-offset-http", raw_http("POST", "/v2/models/ident/infer", _shm_input(SHM_SIZE, 16)), 400,
     "Invalid offset for shared memory region: 'r'"),
    ("shm-offset-size-http", raw_http("POST", "/v2/models/ident/infer", _shm_input(56, 16)), 400,
     "Invalid offset + byte size for shared memory region: 'r'"),
    ("shm-unknown-region-http", raw_http("POST", "/v2/models/ident/infer", _shm_input(0, 16, "nope")), 404,
     "Unable to find shared memory region: 'nope'"),
    # ---- generate and generate_stream (duplicate keys, wrong JSON types)
    ("generate-duplicate", raw_http("POST", "/v2/models/gen/generate",
                                    '{"PROMPT": "a", "STREAM": false, "PROMPT": "b"}'), 400,
     NO_ID + "input 'PROMPT' already exists in request"),
    ("generate-stream-duplicate", raw_http("POST", "/v2/models/gen/generate_stream",
                                           '{"PROMPT": "a", "STREAM": false, "STREAM": true, "PROMPT": "b"}'), 400,
     NO_ID + "input 'STREAM' already exists in request"),
    ("generate-bool-type", raw_http("POST", "/v2/models/gen/generate", {"PROMPT": "a", "STREAM": "false"}), 500,
     "Unable to parse 'data': attempt to access JSON non-boolean as boolean"),
    ("generate-stream-string-type", raw_http("POST", "/v2/models/gen/generate_stream",
                                             {"PROMPT": 123, "STREAM": False}), 500,
     "Unable to parse JSON bytes array: attempt to access JSON non-string as string"),
    ("generate-parameters-type", raw_http("POST", "/v2/models/gen/generate",
                                          {"PROMPT": "a", "STREAM": False, "parameters": 3}), 500,
     "Expected JSON object for keyword: 'parameters': attempt to access JSON non-object as object"),
    # ---- trace settings (http_server.cc HandleTrace, grpc_server.cc TraceSetting; keys checked
    # in Triton's order: trace_file, trace_level, trace_rate, trace_count, log_frequency)
    ("trace-file-http", raw_http("POST", TRACE, {"trace_file": None}), 501,
     "trace file location can not be updated through network protocol"),
    ("trace-file-grpc", with_grpc(lambda c: c.update_trace_settings(settings={"trace_file": "/tmp/t"})), UNIMPL,
     "trace file location can not be updated through network protocol"),
    ("trace-unknown-model-http", raw_http("POST", "/v2/models/nope/trace/setting", b"not json"), 400,
     "Request for unknown model : nope"),
    ("trace-unknown-model-grpc", with_grpc(lambda c: c.get_trace_settings(model_name="nope")), IA,
     "Request for unknown model : nope"),
    ("trace-level-not-array-http", raw_http("POST", TRACE, {"trace_level": "TIMESTAMPS"}), 500,
     "attempt to access JSON non-array as array"),
    ("trace-level-not-string-http", raw_http("POST", TRACE, {"trace_level": ["TENSORS", 4]}), 500, NOT_STRING),
    ("trace-level-off-and-more-http", raw_http("POST", TRACE, {"trace_level": ["TIMESTAMPS", "OFF"]}), 400,
     "Expect only one trace level 'OFF' is specified"),
    ("trace-level-before-rate-grpc", with_grpc(lambda c: c.update_trace_settings(
        settings={"trace_rate": ["1", "2"], "trace_level": ["OFF", "OFF"]})), IA,
     "Expect only one trace level 'OFF' is specified"),
    ("trace-level-unknown-words-ignored-http", with_http(lambda c: c.update_trace_settings(
        settings={"trace_level": ["timestamps", "BOGUS"]})), "OK", ""),
    ("trace-level-unknown-words-ignored-grpc", with_grpc(lambda c: c.update_trace_settings(
        settings={"trace_level": ["tensors"]})), "OK", ""),
    ("trace-rate-number-http", raw_http("POST", TRACE, {"trace_rate": 5}), 500, NOT_STRING),
    ("trace-rate-word-http", raw_http("POST", TRACE, {"trace_rate": "fast"}), 400,
     "Unable to parse 'trace_rate', got: fast"),
    ("trace-rate-range-grpc", with_grpc(lambda c: c.update_trace_settings(settings={"trace_rate": "5000000000"})),
     IA, "Unable to parse 'trace_rate', value is out of range [ 0, 4294967295 ], got: 5000000000"),
    ("trace-rate-two-values-grpc", with_grpc(lambda c: c.update_trace_settings(
        settings={"trace_rate": ["1", "2"]})), IA, "expect only 1 value for 'trace_rate'"),
    ("trace-count-floor-http", raw_http("POST", TRACE, {"trace_count": "-2"}), 400,
     "Unable to parse 'trace_count'. Expecting value >= -1, got:-2"),
    ("trace-count-floor-grpc", with_grpc(lambda c: c.update_trace_settings(settings={"trace_count": "-2"})), IA,
     "Unable to parse 'trace_count'. Expecting value >= -1, got: -2"),
    ("trace-count-range-http", raw_http("POST", TRACE, {"trace_count": "3000000000"}), 400,
     "Unable to parse 'trace_count', value is out of range [ -1, 2147483647 ], got: 3000000000"),
    ("trace-count-word-grpc", with_grpc(lambda c: c.update_trace_settings(settings={"trace_count": "many"})), IA,
     "Unable to parse 'trace_count', got: many"),
    ("trace-frequency-word-http", raw_http("POST", TRACE, {"log_frequency": "often"}), 400,
     "Unable to parse 'log_frequency', got: often"),
    ("trace-frequency-number-http", raw_http("POST", TRACE, {"log_frequency": 1}), 500, NOT_STRING),
    ("trace-frequency-range-grpc", with_grpc(lambda c: c.update_trace_settings(
        settings={"log_frequency": "-9999999999"})), IA,
     "Unable to parse 'log_frequency', value is out of range [ 0, 4294967295 ], got: -9999999999"),
    ("trace-invalid-setting-http", raw_http("POST", TRACE, {"trace_level": ["TIMESTAMPS"]}), 400,
     "Attempting to set invalid trace setting :trace file name is not given"),
    # ---- log settings (http_server.cc HandleLogging: TritonJson's errors, "--log_format";
    # grpc_server.cc LogSettings: "expect <type> for", log_file refused whatever its value)
    ("log-file-http", raw_http("POST", LOG, {"log_file": "x.log"}), 501,
     "log file location can not be updated through network protocol"),
    ("log-file-null-http", with_http(lambda c: c.update_log_settings({"log_file": None})), "OK", ""),
    ("log-file-grpc", grpc_stub("LogSettings", _log_request(log_file={})), UNIMPL,
     "log file location can not be updated through network protocol"),
    ("log-info-type-http", raw_http("POST", LOG, {"log_info": "true"}), 500,
     "attempt to access JSON non-boolean as boolean"),
    ("log-error-type-grpc", grpc_stub("LogSettings", _log_request(log_error={"uint32_param": 1})), IA,
     "expect boolean for 'log_error'"),
    ("log-verbose-type-http", raw_http("POST", LOG, {"log_verbose_level": -1}), 500,
     "attempt to access JSON non-unsigned-integer as unsigned-integer"),
    ("log-verbose-type-grpc", grpc_stub("LogSettings", _log_request(log_verbose_level={"bool_param": True})), IA,
     "expect int32 for 'log_verbose_level'"),
    ("log-format-type-http", raw_http("POST", LOG, {"log_format": 1}), 500, NOT_STRING),
    ("log-format-type-grpc", grpc_stub("LogSettings", _log_request(log_format={"bool_param": True})), IA,
     "expect string for 'log_format'"),
    ("log-format-word-http", raw_http("POST", LOG, {"log_format": "json"}), 503,
     "invalid argument for --log_format, got: json"),
    ("log-format-word-grpc", with_grpc(lambda c: c.update_log_settings({"log_format": "json"})), IA,
     "invalid argument for log_format, got: json"),
    ("log-unknown-key-http", with_http(lambda c: c.update_log_settings({"log_colour": 1})), "OK", ""),
    ("log-unknown-key-grpc", grpc_stub("LogSettings", _log_request(log_colour={"bool_param": True})), "OK", ""),
]


@pytest.mark.parametrize("send, status, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_text(server, send, status, message):
    got_status, got_message = send(server)
    assert (got_status, got_message) == (status, message)


def test_raw_binary_bytes_input_is_one_element(server):
    """A raw BYTES body to a model with input shape [1] is that one element (Triton
    prepends the 4-byte length); the reply carries it back in BYTES framing."""
    status, body = raw_http("POST", "/v2/models/bytes1/infer", b"427", {"Inference-Header-Content-Length": "0"})(server)
    assert status == 200
    header = json.loads(body[:body.index(b"}]}") + 3])
    assert header["outputs"][0]["shape"] == [1]
    assert body.endswith((3).to_bytes(4, "little") + b"427")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_log_settings_before_a_refused_one_are_applied(server, protocol):
    """Triton applies log settings one by one in its own order, so those before a refused
    one stay applied."""
    if protocol == "http":
        send = raw_http("POST", LOG, {"log_format": "json", "log_warning": False})
        read = lambda: httpclient.InferenceServerClient(server.http_address).get_log_settings()["log_warning"]
    else:
        send = grpc_stub("LogSettings", _log_request(log_format={"string_param": "json"},
                                                     log_warning={"bool_param": False}))
        read = lambda: grpcclient.InferenceServerClient(server.grpc_address).get_log_settings(
            as_json=True)["settings"]["log_warning"]["bool_param"]
    try:
        assert send(server)[0] != 200
        assert read() is False
    finally:
        httpclient.InferenceServerClient(server.http_address).update_log_settings({"log_warning": True})
