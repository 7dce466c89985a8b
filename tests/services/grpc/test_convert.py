"""The gRPC converters against tritonclient's own messages (crossing by bytes: tritonclient's
classes live in protobuf's default pool, naiad's in a private one)."""

from __future__ import annotations

import numpy as np
import pytest

from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.messages import (
    CudaShmRegion,
    ModelIndexEntry,
    ModelMetadata,
    ServerMetadata,
    SystemShmRegion,
    TensorMetadata,
)
from naiad.kernel.inference.stats import BatchStats, Duration, MemoryUsage, ModelStatistics, ResponseStats
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, SharedMemoryRef, Tensor
from naiad.kernel.schema import ConfigError
from naiad.protos import grpc_service_pb2 as pb
from naiad.services.grpc import convert
from naiad.services.grpc.config import GrpcConfig

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import _utils as client_utils  # noqa: E402  (how the client builds requests)
from tritonclient.grpc import service_pb2 as tc  # noqa: E402

NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
           "FP16", "FP32", "FP64"]


def _np(datatype: str) -> np.dtype:
    from tritonclient.utils import triton_to_np_dtype
    return np.dtype(triton_to_np_dtype(datatype))


def client_request(inputs, outputs=None, **kwargs) -> pb.ModelInferRequest:
    """What tritonclient sends for `client.infer(...)`, parsed by naiad's protos."""
    args = dict(model_name="m", inputs=inputs, model_version="", request_id="", outputs=outputs,
                sequence_id=0, sequence_start=False, sequence_end=False, priority=0, timeout=None,
                parameters=None)
    args.update(kwargs)
    msg = client_utils._get_inference_request(**args)
    return pb.ModelInferRequest.FromString(msg.SerializeToString())


def to_naiad(msg) -> pb.ModelInferRequest:
    return pb.ModelInferRequest.FromString(msg.SerializeToString())


def client_result(reply: convert.InferReply) -> grpcclient.InferResult:
    return grpcclient.InferResult(tc.ModelInferResponse.FromString(convert.encode_infer_reply(reply)))


# ------------------------------------------------------------------ requests --

@pytest.mark.parametrize("datatype", NUMERIC + ["BYTES"])
def test_raw_inputs_round_trip(datatype):
    if datatype == "BYTES":
        data = np.array([[b"a", b""], [b"\x00\xff", "naïve".encode()]], dtype=object)
    elif datatype == "BOOL":
        data = np.array([[True, False], [False, True]])
    else:
        data = (np.arange(4) * 3).astype(_np(datatype)).reshape(2, 2)
    inp = grpcclient.InferInput("X", [2, 2], datatype)
    inp.set_data_from_numpy(data)
    msg = client_request([inp])
    request, empty_final = convert.infer_request(msg)
    assert not empty_final
    assert request.protocol == "grpc" and request.model_name == "m" and request.outputs is None
    (t,) = request.inputs
    assert (t.name, t.datatype, t.shape) == ("X", datatype, (2, 2))
    assert t.shm is None
    np.testing.assert_array_equal(t.array, data)


def test_raw_input_is_the_message_bytes_not_a_copy():
    inp = grpcclient.InferInput("X", [1024], "FP32")
    inp.set_data_from_numpy(np.ones(1024, dtype=np.float32))
    msg = client_request([inp])
    request, _ = convert.infer_request(msg)
    raw = request.inputs[0]._raw
    assert isinstance(raw, bytes) and len(raw) == 4096
    assert not request.inputs[0].array.flags.owndata  # a view over those bytes


@pytest.mark.parametrize("datatype,field,values", [
    ("BOOL", "bool_contents", [True, False, True]),
    ("INT8", "int_contents", [-1, 2, 127]),
    ("INT16", "int_contents", [-300, 2, 3]),
    ("INT32", "int_contents", [-70000, 2, 3]),
    ("INT64", "int64_contents", [-(2 ** 40), 2, 3]),
    ("UINT8", "uint_contents", [255, 2, 3]),
    ("UINT16", "uint_contents", [65535, 2, 3]),
    ("UINT32", "uint_contents", [2 ** 32 - 1, 2, 3]),
    ("UINT64", "uint64_contents", [2 ** 63, 2, 3]),
    ("FP32", "fp32_contents", [0.5, -1.25, 3.0]),
    ("FP64", "fp64_contents", [0.1, -1e300, 3.0]),
    ("BYTES", "bytes_contents", [b"x", b"", b"yz"]),
])
def test_typed_contents(datatype, field, values):
    msg = tc.ModelInferRequest(model_name="m")
    t = msg.inputs.add(name="X", datatype=datatype, shape=[3])
    getattr(t.contents, field).extend(values)
    request, _ = convert.infer_request(to_naiad(msg))
    got = request.inputs[0].array
    if datatype == "BYTES":
        assert list(got) == values
    else:
        np.testing.assert_array_equal(got, np.array(values, dtype=_np(datatype)))


def test_contents_errors():
    msg = tc.ModelInferRequest(model_name="m")
    t = msg.inputs.add(name="X", datatype="FP32", shape=[1])
    t.contents.int_contents.append(1)
    with pytest.raises(InferenceError) as e:
        convert.infer_request(to_naiad(msg))
    assert e.value.code is ErrorCode.INVALID_ARG
    assert e.value.message == ("unexpected explicit tensor data for input tensor 'X' for model 'm' of type "
                               "'INT32', expected datatype 'FP32'")
    t.contents.Clear()
    t.contents.fp32_contents.append(1.0)
    msg.raw_input_contents.append(b"\0\0\0\0")
    with pytest.raises(InferenceError, match="contents field must not be specified when using raw_input_contents"):
        convert.infer_request(to_naiad(msg))
    del msg.raw_input_contents[:]
    t.contents.fp64_contents.append(1.0)
    with pytest.raises(InferenceError, match="binary data was already supplied"):
        convert.infer_request(to_naiad(msg))


def test_missing_input_data():
    msg = tc.ModelInferRequest(model_name="m")
    msg.inputs.add(name="X", datatype="FP32", shape=[1])
    with pytest.raises(InferenceError) as e:
        convert.infer_request(to_naiad(msg))
    assert e.value.message == "unable to find data for input tensor 'X' for model 'm' in request."


def test_raw_contents_follow_inputs_without_other_data():
    a = grpcclient.InferInput("A", [1], "INT32")
    a.set_data_from_numpy(np.array([7], dtype=np.int32))
    b = grpcclient.InferInput("B", [4], "FP32")
    b.set_shared_memory("region", 16, offset=8)
    c = grpcclient.InferInput("C", [1], "INT32")
    c.set_data_from_numpy(np.array([9], dtype=np.int32))
    request, _ = convert.infer_request(client_request([a, b, c]))
    ta, tb, tc_ = request.inputs
    assert ta.array.tolist() == [7] and tc_.array.tolist() == [9]
    assert not tb.has_data
    assert (tb.shm.region, tb.shm.byte_size, tb.shm.offset) == ("region", 16, 8)


def test_requested_outputs_shm_and_classification():
    o1 = grpcclient.InferRequestedOutput("P", class_count=3)
    o2 = grpcclient.InferRequestedOutput("Q")
    o2.set_shared_memory("out_region", 64)
    o3 = grpcclient.InferRequestedOutput("R")
    request, _ = convert.infer_request(client_request([], outputs=[o1, o2, o3]))
    p, q, r = request.outputs
    assert (p.name, p.classification, p.shm) == ("P", 3, None)
    assert q.classification == 0 and isinstance(q.shm, SharedMemoryRef)
    assert (q.shm.region, q.shm.byte_size, q.shm.offset) == ("out_region", 64, 0)
    assert (r.name, r.classification, r.shm) == ("R", 0, None)


def test_shm_parameter_errors():
    msg = tc.ModelInferRequest(model_name="m")
    o = msg.outputs.add(name="Y")
    o.parameters["shared_memory_region"].string_param = "r"
    with pytest.raises(InferenceError, match="'shared_memory_byte_size' must be specified along with "
                                             "'shared_memory_region' parameter for tensor 'Y'"):
        convert.infer_request(to_naiad(msg))
    o.parameters["shared_memory_byte_size"].int64_param = 4
    o.parameters["classification"].int64_param = 2
    with pytest.raises(InferenceError, match="output can't set both 'shared_memory_region' and 'classification'"):
        convert.infer_request(to_naiad(msg))
    msg2 = tc.ModelInferRequest(model_name="m")
    o = msg2.outputs.add(name="Y")
    o.parameters["shared_memory_offset"].int64_param = 4
    with pytest.raises(InferenceError, match="can not be specified without 'shared_memory_region'"):
        convert.infer_request(to_naiad(msg2))
    msg3 = tc.ModelInferRequest(model_name="m")
    t = msg3.inputs.add(name="X", datatype="FP32", shape=[1])
    t.parameters["shared_memory_region"].string_param = "r"
    t.parameters["shared_memory_byte_size"].int64_param = 4
    t.contents.fp32_contents.append(1)
    with pytest.raises(InferenceError, match="unexpected 'content' provided when using shared memory"):
        convert.infer_request(to_naiad(msg3))


def test_request_parameters():
    msg = client_request([], request_id="r1", model_version="2", sequence_id=42, sequence_start=True,
                         sequence_end=False, priority=3, timeout=1500,
                         parameters={"s": "text", "i": -5, "b": True, "f": 0.5})
    request, empty_final = convert.infer_request(msg)
    assert (request.id, request.model_version) == ("r1", "2")
    assert (request.sequence_id, request.sequence_start, request.sequence_end) == (42, True, False)
    assert (request.priority, request.timeout_us) == (3, 1500)
    assert request.parameters == {"s": "text", "i": -5, "b": True, "f": 0.5}
    assert not empty_final
    msg = client_request([], sequence_id="corr-7", sequence_end=True)
    request, _ = convert.infer_request(msg)
    assert (request.sequence_id, request.sequence_end) == ("corr-7", True)


def test_forwarded_headers_become_parameters():
    request, _ = convert.infer_request(client_request([]), forwarded=[("x-trace", "abc")])
    assert request.parameters == {"x-trace": "abc"}


def test_triton_parameters():
    msg = tc.ModelInferRequest(model_name="m")
    msg.parameters["triton_enable_empty_final_response"].bool_param = True
    request, empty_final = convert.infer_request(to_naiad(msg))
    assert empty_final and request.parameters == {}
    msg.parameters["triton_other"].bool_param = True
    with pytest.raises(InferenceError) as e:
        convert.infer_request(to_naiad(msg))
    assert e.value.message == (
        "parameter keys starting with 'triton_' are reserved for Triton usage. Only the following keys "
        "starting with 'triton_' are allowed: triton_enable_empty_final_response")


@pytest.mark.parametrize("key,field,value,message", [
    ("sequence_id", "bool_param", True, "invalid value type for 'sequence_id' parameter, expected "
                                        "int64_param or string_param."),
    ("sequence_start", "int64_param", 1, "invalid value type for 'sequence_start' parameter, expected bool_param."),
    ("sequence_end", "string_param", "x", "invalid value type for 'sequence_end' parameter, expected bool_param."),
    ("priority", "int64_param", -1, "invalid value for 'priority', expected value >= 0."),
    ("priority", "string_param", "1", "invalid value type for 'priority' parameter, expected int64_param or "
                                      "uint64_param."),
    ("timeout", "uint64_param", 5, "invalid value type for 'timeout' parameter, expected int64_param."),
    ("triton_enable_empty_final_response", "int64_param", 1,
     "invalid value type for 'triton_enable_empty_final_response' parameter, expected bool_param."),
    ("custom", "uint64_param", 1, "invalid value type for 'custom' parameter"),
])
def test_parameter_type_errors(key, field, value, message):
    msg = tc.ModelInferRequest(model_name="m")
    setattr(msg.parameters[key], field, value)
    with pytest.raises(InferenceError) as e:
        convert.infer_request(to_naiad(msg))
    assert e.value.code is ErrorCode.INVALID_ARG
    assert e.value.message.startswith(message)


def test_uint64_priority():
    msg = client_request([], priority=2 ** 63)
    request, _ = convert.infer_request(msg)
    assert request.priority == 2 ** 63


# ------------------------------------------------------------------ responses --

@pytest.mark.parametrize("datatype", NUMERIC + ["BYTES"])
def test_response_round_trip(datatype):
    if datatype == "BYTES":
        data = np.array([b"one", b"", b"three"], dtype=object)
    else:
        data = np.arange(3).astype(_np(datatype))
    response = InferenceResponse("m", "1", [Tensor.from_numpy("OUT", data, datatype)], id="req",
                                 parameters={"p_str": "v", "p_int": 3, "p_bool": False, "p_float": 1.5})
    result = client_result(convert.infer_reply(response))
    got = result.get_response()
    assert (got.model_name, got.model_version, got.id) == ("m", "1", "req")
    assert got.outputs[0].datatype == datatype and list(got.outputs[0].shape) == [3]
    np.testing.assert_array_equal(result.as_numpy("OUT"), data)
    params = got.parameters
    assert params["p_str"].string_param == "v" and params["p_int"].int64_param == 3
    assert params["p_bool"].HasField("bool_param") and not params["p_bool"].bool_param
    assert params["p_float"].double_param == 1.5
    assert "triton_final_response" not in params


def test_response_outputs_keep_order_with_shm_outputs():
    a = Tensor.from_numpy("A", np.array([1, 2], dtype=np.int32))
    b = Tensor("B", "FP32", (4,), shm=SharedMemoryRef("r", 16))
    c = Tensor.from_numpy("C", np.array([3.5], dtype=np.float64))
    result = client_result(convert.infer_reply(InferenceResponse("m", "1", [a, b, c])))
    resp = result.get_response()
    assert [o.name for o in resp.outputs] == ["A", "B", "C"]
    assert list(resp.raw_output_contents[1]) == []
    assert result.as_numpy("A").tolist() == [1, 2]
    assert result.as_numpy("C").tolist() == [3.5]


def test_response_bytes_parameter_unsupported():
    with pytest.raises(InferenceError) as e:
        convert.infer_reply(InferenceResponse("m", "1", [], parameters={"b": b"x"}))
    assert e.value.code is ErrorCode.UNSUPPORTED


def test_encoded_reply_equals_protobuf_serialization():
    data = np.random.default_rng(0).random((2, 300)).astype(np.float32)
    reply = convert.infer_reply(InferenceResponse("m", "3", [Tensor.from_numpy("O", data)], id="x"))
    expected = pb.ModelInferResponse()
    expected.CopyFrom(reply.head)
    expected.raw_output_contents.append(data.tobytes())
    assert pb.ModelInferResponse.FromString(convert.encode_infer_reply(reply)) == expected
    assert reply.to_pb() == expected


def test_stream_replies():
    request = InferenceRequest("m", [], model_version="2", id="q")
    response = InferenceResponse("m", "2", [Tensor.from_numpy("O", np.array([1], dtype=np.int32))], id="q",
                                 final=False)
    msg = tc.ModelStreamInferResponse.FromString(
        convert.encode_stream_reply(convert.StreamReply("", convert.infer_reply(response, False))))
    assert msg.error_message == ""
    assert msg.infer_response.parameters["triton_final_response"].HasField("bool_param")
    assert msg.infer_response.parameters["triton_final_response"].bool_param is False
    result = grpcclient.InferResult(msg.infer_response)
    assert result.as_numpy("O").tolist() == [1]

    msg = tc.ModelStreamInferResponse.FromString(
        convert.encode_stream_reply(convert.StreamReply("it broke", convert.empty_reply(request))))
    assert msg.error_message == "it broke"
    r = msg.infer_response
    assert (r.id, r.model_name, r.model_version) == ("q", "m", "2")
    assert r.parameters["triton_final_response"].bool_param is True
    assert list(r.outputs) == [] and list(r.raw_output_contents) == []


# ------------------------------------------------------------------ other messages --

def _tc(msg, cls):
    return cls.FromString(msg.SerializeToString())


def test_metadata_messages():
    meta = ServerMetadata("triton", "2.45.0", ("classification", "sequence"))
    got = _tc(convert.server_metadata(meta), tc.ServerMetadataResponse)
    assert (got.name, got.version, list(got.extensions)) == ("triton", "2.45.0", ["classification", "sequence"])
    mm = ModelMetadata("m", ("1", "2"), "python", (TensorMetadata("I", "FP32", (-1, 4)),),
                       (TensorMetadata("O", "BYTES", (1,)),))
    got = _tc(convert.model_metadata(mm), tc.ModelMetadataResponse)
    assert list(got.versions) == ["1", "2"] and got.platform == "python"
    assert (got.inputs[0].name, got.inputs[0].datatype, list(got.inputs[0].shape)) == ("I", "FP32", [-1, 4])
    assert got.outputs[0].datatype == "BYTES"


def test_model_config_message():
    from naiad.kernel.inference.model_config import parse_text

    config = parse_text('name: "m" backend: "python" max_batch_size: 8 input [{name: "I" data_type: TYPE_FP32 '
                        'dims: [-1]}]')
    got = _tc(convert.model_config(config), tc.ModelConfigResponse)
    assert got.config.name == "m" and got.config.max_batch_size == 8 and list(got.config.input[0].dims) == [-1]


def test_statistics_message():
    s = ModelStatistics("m", "1", last_inference=123, inference_count=10, execution_count=4)
    s.inference_stats.success = Duration(10, 5000)
    s.inference_stats.queue = Duration(10, 700)
    s.response_stats["0"] = ResponseStats(success=Duration(2, 20))
    s.batch_stats[4] = BatchStats(4, compute_infer=Duration(1, 99))
    s.batch_stats[1] = BatchStats(1, compute_input=Duration(3, 30))
    s.memory_usage.append(MemoryUsage("CPU", 0, 1024))
    got = _tc(convert.model_statistics([s]), tc.ModelStatisticsResponse).model_stats[0]
    assert (got.name, got.version, got.last_inference, got.inference_count, got.execution_count) == \
        ("m", "1", 123, 10, 4)
    assert (got.inference_stats.success.count, got.inference_stats.success.ns) == (10, 5000)
    assert got.inference_stats.queue.ns == 700
    assert got.response_stats["0"].success.count == 2
    assert [b.batch_size for b in got.batch_stats] == [1, 4]
    assert got.batch_stats[1].compute_infer.ns == 99
    assert (got.memory_usage[0].type, got.memory_usage[0].byte_size) == ("CPU", 1024)


def test_repository_messages():
    got = _tc(convert.repository_index([ModelIndexEntry("a", "1", "READY"),
                                        ModelIndexEntry("b", "", "UNAVAILABLE", "unloaded")]),
              tc.RepositoryIndexResponse)
    assert [(x.name, x.version, x.state, x.reason) for x in got.models] == \
        [("a", "1", "READY", ""), ("b", "", "UNAVAILABLE", "unloaded")]
    req = tc.RepositoryModelLoadRequest(model_name="m")
    req.parameters["config"].string_param = "{}"
    req.parameters["file:1/model.py"].bytes_param = b"code"
    config, files = convert.load_parameters(_tc(req, pb.RepositoryModelLoadRequest).parameters)
    assert config == "{}" and files == {"file:1/model.py": b"code"}
    req.parameters["other"].bool_param = True
    with pytest.raises(InferenceError, match="unrecognized load parameter 'other'."):
        convert.load_parameters(_tc(req, pb.RepositoryModelLoadRequest).parameters)
    req = tc.RepositoryModelLoadRequest(model_name="m")
    req.parameters["config"].bytes_param = b"{}"
    with pytest.raises(InferenceError, match="invalid value type for load parameter 'config', expected string_param."):
        convert.load_parameters(_tc(req, pb.RepositoryModelLoadRequest).parameters)
    unload = tc.RepositoryModelUnloadRequest(model_name="m")
    assert convert.unload_dependents(_tc(unload, pb.RepositoryModelUnloadRequest).parameters) is False
    unload.parameters["unload_dependents"].bool_param = True
    assert convert.unload_dependents(_tc(unload, pb.RepositoryModelUnloadRequest).parameters) is True
    unload.parameters["unload_dependents"].string_param = "yes"
    with pytest.raises(InferenceError, match="expected bool_param"):
        convert.unload_dependents(_tc(unload, pb.RepositoryModelUnloadRequest).parameters)


def test_shared_memory_status_messages():
    got = _tc(convert.system_shm_status([SystemShmRegion("r", "/key", 8, 64)]), tc.SystemSharedMemoryStatusResponse)
    r = got.regions["r"]
    assert (r.name, r.key, r.offset, r.byte_size) == ("r", "/key", 8, 64)
    got = _tc(convert.cuda_shm_status([CudaShmRegion("c", 1, 128)]), tc.CudaSharedMemoryStatusResponse)
    assert (got.regions["c"].device_id, got.regions["c"].byte_size) == (1, 128)


def test_trace_settings_messages():
    req = tc.TraceSettingRequest(model_name="m")
    req.settings["trace_level"].value.extend(["TIMESTAMPS", "TENSORS"])
    req.settings["trace_rate"].value.append("5")
    req.settings["trace_count"].SetInParent()
    updates = convert.trace_updates(_tc(req, pb.TraceSettingRequest).settings)
    assert updates == {"trace_level": ["TIMESTAMPS", "TENSORS"], "trace_rate": "5", "trace_count": None}
    req.settings["trace_rate"].value.append("6")  # refused by the tracing service, in Triton's key order
    assert convert.trace_updates(_tc(req, pb.TraceSettingRequest).settings)["trace_rate"] == ["5", "6"]
    got = _tc(convert.trace_settings({"trace_level": ["OFF"], "trace_rate": "1000", "trace_mode": "triton"}),
              tc.TraceSettingResponse)
    assert list(got.settings["trace_level"].value) == ["OFF"]
    assert list(got.settings["trace_rate"].value) == ["1000"]


def test_log_settings_messages():
    req = tc.LogSettingsRequest()
    req.settings["log_info"].bool_param = False
    req.settings["log_verbose_level"].uint32_param = 2
    req.settings["log_format"].string_param = "ISO8601"
    assert convert.log_updates(_tc(req, pb.LogSettingsRequest).settings) == \
        {"log_info": False, "log_verbose_level": 2, "log_format": "ISO8601"}
    req = tc.LogSettingsRequest()  # the kernel checks the values (kernel/logs.py)
    req.settings["log_info"].string_param = "no"
    req.settings["log_file"].SetInParent()
    assert convert.log_updates(_tc(req, pb.LogSettingsRequest).settings) == {"log_info": "no", "log_file": None}
    got = _tc(convert.log_settings({"log_file": "", "log_info": True, "log_verbose_level": 1,
                                    "log_format": "default"}), tc.LogSettingsResponse)
    assert got.settings["log_info"].bool_param is True
    assert got.settings["log_verbose_level"].uint32_param == 1
    wrapped = _tc(convert.log_settings({"log_verbose_level": -1}), tc.LogSettingsResponse)
    assert wrapped.settings["log_verbose_level"].uint32_param == 2**32 - 1  # Triton's int32, sent as uint32
    assert got.settings["log_format"].string_param == "default"
    assert got.settings["log_file"].HasField("string_param")


def test_error_codes_map_as_triton():
    assert convert.GRPC_CODE_NAME == {
        ErrorCode.UNKNOWN: "UNKNOWN", ErrorCode.INTERNAL: "INTERNAL", ErrorCode.NOT_FOUND: "NOT_FOUND",
        ErrorCode.INVALID_ARG: "INVALID_ARGUMENT", ErrorCode.UNAVAILABLE: "UNAVAILABLE",
        ErrorCode.UNSUPPORTED: "UNIMPLEMENTED", ErrorCode.ALREADY_EXISTS: "ALREADY_EXISTS",
        ErrorCode.CANCELLED: "CANCELLED",
    }


# ------------------------------------------------------------------ config --

def test_restricted_protocol_parsing():
    cfg = GrpcConfig(restricted_protocol=["health,metadata:admin=secret", "inference:infer-key=v=1"])
    assert cfg.restrictions() == {
        "health": ("triton-grpc-protocol-admin", "secret"),
        "metadata": ("triton-grpc-protocol-admin", "secret"),
        "inference": ("triton-grpc-protocol-infer-key", "v=1"),
    }
    for bad, why in [("health", "not <protocols>:<key>=<value>"), ("health:k", "not <protocols>:<key>=<value>"),
                     ("bogus:k=v", "unknown protocol 'bogus'")]:
        with pytest.raises(ConfigError, match=why):
            GrpcConfig(restricted_protocol=[bad]).validate()
    with pytest.raises(ConfigError, match="can not be specified in multiple config groups"):
        GrpcConfig(restricted_protocol=["health:a=b", "health:c=d"]).validate()
    with pytest.raises(ConfigError, match="server_cert and server_key are required"):
        GrpcConfig(use_ssl=True).validate()
