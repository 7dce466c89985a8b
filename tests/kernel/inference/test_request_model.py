"""The one request model: the same request sent over HTTP (JSON) and gRPC (protobuf)
decodes to the same values, each refused with its own protocol's words.

Both sides run the real decoders (`codec.decode_infer`, `convert.infer_request`) on real
wire bodies; the request model between them is what is under test."""

from __future__ import annotations

import json
from typing import Any

import pytest

from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.types import InferenceRequest
from naiad.protos import grpc_service_pb2 as pb
from naiad.services.grpc import convert
from naiad.services.http import codec

DATA = b"\x00" * 16


def _set(param: Any, value: Any) -> None:
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    else:
        param.string_param = value


def over_http(params: dict | None = None, input_params: dict | None = None, outputs: list | None = None,
              forward: list[tuple[str, str]] | None = None) -> InferenceRequest:
    inp: dict[str, Any] = {"name": "IN", "datatype": "FP32", "shape": [4]}
    if input_params is None:
        inp["parameters"] = {"binary_data_size": len(DATA)}
    else:
        inp["parameters"] = input_params
    doc: dict[str, Any] = {"id": "r1", "inputs": [inp]}
    if params is not None:
        doc["parameters"] = params
    if outputs is not None:
        doc["outputs"] = [{"name": name, "parameters": p} for name, p in outputs]
    header = json.dumps(doc).encode()
    body = header + (DATA if input_params is None else b"")
    request, _ = codec.decode_infer(body, str(len(header)), "m", "", forward or ())
    return request


def over_grpc(params: dict | None = None, input_params: dict | None = None, outputs: list | None = None,
              forward: list[tuple[str, str]] | None = None) -> InferenceRequest:
    msg = pb.ModelInferRequest(model_name="m", id="r1")
    tensor = msg.inputs.add(name="IN", datatype="FP32", shape=[4])
    if input_params is None:
        msg.raw_input_contents.append(DATA)
    else:
        for key, value in input_params.items():
            _set(tensor.parameters[key], value)
    for key, value in (params or {}).items():
        _set(msg.parameters[key], value)
    for name, p in outputs or ():
        out = msg.outputs.add(name=name)
        for key, value in p.items():
            _set(out.parameters[key], value)
    request, _ = convert.infer_request(msg, forward or ())
    return request


BOTH = pytest.mark.parametrize("decode", [over_http, over_grpc], ids=["http", "grpc"])


def values(request: InferenceRequest) -> tuple:
    return (request.sequence_id, request.sequence_start, request.sequence_end, request.priority,
            request.timeout_us, request.parameters)


def test_request_parameters_decode_alike_over_both_protocols():
    params = {"sequence_id": 42, "sequence_start": True, "sequence_end": False, "priority": 3, "timeout": 500,
              "text": "x", "count": -4, "flag": True, "ratio": 1.5}
    http, grpc = over_http(params), over_grpc(params)
    assert values(http) == values(grpc) == (
        42, True, False, 3, 500, {"text": "x", "count": -4, "flag": True, "ratio": 1.5})
    assert over_http({"sequence_id": "abc"}).sequence_id == over_grpc({"sequence_id": "abc"}).sequence_id == "abc"


@BOTH
def test_no_parameters_gives_a_fresh_parameter_dict(decode):
    first, second = decode(), decode()
    assert values(first) == (0, False, False, 0, 0, {})
    first.parameters["set_by_a_backend"] = 1
    assert second.parameters == {}


@BOTH
def test_forwarded_headers_become_string_parameters_over_the_clients_own(decode):
    request = decode({"x-tenant": "client", "other": 1}, forward=[("x-tenant", "header")])
    assert request.parameters == {"x-tenant": "header", "other": 1}
    assert decode(forward=[("x-a", "1")]).parameters == {"x-a": "1"}


def test_protocol_options_are_not_model_parameters():
    http_request, plan = codec.decode_infer(
        *_http_body({"binary_data_output": True, "p": 1}), "m")
    assert http_request.parameters == {"p": 1} and plan.default_binary is True
    msg = pb.ModelInferRequest(model_name="m")
    msg.parameters["triton_enable_empty_final_response"].bool_param = True
    msg.parameters["p"].int64_param = 1
    grpc_request, empty_final = convert.infer_request(msg)
    assert grpc_request.parameters == {"p": 1} and empty_final is True


def _http_body(params: dict) -> tuple[bytes, str]:
    header = json.dumps({"parameters": params, "inputs": []}).encode()
    return header, str(len(header))


def test_reserved_keys_are_refused_in_each_protocols_words():
    with pytest.raises(InferenceError) as http:
        over_http({"triton_anything": 1})
    with pytest.raises(InferenceError) as grpc:
        over_grpc({"triton_anything": 1})
    assert http.value.code == grpc.value.code == ErrorCode.INVALID_ARG
    assert http.value.message.startswith("parameter keys starting with 'triton_' are reserved for Triton usage")
    assert grpc.value.message.endswith("are allowed: triton_enable_empty_final_response")


def test_shared_memory_and_classification_decode_alike_over_both_protocols():
    shm = {"shared_memory_region": "r", "shared_memory_offset": 8, "shared_memory_byte_size": 16}
    outputs = [("A", {"classification": 3}), ("B", dict(shm)), ("C", {})]
    http = over_http(input_params=dict(shm), outputs=outputs)
    grpc = over_grpc(input_params=dict(shm), outputs=outputs)
    for request in (http, grpc):
        ref = request.inputs[0].shm
        assert (ref.region, ref.offset, ref.byte_size) == ("r", 8, 16)
        assert not request.inputs[0].has_data
        a, b, c = request.outputs
        assert (a.name, a.classification, a.shm) == ("A", 3, None)
        assert (b.name, b.classification, b.shm.region, b.shm.offset, b.shm.byte_size) == ("B", 0, "r", 8, 16)
        assert (c.name, c.classification, c.shm) == ("C", 0, None)
    # How an output is returned is the protocol's own: HTTP's binary flag, gRPC has one way.
    assert [o.binary for o in http.outputs] == [False, False, False]
    assert [o.binary for o in grpc.outputs] == [None, None, None]


def test_a_classified_output_cannot_go_to_shared_memory_in_either_protocol():
    both = [("A", {"classification": 2, "shared_memory_region": "r", "shared_memory_byte_size": 4})]
    with pytest.raises(InferenceError) as http:
        over_http(outputs=both)
    with pytest.raises(InferenceError) as grpc:
        over_grpc(outputs=both)
    assert http.value.code == grpc.value.code == ErrorCode.INVALID_ARG
    assert http.value.message == "Output can't set both 'shared_memory_region' and 'classification'"
    assert grpc.value.message == "output can't set both 'shared_memory_region' and 'classification'"


def test_offset_without_a_region_is_ignored_by_http_and_refused_by_grpc():
    outputs = [("A", {"shared_memory_offset": 4})]
    assert over_http(outputs=outputs).outputs[0].shm is None
    with pytest.raises(InferenceError) as grpc:
        over_grpc(outputs=outputs)
    assert grpc.value.message == ("'shared_memory_offset' can not be specified without 'shared_memory_region' "
                                  "parameter for tensor 'A'")
