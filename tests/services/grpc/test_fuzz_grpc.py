"""Fuzzing ModelInfer on a real `naiad serve`, on both gRPC transports: the native front end
(whose C++ decoder takes requests in perf_analyzer's shape — raw tensors, no parameters —
and hands the rest to the Python decoder) and grpcio (the Python decoder only).

Inputs are `ModelInferRequest`s built by hypothesis near what clients send (typed contents
and raw tensors, parameters, shared-memory references, outputs), serialized, and each also
sent as byte-level mutations of its wire form. Property, for every input: an answer comes
within a few seconds; it is OK or a status Triton's decoders give (INVALID_ARGUMENT,
NOT_FOUND, UNAVAILABLE, UNIMPLEMENTED; INTERNAL only for bytes that are not a
ModelInferRequest, gRPC's own answer then); no message carries a Python exception's text.
After each target the process lives and tritonclient's inference returns the right tensor.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import strategies as st

from support.fuzzing import python_leak, run_target, serve
from support.grpc_models import identity_all
from support.naiad_process import NaiadProcess

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2  # noqa: E402

TIMEOUT = 5.0
SHORT = 480  # inputs per target in the normal suite
METHOD = "/inference.GRPCInferenceService/ModelInfer"
WIRE_TYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
              "FP16", "FP32", "FP64", "BYTES", "BF16"]
ANSWERS = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED}


@pytest.fixture(scope="module", params=["native", "grpcio"])
def server(request, tmp_path_factory):
    repo = tmp_path_factory.mktemp("fuzz_grpc_models")
    identity_all(repo)  # one Python stub: every datatype, each input optional
    proc = serve(tmp_path_factory, repo, "grpc", request.param, "naiad.ext._native_grpc")
    yield proc
    proc.kill_if_running()


def assert_still_serving(server: NaiadProcess) -> None:
    assert server.proc.poll() is None, f"naiad died during the fuzz run:\n{server.logs()[-4000:]}"
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        values = np.arange(8, dtype=np.float32)
        x = grpcclient.InferInput("IN_FP32", [8], "FP32")
        x.set_data_from_numpy(values)
        result = client.infer("identity_all", [x], client_timeout=TIMEOUT)
        np.testing.assert_array_equal(result.as_numpy("OUT_FP32"), values)


# ------------------------------------------------------------------ requests --

_names = st.one_of(st.sampled_from([f"IN_{t}" for t in WIRE_TYPES] + ["INPUT0", "OUT_FP32", ""]), st.text(max_size=8))
_datatypes = st.one_of(st.sampled_from(WIRE_TYPES), st.text(max_size=6))
_shapes = st.lists(st.one_of(st.integers(-2, 6), st.sampled_from([1 << 31, 1 << 62, (1 << 63) - 1, -(1 << 63)])),
                   max_size=4)
_KEYS = ["sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "binary_data_output",
         "triton_enable_empty_final_response", "triton_x", "shared_memory_region", "shared_memory_byte_size",
         "shared_memory_offset", "classification", "binary_data", "k", ""]


@st.composite
def _parameter(draw, p) -> None:
    """Fill one InferParameter with one of its oneof choices."""
    choice = draw(st.sampled_from(["bool", "int64", "uint64", "string", "double", "none"]))
    if choice == "bool":
        p.bool_param = draw(st.booleans())
    elif choice == "int64":
        p.int64_param = draw(st.integers(-(1 << 63), (1 << 63) - 1))
    elif choice == "uint64":
        p.uint64_param = draw(st.integers(0, (1 << 64) - 1))
    elif choice == "string":
        p.string_param = draw(st.text(max_size=10))
    elif choice == "double":
        p.double_param = draw(st.floats())


@st.composite
def _parameters(draw, target) -> None:
    for key in draw(st.lists(st.sampled_from(_KEYS), max_size=3, unique=True)):
        draw(_parameter(target[key]))


_CONTENTS = {
    "bool_contents": st.lists(st.booleans(), max_size=8),
    "int_contents": st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=8),
    "int64_contents": st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=8),
    "uint_contents": st.lists(st.integers(0, (1 << 32) - 1), max_size=8),
    "uint64_contents": st.lists(st.integers(0, (1 << 64) - 1), max_size=8),
    "fp32_contents": st.lists(st.floats(width=32), max_size=8),
    "fp64_contents": st.lists(st.floats(), max_size=8),
    "bytes_contents": st.lists(st.binary(max_size=8), max_size=4),
}


@st.composite
def infer_requests(draw) -> bytes:
    """A serialized ModelInferRequest: in the native decoder's shape (raw tensors only) half
    the time, otherwise with typed contents, parameters and outputs mixed in."""
    msg = service_pb2.ModelInferRequest()
    msg.model_name = draw(st.one_of(st.sampled_from(["identity_all", "identity_all", "nope"]), st.text(max_size=8)))
    msg.model_version = draw(st.sampled_from(["", "", "1", "2", "-1", "x"]))
    if draw(st.booleans()):
        msg.id = draw(st.text(max_size=8))
    plain = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        t = msg.inputs.add()
        t.name = draw(_names)
        t.datatype = draw(_datatypes)
        t.shape.extend(draw(_shapes))
        if plain or draw(st.booleans()):
            shape = list(t.shape)
            count = int(np.prod(shape)) if all(0 <= d <= 8 for d in shape) else 1
            size = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
                    "UINT64": 8, "INT64": 8, "FP64": 8}.get(t.datatype, 4) * count
            msg.raw_input_contents.append(draw(st.one_of(st.just(bytes(size)), st.binary(max_size=40))))
        if not plain:
            for field in draw(st.lists(st.sampled_from(list(_CONTENTS)), max_size=2, unique=True)):
                getattr(t.contents, field).extend(draw(_CONTENTS[field]))
            draw(_parameters(t.parameters))
    if not plain:
        for _ in range(draw(st.integers(0, 2))):  # raw entries with no input to carry them
            msg.raw_input_contents.append(draw(st.binary(max_size=16)))
        draw(_parameters(msg.parameters))
        for _ in range(draw(st.integers(0, 2))):
            out = msg.outputs.add()
            out.name = draw(_names)
            draw(_parameters(out.parameters))
    return msg.SerializeToString()


def _parses(raw: bytes) -> bool:
    try:
        service_pb2.ModelInferRequest.FromString(raw)
        return True
    except Exception:  # protobuf's DecodeError and its kin: not a ModelInferRequest
        return False


def checker(channel: grpc.Channel):
    """Send one input as a ModelInfer message's bytes and check the answer; returns the
    status code and details."""
    call = channel.unary_unary(METHOD)  # bytes in, bytes out: the server decodes

    def check(raw: bytes) -> tuple[grpc.StatusCode, str]:
        try:
            call(raw, timeout=TIMEOUT)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
        assert code is not grpc.StatusCode.DEADLINE_EXCEEDED, "no answer: the server hangs on this input"
        allowed = ANSWERS if _parses(raw) else ANSWERS | {grpc.StatusCode.INTERNAL}
        assert code in allowed, f"{code.name}: {details}"
        leak = python_leak(details)
        assert leak is None, f"a Python exception's text ({leak}) in {code.name}: {details}"
        return code, details

    return check


def test_fuzz_model_infer(server):
    with grpc.insecure_channel(server.grpc_address) as channel:
        run_target(f"grpc-modelinfer-{server.transport}", infer_requests(), checker(channel), SHORT)
    assert_still_serving(server)


# Inputs the fuzz runs found mis-handled (each failed before its fix): a model name that is
# not UTF-8 (native: INTERNAL "UnicodeDecodeError: ..."), bytes that are no message (grpcio:
# UNKNOWN "Unexpected <class 'google.protobuf.message.DecodeError'>").
REGRESSIONS = [("name-not-utf8", b"\n\x0cident\xe9t}_al:"), ("not-a-message", b"\n\x0cideltkty_a\x7f\x86X\x95C\xe4")]


@pytest.mark.parametrize("name,raw", REGRESSIONS, ids=[r[0] for r in REGRESSIONS])
def test_fuzz_regression(server, name, raw):
    with grpc.insecure_channel(server.grpc_address) as channel:
        code, details = checker(channel)(raw)
    assert (code, details) == (grpc.StatusCode.INTERNAL, "failed to parse the ModelInfer request")
    with grpc.insecure_channel(server.grpc_address) as channel:  # the same on a stream
        replies = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")(iter([raw]), timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError) as caught:
            list(replies)
    assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.INTERNAL,
                                                             "failed to parse the ModelStreamInfer request")
