"""pb_utils (triton_python_backend_utils) pieces that need no stub."""

from __future__ import annotations

import json

import numpy as np
import pytest

from naiad.backends.python import pb_utils


def test_constants_and_error_codes() -> None:
    assert pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START == 1
    assert pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END == 2
    assert pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL == 1
    assert pb_utils.TRITONSERVER_REQUEST_RELEASE_ALL == 1
    assert pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE == 2
    codes = ["UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED", "ALREADY_EXISTS", "CANCELLED"]
    assert [int(getattr(pb_utils.TritonError, c)) for c in codes] == list(range(8))
    err = pb_utils.TritonError("nope", pb_utils.TritonError.NOT_FOUND)
    assert err.code() == pb_utils.TritonError.NOT_FOUND and err.message() == "nope" and str(err) == "nope"
    assert pb_utils.TritonError("x").code() == pb_utils.TritonError.INTERNAL
    exc = pb_utils.TritonModelException("bad")
    assert isinstance(exc, Exception) and exc.message() == "bad"
    assert pb_utils.TRITONSERVER_MEMORY_CPU != pb_utils.TRITONSERVER_MEMORY_GPU
    pm = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
    assert pm.preferred_memory_type == pb_utils.TRITONSERVER_MEMORY_CPU
    assert pb_utils.InferenceTrace().get_context() is None
    assert pb_utils.Logger.LogLevel.VERBOSE == 3


def test_type_helpers() -> None:
    assert pb_utils.triton_to_numpy_type(11) is np.float32
    assert pb_utils.triton_to_numpy_type(13) is np.object_
    assert pb_utils.numpy_to_triton_type(np.float16) == 10
    assert pb_utils.numpy_to_triton_type(np.dtype(np.int64)) == 9
    assert pb_utils.numpy_to_triton_type(np.object_) == 13
    assert pb_utils.numpy_to_triton_type(np.bytes_) == 13
    assert pb_utils.numpy_to_triton_type(np.bool_) == 1
    assert pb_utils.triton_string_to_numpy("TYPE_FP32") is np.float32
    assert pb_utils.TRITON_STRING_TO_NUMPY["TYPE_STRING"] is np.object_
    for code in range(1, 13):
        assert pb_utils.numpy_to_triton_type(pb_utils.triton_to_numpy_type(code)) == code


def test_bytes_serialization() -> None:
    arr = np.array([b"a", b"", "é", 12], dtype=np.object_)
    data = pb_utils.serialize_byte_tensor(arr)
    assert data == b"\x01\x00\x00\x00a" + b"\x00\x00\x00\x00" + b"\x02\x00\x00\x00\xc3\xa9" + b"\x02\x00\x00\x0012"
    back = pb_utils.deserialize_bytes_tensor(data)
    assert back.dtype == np.object_ and back.tolist() == [b"a", b"", "é".encode(), b"12"]
    assert pb_utils.serialize_byte_tensor(np.array([], dtype=np.object_)) == b""


def test_tensor() -> None:
    t = pb_utils.Tensor("X", np.arange(6, dtype=np.int32).reshape(2, 3))
    assert t.name() == "X" and t.triton_dtype() == 8 and t.shape() == [2, 3] and t.is_cpu()
    assert t.__dlpack_device__() == (1, 0)
    back = np.from_dlpack(t)
    np.testing.assert_array_equal(back, t.as_numpy())
    t2 = pb_utils.Tensor.from_dlpack("Y", t.to_dlpack())  # a bare capsule
    np.testing.assert_array_equal(t2.as_numpy(), t.as_numpy())
    t3 = pb_utils.Tensor.from_dlpack("Z", np.ones(3, np.float16))
    assert t3.triton_dtype() == 10
    s = pb_utils.Tensor("S", np.array([b"x"], dtype=np.object_))
    assert s.triton_dtype() == 13
    with pytest.raises(pb_utils.TritonModelException):
        s.to_dlpack()
    with pytest.raises(pb_utils.TritonModelException):
        pb_utils.Tensor("", np.zeros(1))
    with pytest.raises(pb_utils.TritonModelException):
        pb_utils.Tensor.from_dlpack("W", object())


def test_request_response_objects() -> None:
    x = pb_utils.Tensor("INPUT0", np.zeros(2, np.float32))
    req = pb_utils.InferenceRequest(
        model_name="m", inputs=[x], requested_output_names=["OUT"], request_id="r",
        correlation_id="c1", flags=1, timeout=5, parameters={"a": 1, "b": "x", "c": False})
    assert req.request_id() == "r" and req.correlation_id() == "c1" and req.flags() == 1
    assert req.timeout() == 5 and req.requested_output_names() == ["OUT"]
    assert json.loads(req.parameters()) == {"a": 1, "b": "x", "c": False}
    assert pb_utils.get_input_tensor_by_name(req, "INPUT0") is x
    assert pb_utils.get_input_tensor_by_name(req, "nope") is None
    assert not req.is_cancelled()
    with pytest.raises(pb_utils.TritonModelException, match="Correlation ID must be integer or string"):
        pb_utils.InferenceRequest(model_name="m", inputs=[], requested_output_names=[], correlation_id=1.5)
    with pytest.raises(pb_utils.TritonModelException, match="bool/int/str"):
        pb_utils.InferenceRequest(model_name="m", inputs=[], requested_output_names=[], parameters={"a": 1.5})
    with pytest.raises(pb_utils.TritonModelException, match="only available inside"):
        req.exec()
    resp = pb_utils.InferenceResponse([x])
    assert not resp.has_error() and pb_utils.get_output_tensor_by_name(resp, "INPUT0") is x
    bad = pb_utils.InferenceResponse(error=pb_utils.TritonError("e"))
    assert bad.has_error() and bad.error().message() == "e" and bad.output_tensors() == []
    with pytest.raises(TypeError):
        pb_utils.InferenceResponse(x)  # not a list


def test_config_helpers() -> None:
    config = {
        "input": [{"name": "A", "data_type": "TYPE_FP32"}],
        "output": [{"name": "B", "data_type": "TYPE_INT32"}],
        "model_transaction_policy": {"decoupled": True},
    }
    assert pb_utils.get_input_config_by_name(config, "A")["data_type"] == "TYPE_FP32"
    assert pb_utils.get_output_config_by_name(config, "B")["data_type"] == "TYPE_INT32"
    assert pb_utils.get_input_config_by_name(config, "B") is None
    assert pb_utils.using_decoupled_model_transaction_policy(config)
    assert not pb_utils.using_decoupled_model_transaction_policy({})


def _auto_config(**extra) -> pb_utils.ModelConfig:
    base = {"name": "m", "max_batch_size": 0, "input": [], "output": []}
    base.update(extra)
    return pb_utils.ModelConfig(json.dumps(base))


def test_model_config_setters() -> None:
    mc = _auto_config()
    mc.set_max_batch_size(4)
    mc.set_dynamic_batching()
    mc.add_input({"name": "IN", "data_type": "TYPE_FP32", "dims": [4], "optional": True})
    mc.add_output({"name": "OUT", "data_type": "TYPE_FP32", "dims": [4]})
    mc.set_model_transaction_policy({"decoupled": True})
    d = mc.as_dict()
    assert d["max_batch_size"] == 4 and d["dynamic_batching"] == {}
    assert d["input"] == [{"name": "IN", "data_type": "TYPE_FP32", "dims": [4], "optional": True}]
    assert d["model_transaction_policy"] == {"decoupled": True}
    # re-adding the same tensor is fine; a conflict is a ValueError
    mc.add_input({"name": "IN", "data_type": "TYPE_FP32", "dims": [4]})
    with pytest.raises(ValueError, match="configuration expects datatype TYPE_FP32"):
        mc.add_input({"name": "IN", "data_type": "TYPE_INT32", "dims": [4]})
    with pytest.raises(ValueError, match="the model expects dims"):
        mc.add_output({"name": "OUT", "data_type": "TYPE_FP32", "dims": [5]})
    with pytest.raises(ValueError, match="contains property other than"):
        mc.add_output({"name": "X", "data_type": "TYPE_FP32", "dims": [1], "optional": True})
    with pytest.raises(ValueError, match="missing 'dims'"):
        mc.add_input({"name": "Y", "data_type": "TYPE_FP32"})
    with pytest.raises(ValueError, match="max_batch_size"):
        mc.set_max_batch_size(2)
    with pytest.raises(ValueError, match="decoupled"):
        mc.set_model_transaction_policy({"decoupled": False})
    with pytest.raises(ValueError, match="sequence_batching"):
        _auto_config(sequence_batching={}).set_dynamic_batching()
    # a config entry without a type takes the model's
    mc2 = _auto_config(input=[{"name": "IN", "data_type": "TYPE_INVALID", "dims": []}])
    mc2.add_input({"name": "IN", "data_type": "TYPE_INT8", "dims": [2]})
    assert mc2.as_dict()["input"] == [{"name": "IN", "data_type": "TYPE_INT8", "dims": [2]}]


_IN = [pb_utils.Tensor("INPUT0", np.asarray([1, 2], dtype=np.int32))]
_REQ = dict(inputs=_IN, model_name="m", requested_output_names=["o"])


@pytest.mark.parametrize("call,error", [
    # what Triton's pybind11 binding refuses by type (TypeError) ...
    (lambda: pb_utils.InferenceRequest(**{**_REQ, "inputs": None}), TypeError),
    (lambda: pb_utils.InferenceRequest(**{**_REQ, "model_name": None}), TypeError),
    (lambda: pb_utils.InferenceRequest(**{**_REQ, "requested_output_names": [None]}), TypeError),
    (lambda: pb_utils.InferenceRequest(**{**_REQ, "requested_output_names": None}), TypeError),
    (lambda: pb_utils.InferenceRequest(**_REQ, correlation_id=None), TypeError),
    (lambda: pb_utils.InferenceRequest(**_REQ, request_id=None), TypeError),
    (lambda: pb_utils.InferenceRequest(**_REQ, model_version=None), TypeError),
    (lambda: pb_utils.InferenceRequest(**_REQ, flags=None), TypeError),
    (lambda: pb_utils.InferenceResponse(output_tensors=None), TypeError),
    (lambda: pb_utils.Tensor(None, np.zeros(2)), TypeError),
    (lambda: pb_utils.Tensor("OUTPUT0", None), TypeError),
    (lambda: pb_utils.Tensor("", None), TypeError),
    (lambda: pb_utils.Logger.log("x", None), TypeError),
    (lambda: pb_utils.Logger.log("x", 1), TypeError),
    (lambda: pb_utils.Logger.log_info(None), TypeError),
    (lambda: pb_utils.Logger.log_verbose(None), TypeError),
    # ... and what its C++ checks refuse by value
    (lambda: pb_utils.InferenceRequest(**{**_REQ, "inputs": [None]}), pb_utils.TritonModelException),
    (lambda: pb_utils.InferenceResponse(output_tensors=[None]), pb_utils.TritonModelException),
    (lambda: pb_utils.Tensor.from_dlpack("OUTPUT0", None), pb_utils.TritonModelException),
])
def test_arguments_refused_as_triton_does(call, error) -> None:
    with pytest.raises(error):
        call()


def test_arguments_accepted() -> None:
    assert pb_utils.InferenceRequest(**_REQ, correlation_id=5).correlation_id() == 5
    assert pb_utils.InferenceRequest(inputs=[], model_name="m", requested_output_names=[]).correlation_id() == 0
    assert pb_utils.InferenceResponse(output_tensors=[]).output_tensors() == []
