"""The HTTP codecs on their own: request bodies built by tritonclient's own request builder
decode into the inference types, and encoded responses parse with tritonclient's own
InferResult. Pure functions, no server."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.http._utils import _get_inference_request
from tritonclient.utils import serialize_bf16_tensor

from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.messages import ModelMetadata, TensorMetadata
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, QueueSink, Tensor
from naiad.services.http import compression
from naiad.services.http.codec import decode_infer, encode_infer
from naiad.services.http.generate import decode_generate, encode_generate


def _body(inputs, outputs=None, request_id="", sequence_id=0, sequence_start=False, sequence_end=False,
          priority=0, timeout=None, parameters=None):
    body, json_size = _get_inference_request(inputs, request_id, outputs, sequence_id, sequence_start,
                                             sequence_end, priority, timeout, parameters)
    return body, (None if json_size is None else str(json_size))


def _input(name, array, datatype, binary=True):
    t = httpclient.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array, binary_data=binary)
    return t


def _decode(body, header, **kw):
    return decode_infer(body, header, "m", kw.pop("version", ""), **kw)


NUMERIC = [
    ("BOOL", np.array([[True, False, True]])),
    ("UINT8", np.arange(6, dtype=np.uint8).reshape(2, 3)),
    ("UINT16", np.arange(6, dtype=np.uint16)),
    ("UINT32", np.arange(6, dtype=np.uint32)),
    ("UINT64", np.array([0, 2**63 + 5], dtype=np.uint64)),
    ("INT8", np.array([-3, 4], dtype=np.int8)),
    ("INT16", np.array([-300, 4], dtype=np.int16)),
    ("INT32", np.arange(-3, 3, dtype=np.int32).reshape(3, 2)),
    ("INT64", np.array([-(2**40), 7], dtype=np.int64)),
    ("FP32", np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)),
    ("FP64", np.array([1e300, -0.5], dtype=np.float64)),
]


@pytest.mark.parametrize("datatype,array", NUMERIC, ids=[n for n, _ in NUMERIC])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_numeric_inputs_decode_from_tritonclient_bodies(datatype, array, binary):
    body, header = _body([_input("IN", array, datatype, binary)])
    request, plan = _decode(body, header)
    (t,) = request.inputs
    assert (t.name, t.datatype, t.shape) == ("IN", datatype, array.shape)
    np.testing.assert_array_equal(t.array, array)
    assert t.array.dtype == array.dtype
    assert request.protocol == "http" and request.model_name == "m"
    # No outputs named: tritonclient asks for binary outputs by default.
    assert plan.default_binary is True and request.outputs is None


def test_binary_inputs_are_views_over_the_received_body():
    a = np.arange(1024, dtype=np.float32)
    b = np.arange(16, dtype=np.int64)
    body, header = _body([_input("A", a, "FP32"), _input("B", b, "INT64")])
    request, _ = _decode(body, header)
    for t in request.inputs:
        raw = t._raw
        assert isinstance(raw, memoryview) and raw.obj is body  # a slice of the body, not a copy
    np.testing.assert_array_equal(request.input("A").array, a)
    np.testing.assert_array_equal(request.input("B").array, b)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes_inputs(binary):
    arr = np.array([[b"one", b"", "tr\u00e9s".encode()], [b"x" * 300, b"\x00\x01", b"z"]], dtype=np.object_)
    if not binary:
        arr = np.array([[s.decode("utf-8", "replace") for s in row] for row in arr], dtype=np.object_)
    body, header = _body([_input("S", arr, "BYTES", binary)])
    request, _ = _decode(body, header)
    t = request.inputs[0]
    assert t.shape == (2, 3)
    expected = [s if isinstance(s, bytes) else s.encode() for s in arr.reshape(-1)]
    assert list(t.array.reshape(-1)) == expected


def test_fp16_and_bf16_binary_inputs():
    h = np.array([1.5, -2.0, 65504], dtype=np.float16)
    bf = np.array([1.0, -3.5, 0.15625], dtype=np.float32)
    body, header = _body([_input("H", h, "FP16"), _input("BF", bf, "BF16")])
    request, _ = _decode(body, header)
    np.testing.assert_array_equal(request.input("H").array, h)
    bf_in = request.input("BF")
    assert bf_in.shape == (3,) and bytes(bf_in.raw) == serialize_bf16_tensor(bf).item()


def test_fp16_json_input_is_refused():
    doc = {"inputs": [{"name": "H", "datatype": "FP16", "shape": [1], "data": [1.0]}]}
    with pytest.raises(InferenceError) as e:
        _decode(json.dumps(doc).encode(), None)
    assert e.value.code == ErrorCode.INVALID_ARG
    assert "receiving FP16 data via JSON is not supported" in e.value.message


def test_request_parameters_outputs_and_sequence():
    inp = _input("IN", np.ones((1, 4), np.float32), "FP32")
    outs = [httpclient.InferRequestedOutput("A", binary_data=True),
            httpclient.InferRequestedOutput("B", binary_data=False, class_count=3)]
    body, header = _body([inp], outs, request_id="r1", sequence_id="corr-7", sequence_start=True,
                         priority=2, timeout=500, parameters={"p_str": "v", "p_int": 3, "p_bool": True,
                                                              "p_float": 0.5})
    request, plan = _decode(body, header, version="2")
    assert request.id == "r1" and request.model_version == "2"
    assert request.sequence_id == "corr-7" and request.sequence_start and not request.sequence_end
    assert request.priority == 2 and request.timeout_us == 500
    assert request.parameters == {"p_str": "v", "p_int": 3, "p_bool": True, "p_float": 0.5}
    assert [(o.name, o.binary, o.classification) for o in request.outputs] == [("A", True, 0), ("B", False, 3)]
    assert plan.binary("A") and not plan.binary("B") and not plan.binary("unlisted")


def test_numeric_sequence_id_and_forwarded_headers():
    body, header = _body([_input("IN", np.ones(2, np.int32), "INT32")], sequence_id=42, sequence_end=True)
    request, _ = _decode(body, header, forward=[("x-trace", "abc")])
    assert request.sequence_id == 42 and request.sequence_end
    assert request.parameters["x-trace"] == "abc"


def test_shared_memory_inputs_and_outputs():
    doc = {
        "inputs": [{"name": "IN", "datatype": "FP32", "shape": [4],
                    "parameters": {"shared_memory_region": "in_r", "shared_memory_byte_size": 16}}],
        "outputs": [{"name": "OUT", "parameters": {"shared_memory_region": "out_r",
                                                   "shared_memory_byte_size": 16, "shared_memory_offset": 8}}],
    }
    request, _ = _decode(json.dumps(doc).encode(), None)
    ref = request.inputs[0].shm
    assert (ref.region, ref.byte_size, ref.offset) == ("in_r", 16, 0)
    assert not request.inputs[0].has_data
    out = request.outputs[0].shm
    assert (out.region, out.byte_size, out.offset) == ("out_r", 16, 8)


@pytest.mark.parametrize("doc,code,words", [
    ({"inputs": [], "parameters": {"triton_x": 1}}, ErrorCode.INVALID_ARG, "reserved for Triton"),
    ({"inputs": [{"name": "I", "datatype": "FP32", "shape": [1]}]}, ErrorCode.INVALID_ARG, "no field is set"),
    ({"inputs": [{"name": "I", "datatype": "FP32", "shape": [1], "data": [1],
                  "parameters": {"shared_memory_region": "r"}}]}, ErrorCode.INVALID_ARG,
     "But set 'data' 'shared_memory_region'"),
    ({"inputs": [], "outputs": [{"name": "O", "parameters": {"shared_memory_region": "r", "classification": 2}}]},
     ErrorCode.INVALID_ARG, "'shared_memory_region' and 'classification'"),
    ({"inputs": [], "outputs": [{"name": "O", "parameters": {"shared_memory_region": "r", "binary_data": True}}]},
     ErrorCode.INVALID_ARG, "'shared_memory_region' and 'binary_data'"),
    ({"inputs": [{"name": "I", "datatype": "FP32", "shape": [3], "data": [1, 2]}]}, ErrorCode.INTERNAL,
     "Shape does not match"),
    ({"inputs": [{"name": "I", "datatype": "INT32", "shape": [2], "data": [1, "x"]}]}, ErrorCode.INTERNAL,
     "Unable to parse 'data'"),
    ({"inputs": [{"name": "I", "datatype": "INT32", "shape": [2], "data": [1.5, 2]}]}, ErrorCode.INTERNAL,
     "Unable to parse 'data'"),
    ({"inputs": "nope"}, ErrorCode.INTERNAL, "Unable to parse 'inputs'"),
    ({"inputs": [{"name": "I", "datatype": "FP32", "shape": [-1], "data": [1]}]}, ErrorCode.INTERNAL,
     "Unable to parse 'shape'"),
    ({"inputs": [], "parameters": {"sequence_start": "yes"}}, ErrorCode.INTERNAL, "sequence_start"),
    ({"inputs": [], "parameters": {"p": [1]}}, ErrorCode.INVALID_ARG, "has invalid type"),
])
def test_malformed_requests_get_tritons_codes(doc, code, words):
    with pytest.raises(InferenceError) as e:
        _decode(json.dumps(doc).encode(), None)
    assert e.value.code == code, e.value.message
    assert words in e.value.message


def test_malformed_json_is_internal():
    with pytest.raises(InferenceError) as e:
        _decode(b'{"inputs": [', None)
    assert e.value.code == ErrorCode.INTERNAL and "failed to parse" in e.value.message


def test_binary_size_checks():
    body, header = _body([_input("IN", np.ones(4, np.float32), "FP32")])
    with pytest.raises(InferenceError, match="expecting 4 additional bytes"):
        _decode(body[:-4], header)
    with pytest.raises(InferenceError, match="unexpected additional input data"):
        _decode(body + b"xx", header)
    with pytest.raises(InferenceError, match=r"should be in range \(0, "):
        _decode(body, str(len(body) + 1))
    with pytest.raises(InferenceError, match="Infer-Header-Content-Length"):
        _decode(body[: int(header)], None)


def test_header_length_zero_is_a_raw_request():
    request, plan = _decode(b"\x01\x02\x03\x04", "0")
    (t,) = request.inputs
    assert t.name == "raw_input" and bytes(t.raw) == b"\x01\x02\x03\x04"
    assert plan.default_binary


# ------------------------------------------------------------------ responses --


def _response(outputs, **kw):
    return InferenceResponse("m", "1", outputs, **kw)


def _parse(status_headers_body):
    status, headers, body = status_headers_body
    assert status == 200
    return httpclient.InferResult.from_response_body(
        body, header_length=headers.get("Inference-Header-Content-Length") and
        int(headers["Inference-Header-Content-Length"]),
        content_encoding=headers.get("Content-Encoding")), headers, body


@pytest.mark.parametrize("datatype,array", NUMERIC + [("BYTES", np.array([b"a", b"bc", "\u00e9".encode()],
                                                                          dtype=np.object_))],
                         ids=[n for n, _ in NUMERIC] + ["BYTES"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_outputs_encode_for_tritonclient(datatype, array, binary):
    request, plan = _decode(*_body([_input("IN", np.ones(1, np.float32), "FP32")],
                                   [httpclient.InferRequestedOutput("OUT", binary_data=binary)]))
    t = Tensor.from_numpy("OUT", array, datatype)
    result, headers, _ = _parse(encode_infer(_response([t], id="abc"), plan))
    got = result.as_numpy("OUT")
    if datatype == "BYTES":  # tritonclient gives str for JSON data, bytes for binary
        assert [g if isinstance(g, bytes) else g.encode() for g in got.reshape(-1)] == list(array.reshape(-1))
    else:
        np.testing.assert_array_equal(got, array)
    assert result.get_response()["id"] == "abc"
    assert result.get_response()["model_version"] == "1"
    assert headers["Content-Type"] == ("application/octet-stream" if binary else "application/json")


def test_binary_response_layout_and_fp16():
    h = np.array([1.5, 2.5], dtype=np.float16)
    f = np.arange(3, dtype=np.float32)
    plan = _decode(*_body([_input("IN", f, "FP32")]))[1]  # no outputs named: binary by default
    status, headers, body = encode_infer(_response([Tensor.from_numpy("H", h), Tensor.from_numpy("F", f)]), plan)
    n = int(headers["Inference-Header-Content-Length"])
    header = json.loads(body[:n])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [4, 12]
    assert body[n:] == h.tobytes() + f.tobytes()


def test_fp16_json_output_is_refused():
    plan = _decode(*_body([_input("IN", np.ones(1, np.float32), "FP32")],
                          [httpclient.InferRequestedOutput("H", binary_data=False)]))[1]
    with pytest.raises(InferenceError, match="sending FP16 data via JSON is not supported"):
        encode_infer(_response([Tensor.from_numpy("H", np.ones(1, np.float16))]), plan)


def test_shm_output_and_response_parameters():
    plan = _decode(*_body([_input("IN", np.ones(1, np.float32), "FP32")]))[1]
    out = Tensor("OUT", "FP32", (2, 2))
    from naiad.kernel.inference.types import SharedMemoryRef

    out.shm = SharedMemoryRef("r", 16)
    _, headers, body = encode_infer(_response([out], parameters={"k": "v", "n": 2}), plan)
    doc = json.loads(body)
    assert doc["outputs"] == [{"name": "OUT", "datatype": "FP32", "shape": [2, 2]}]
    assert doc["parameters"] == {"k": "v", "n": 2}
    assert "id" not in doc and headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_responses(encoding):
    plan = _decode(*_body([_input("IN", np.ones(1, np.float32), "FP32")]))[1]
    f = np.arange(100, dtype=np.float32)
    result, headers, body = _parse(encode_infer(_response([Tensor.from_numpy("F", f)]), plan, encoding))
    assert headers["Content-Encoding"] == encoding
    np.testing.assert_array_equal(result.as_numpy("F"), f)


def test_request_decompression_and_limits():
    data = b'{"inputs": []}' * 10
    assert compression.decompress(gzip.compress(data), "gzip", 1000) == data
    assert compression.decompress(zlib.compress(data), "deflate", 1000) == data
    raw = zlib.compressobj(wbits=-15)
    assert compression.decompress(raw.compress(data) + raw.flush(), "deflate", 1000) == data
    with pytest.raises(compression.BodyTooLarge):
        compression.decompress(gzip.compress(b"\0" * 10000), "gzip", 100)
    with pytest.raises(InferenceError) as e:
        compression.request_encoding("br")
    assert e.value.code == ErrorCode.UNSUPPORTED and e.value.headers == {"Accept-Encoding": "gzip, deflate"}
    with pytest.raises(InferenceError):
        compression.decompress(b"not gzip", "gzip", 100)


@pytest.mark.parametrize("header,expected", [
    (None, "identity"), ("gzip", "gzip"), ("deflate", "deflate"), ("br", "identity"),
    ("gzip;q=0.5, deflate;q=0.8", "deflate"), ("deflate, gzip", "deflate"),
    ("identity;q=1, gzip;q=0.9", "identity"), ("gzip;q=bad, deflate;q=0.1", "deflate"), ("*", "identity"),
])
def test_accept_encoding_choice(header, expected):
    assert compression.response_encoding(header) == expected


# ------------------------------------------------------------------ generate --

META = ModelMetadata("g", ("1",), "python",
                     (TensorMetadata("text", "BYTES", (-1, 1)), TensorMetadata("n", "INT32", (-1,))),
                     (TensorMetadata("out", "BYTES", (-1,)),))


def test_generate_request_mapping():
    body = json.dumps({"text": "hi", "n": [1, 2, 3], "temperature": 0.5,
                       "parameters": {"stream": True, "max": 4}}).encode()
    request = decode_generate(body, META, "g")
    text, n = request.inputs
    assert text.shape == (1, 1) and list(text.array.reshape(-1)) == [b"hi"]
    assert n.shape == (3,) and n.array.tolist() == [1, 2, 3]
    assert request.parameters == {"temperature": 0.5, "stream": True, "max": 4}
    with pytest.raises(InferenceError, match="can not convert input"):
        decode_generate(json.dumps({"text": ["a", "b"]}).encode(),
                        ModelMetadata("g", (), "python", (TensorMetadata("text", "BYTES", (3,)),), ()), "g")


def test_generate_response_is_flat_and_sorted():
    out = encode_generate(_response([Tensor.from_numpy("zeta", np.array([b"only"], dtype=np.object_)),
                                     Tensor.from_numpy("alpha", np.array([1, 2], dtype=np.int32))],
                                    parameters={"p": 1}))
    assert out == b'{"alpha":[1,2],"model_name":"m","model_version":"1","p":1,"zeta":"only"}'


def test_a_stream_closed_early_cancels_its_request():
    from naiad.services.http.routes import _sse_events

    sink = QueueSink()
    request = InferenceRequest("m", [])

    async def go():
        sink.send(InferenceResponse("m", "1", [Tensor.from_numpy("x", np.ones(1, np.int32))], final=False))
        events = _sse_events(b"{}", sink, request)
        assert await events.__anext__() == b"data: {}\n\n"
        assert (await events.__anext__()).startswith(b'data: {"model_name"')
        await events.aclose()  # what the transport does when the client goes away

    asyncio.run(go())
    assert request.cancel.cancelled


def test_a_finished_stream_does_not_cancel():
    from naiad.services.http.routes import _sse_events

    sink = QueueSink()
    request = InferenceRequest("m", [])

    async def go():
        sink.send(InferenceResponse("m", "1", [], final=True))
        return [e async for e in _sse_events(b"{}", sink, request)]

    assert asyncio.run(go()) == [b"data: {}\n\n", b'data: {"model_name":"m","model_version":"1"}\n\n']
    assert not request.cancel.cancelled


# JSON goes through orjson where it writes the same text as `json`, and through `json` where
# it would not (non-finite floats, lone surrogates, integers past 64 bits).

def test_json_text_is_the_same_whichever_library_writes_it():
    from naiad.services.http.codec import dumps

    doc = {"id": "é\u2028\n\"\\", "n": [0, -1, 2**63 - 1], "f": [0.1, 1e-07, 1e22, -0.0, 3.4028234663852886e38],
           "b": [True, False, None], "nested": {"k": []}}
    assert json.loads(dumps(doc)) == doc  # exponents may be spelt 1e-7 or 1e-07; the values are the same
    plain = {"id": "é\u2028\n\"\\", "f": [0.1, 0.027547314763069153, -2.5], "n": [0, -1, 2**63 - 1]}
    assert dumps(plain) == json.dumps(plain, ensure_ascii=False, separators=(",", ":")).encode()
    assert dumps({"big": 2**70}) == b'{"big":1180591620717411303424}'
    assert dumps({"s": "\udcff"}) == '{"s":"\udcff"}'.encode("utf-8", "surrogateescape")


def test_non_finite_float_outputs_are_written_as_json_writes_them():
    arr = np.array([[np.nan, 1.5, np.inf]], dtype=np.float32)
    response = InferenceResponse("m", "1", [Tensor("OUT", "FP32", (1, 3), array=arr)])
    outputs = [httpclient.InferRequestedOutput("OUT", binary_data=False)]
    _, _, body = encode_infer(response, _decode(*_body([_input("IN", arr, "FP32", binary=False)], outputs))[1])
    assert b'"data":[NaN,1.5,Infinity]' in bytes(body)


def test_bodies_orjson_refuses_decode_as_before():
    body = b'{"inputs":[{"name":"IN","datatype":"INT64","shape":[1],"data":[NaN]}]}'
    with pytest.raises(InferenceError) as err:  # json took NaN; the datatype check refuses it
        _decode(body, None)
    assert "Unable to parse 'data'" in err.value.message
    body = b'{"inputs":[{"name":"IN","datatype":"FP64","shape":[2],"data":[1e400,-1e400]}]}'
    request, _ = _decode(body, None)
    assert list(request.inputs[0].array) == [np.inf, -np.inf]
