"""The native gRPC front end's lanes (ext/frontend/lane.h): plain ModelInfer calls go from
the native thread straight to the model's batch queue and are answered natively. Against
two real `naiad serve` processes, one with lanes (the default) and one with
`native_lanes = false`, with real clients: every reply and every error must be the same,
byte for byte, and the lanes server must say it answered exactly the plain calls on lanes."""

from __future__ import annotations

import itertools
import queue
import re
import time

import grpc
import numpy as np
import pytest

from support.models import write_model
from support.naiad_process import NaiadProcess

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2  # noqa: E402

TIMEOUT = 10.0
INFER = "/inference.GRPCInferenceService/ModelInfer"

# Two inputs, three outputs, batched by the dynamic batcher. A[0,0] == -1: the model's
# error; -2: it sleeps (a call to cancel); -3: it waits up to 2 s for is_cancelled() and
# leaves "cancelled-<id>" when it sees it; B[0,0] == 7: response parameters.
LANES_CONFIG = '''
backend: "python"
max_batch_size: 4
input [ { name: "A" data_type: TYPE_FP32 dims: [ -1 ] },
        { name: "B" data_type: TYPE_INT32 dims: [ 3 ] } ]
output [ { name: "SUM" data_type: TYPE_FP32 dims: [ -1 ] },
         { name: "NEG" data_type: TYPE_INT32 dims: [ 3 ] },
         { name: "ECHO" data_type: TYPE_FP32 dims: [ -1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
'''
LANES_MODEL = '''
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.dir = args["model_repository"]

    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "A").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "B").as_numpy()
            if a.size and a.flat[0] == -1:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("A starts with -1: refused (\u00e9)", pb_utils.TritonError.INVALID_ARG)))
                continue
            if a.size and a.flat[0] == -2:
                time.sleep(0.5)
            if a.size and a.flat[0] == -3:
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline and not request.is_cancelled():
                    time.sleep(0.01)
                if request.is_cancelled():
                    open(os.path.join(self.dir, "cancelled-" + request.request_id()), "w").close()
                    responses.append(pb_utils.InferenceResponse(
                        error=pb_utils.TritonError("cancelled", pb_utils.TritonError.CANCELLED)))
                    continue
            params = None
            if b.flat[0] == 7:
                params = {"lucky": True, "rows": int(b.shape[0]), "ratio": 0.25, "word": "sept"}
            outs = [pb_utils.Tensor("SUM", (a * 2 + b.sum(axis=1, keepdims=True)).astype(np.float32)),
                    pb_utils.Tensor("NEG", (-b).astype(np.int32)),
                    pb_utils.Tensor("ECHO", a.copy())]
            responses.append(pb_utils.InferenceResponse(outs, parameters=params))
        return responses
'''
# No batch dimension, the default batcher.
PLAIN_CONFIG = '''
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 2, 2 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2, 2 ] } ]
'''
PLAIN_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() + 1)]) for r in requests]
'''

# Calls the lanes server must have answered on lanes: [at least, at most] (cancelled calls
# count once they reached the queue).
EXPECTED = [0, 0]
REPO_DIRS: list = []


def _expect(n: int = 1, maybe: int = 0) -> None:
    EXPECTED[0] += n
    EXPECTED[1] += n + maybe


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    repo = tmp_path_factory.mktemp("lane_models")
    REPO_DIRS[:] = [repo]
    write_model(repo, "lanes", LANES_CONFIG.strip() + "\n", LANES_MODEL)
    write_model(repo, "plain", PLAIN_CONFIG.strip() + "\n", PLAIN_MODEL)
    trace = tmp_path_factory.mktemp("lane_trace") / "trace.json"
    on = NaiadProcess(tmp_path_factory.mktemp("lanes_on"),
                      ["--model-repository", str(repo), f"--trace-config=triton,file={trace}"])
    off = NaiadProcess(tmp_path_factory.mktemp("lanes_off"), ["--model-repository", str(repo)],
                       config="[services.grpc]\nnative_lanes = false\n")
    on.start()
    off.start()
    yield on, off
    on.kill_if_running()
    off.kill_if_running()


@pytest.fixture(scope="module")
def channels(servers):
    chans = [grpc.insecure_channel(s.grpc_address) for s in servers]
    yield [c.unary_unary(INFER, request_serializer=None, response_deserializer=None) for c in chans]
    for c in chans:
        c.close()


def infer_request(model: str, inputs: list, version: str = "", rid: str = "", outputs=None) -> bytes:
    """A ModelInferRequest as the clients send it: no parameters, raw_input_contents."""
    req = service_pb2.ModelInferRequest(model_name=model, model_version=version, id=rid)
    for name, datatype, shape, raw in inputs:
        t = req.inputs.add()
        t.name, t.datatype = name, datatype
        t.shape.extend(shape)
        req.raw_input_contents.append(raw)
    for name in outputs or ():
        req.outputs.add().name = name
    return req.SerializeToString()


def lanes_inputs(batch: int, width: int, seed: int, b0: int | None = None) -> list:
    a = (np.arange(batch * width, dtype=np.float32).reshape(batch, width) + seed) / 4
    b = (np.arange(batch * 3, dtype=np.int32).reshape(batch, 3) * (seed + 1)) % 50
    if b0 is not None:
        b[0, 0] = b0
    return [("A", "FP32", [batch, width], a.tobytes()), ("B", "INT32", [batch, 3], b.tobytes())]


def call(stub, body: bytes):
    """(None, reply bytes) or ((code, details), None)."""
    try:
        return None, stub(body, timeout=TIMEOUT)
    except grpc.RpcError as exc:
        return (exc.code(), exc.details()), None


def both(channels, body: bytes):
    return [call(stub, body) for stub in channels]


def parse(raw: bytes):
    return service_pb2.ModelInferResponse.FromString(raw)


def lane_served(proc: NaiadProcess) -> int:
    """Stops `proc` and reads what its gRPC service said it answered on lanes."""
    assert proc.stop() == 0
    found = re.findall(r"gRPC: (\d+) ModelInfer call\(s\) answered on native lanes", proc.logs())
    assert found, proc.logs()[-2000:]
    return int(found[-1])


# ------------------------------------------------------------------ replies --

def test_replies_are_identical_with_and_without_lanes(channels):
    ids = ["", "req-ü-✓-日本"]
    combos = itertools.product((1, 2, 3, 4), (1, 5, 0), ("", "1"), ids, (None, ["SUM"], ["ECHO", "NEG"]))
    for n, (batch, width, version, rid, outputs) in enumerate(combos):
        body = infer_request("lanes", lanes_inputs(batch, width, n), version, f"{rid}{n}" if rid else "", outputs)
        (err_on, on), (err_off, off) = both(channels, body)
        assert err_on is None and err_off is None, (err_on, err_off)
        assert on == off, (batch, width, version, outputs)  # byte for byte
        reply = parse(on)
        names = [o.name for o in reply.outputs]
        assert names == (outputs and [o for o in ("SUM", "NEG", "ECHO") if o in outputs] or ["SUM", "NEG", "ECHO"])
        assert reply.model_name == "lanes" and reply.model_version == "1"
        _expect()
    # the values are the model's, for this request's data
    body = infer_request("lanes", lanes_inputs(2, 3, 5), rid="vals")
    (_, on), _ = both(channels, body)
    _expect()
    reply = parse(on)
    a = (np.arange(6, dtype=np.float32).reshape(2, 3) + 5) / 4
    b = (np.arange(6, dtype=np.int32).reshape(2, 3) * 6) % 50
    got = {o.name: raw for o, raw in zip(reply.outputs, reply.raw_output_contents)}
    np.testing.assert_array_equal(np.frombuffer(got["SUM"], np.float32).reshape(2, 3), a * 2 + b.sum(1, keepdims=True))
    np.testing.assert_array_equal(np.frombuffer(got["NEG"], np.int32).reshape(2, 3), -b)
    assert reply.id == "vals"


def test_model_without_batching(channels):
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    for version in ("", "1"):
        body = infer_request("plain", [("X", "FP32", [2, 2], x.tobytes())], version, "p")
        (err_on, on), (err_off, off) = both(channels, body)
        assert err_on is None and err_off is None and on == off
        assert np.frombuffer(parse(on).raw_output_contents[0], np.float32).tolist() == [1, 2, 3, 4]
        _expect()


def test_response_parameters(channels):
    body = infer_request("lanes", lanes_inputs(2, 2, 1, b0=7), rid="params")
    (err_on, on), (err_off, off) = both(channels, body)
    assert err_on is None and err_off is None
    _expect()
    on_reply, off_reply = parse(on), parse(off)
    assert on_reply == off_reply  # the parameter map's order on the wire is the encoder's
    params = on_reply.parameters
    assert params["lucky"].bool_param is True and params["rows"].int64_param == 2
    assert params["ratio"].double_param == 0.25 and params["word"].string_param == "sept"


def test_model_error_is_the_same(channels):
    a = np.array([[-1, 0]], dtype=np.float32)
    body = infer_request("lanes", [("A", "FP32", [1, 2], a.tobytes()), ("B", "INT32", [1, 3], bytes(12))], rid="x")
    (err_on, _), (err_off, _) = both(channels, body)
    _expect()
    assert err_on is not None and err_on == err_off
    assert err_on[0] == grpc.StatusCode.INVALID_ARGUMENT and "refused (é)" in err_on[1]


# ------------------------------------------------------------------ bad requests --

def _bad_requests() -> dict[str, bytes]:
    good = lanes_inputs(2, 3, 1)
    a, b = good
    return {
        "unknown input": infer_request("lanes", good + [("C", "FP32", [2, 1], bytes(8))]),
        "wrong datatype": infer_request("lanes", [a, ("B", "INT64", [2, 3], bytes(48))]),
        "wrong datatype same size": infer_request("lanes", [a, ("B", "FP32", [2, 3], bytes(24))]),
        "wrong shape": infer_request("lanes", [a, ("B", "INT32", [2, 4], bytes(32))]),
        "wrong byte size": infer_request("lanes", [a, ("B", "INT32", [2, 3], bytes(20))]),
        "missing input": infer_request("lanes", [a]),
        "unknown output": infer_request("lanes", good, outputs=["NOPE"]),
        "output twice": infer_request("lanes", good, outputs=["SUM", "SUM"]),
        "batch over max": infer_request("lanes", lanes_inputs(5, 3, 1)),
        "batch sizes differ": infer_request("lanes", [a, ("B", "INT32", [1, 3], bytes(12))]),
        "no batch dimension": infer_request("lanes", [("A", "FP32", [3], bytes(12)), ("B", "INT32", [3], bytes(12))]),
        "input twice": infer_request("lanes", [a, a, b]),
        "unknown version": infer_request("lanes", good, version="9"),
        "unknown model": infer_request("nope", good),
        "plain wrong shape": infer_request("plain", [("X", "FP32", [4], bytes(16))]),
        "plain batch dimension": infer_request("plain", [("X", "FP32", [1, 2, 2], bytes(16))]),
    }


# Odd but valid: the lane declines it (Python's rules decide), and Python serves it.
ACCEPTED = {"output twice"}


@pytest.mark.parametrize("case", list(_bad_requests()))
def test_bad_request_same_status_and_message(channels, case):
    (err_on, on), (err_off, off) = both(channels, _bad_requests()[case])
    assert (err_off is None) == (case in ACCEPTED), err_off
    assert err_on == err_off
    assert on == off


# ------------------------------------------------------------------ concurrency --

def test_many_concurrent_calls_get_their_own_answers(servers):
    on, _ = servers
    done: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(on.grpc_address)
    try:
        sent = {}
        for i in range(32):
            batch, width = 1 + i % 4, 1 + i % 3
            a = np.full((batch, width), i, dtype=np.float32)
            b = np.full((batch, 3), i, dtype=np.int32)
            ia = grpcclient.InferInput("A", [batch, width], "FP32")
            ia.set_data_from_numpy(a)
            ib = grpcclient.InferInput("B", [batch, 3], "INT32")
            ib.set_data_from_numpy(b)
            sent[f"c{i}"] = (a, b)
            client.async_infer("lanes", [ia, ib], callback=lambda result, error: done.put((result, error)), request_id=f"c{i}")
        for _ in range(32):
            result, error = done.get(timeout=TIMEOUT)
            assert error is None, error
            a, b = sent.pop(result.get_response().id)
            np.testing.assert_array_equal(result.as_numpy("ECHO"), a)
            np.testing.assert_array_equal(result.as_numpy("SUM"), a * 2 + b.sum(1, keepdims=True))
            np.testing.assert_array_equal(result.as_numpy("NEG"), -b)
        assert not sent
        _expect(32)
    finally:
        client.close()


def _sleepy_inputs(first: float = -2) -> list:
    a = grpcclient.InferInput("A", [1, 1], "FP32")
    a.set_data_from_numpy(np.array([[first]], dtype=np.float32))
    b = grpcclient.InferInput("B", [1, 3], "INT32")
    b.set_data_from_numpy(np.zeros((1, 3), dtype=np.int32))
    return [a, b]


def _still_serves(proc: NaiadProcess) -> None:
    with grpcclient.InferenceServerClient(proc.grpc_address) as client:
        a = grpcclient.InferInput("A", [1, 2], "FP32")
        a.set_data_from_numpy(np.array([[1, 2]], dtype=np.float32))
        b = grpcclient.InferInput("B", [1, 3], "INT32")
        b.set_data_from_numpy(np.array([[1, 1, 1]], dtype=np.int32))
        result = client.infer("lanes", [a, b], request_id="after")
        assert result.as_numpy("SUM").tolist() == [[5, 7]]
    _expect()


def test_cancelled_call_and_server_keeps_serving(servers):
    on, _ = servers
    done: queue.Queue = queue.Queue()
    with grpcclient.InferenceServerClient(on.grpc_address) as client:
        ctx = client.async_infer("lanes", _sleepy_inputs(), callback=lambda result, error: done.put(error), request_id="cancel")
        time.sleep(0.1)
        ctx.cancel()
        error = done.get(timeout=TIMEOUT)
        assert error is not None and "CANCELLED" in error.status(), (error.status(), error.message())
    _expect(0, maybe=1)
    _still_serves(on)


@pytest.mark.parametrize("which", [0, 1], ids=["lanes", "no-lanes"])
def test_cancel_reaches_the_model(servers, which):
    proc = servers[which]
    rid = f"seen-{which}"
    done: queue.Queue = queue.Queue()
    with grpcclient.InferenceServerClient(proc.grpc_address) as client:
        ctx = client.async_infer("lanes", _sleepy_inputs(-3), callback=lambda result, error: done.put(error),
                                 request_id=rid)
        time.sleep(0.2)
        ctx.cancel()
        assert done.get(timeout=TIMEOUT) is not None
    if which == 0:
        _expect(0, maybe=1)
    marker = REPO_DIRS[0] / "lanes" / f"cancelled-{rid}"
    deadline = time.monotonic() + 3
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the model never saw is_cancelled()"


def test_client_gone_before_its_answer(servers):
    on, _ = servers
    client = grpcclient.InferenceServerClient(on.grpc_address)
    client.async_infer("lanes", _sleepy_inputs(), callback=lambda result, error: None, request_id="gone")
    time.sleep(0.1)
    client.close()
    _expect(0, maybe=1)
    time.sleep(0.6)  # its answer comes to a call that is over
    _still_serves(on)


def test_shutdown_waits_for_calls_on_lanes(tmp_path):
    """SIGTERM while a call is on a lane: the kernel's drain counts it and waits for its
    answer; calls after the drain began take Python, which refuses them."""
    repo = tmp_path / "models"
    write_model(repo, "lanes", LANES_CONFIG.strip() + "\n", LANES_MODEL)
    proc = NaiadProcess(tmp_path / "server", ["--model-repository", str(repo)])
    proc.start()
    try:
        done: queue.Queue = queue.Queue()
        with grpcclient.InferenceServerClient(proc.grpc_address) as client:
            client.async_infer("lanes", _sleepy_inputs(), callback=lambda result, error: done.put((result, error)),
                               request_id="drained")
            time.sleep(0.15)
            proc.signal()
            result, error = done.get(timeout=TIMEOUT)
            assert error is None, error
            assert result.as_numpy("ECHO").tolist() == [[-2]]
        assert proc.wait(30) == 0
        logs = proc.logs()
        assert "Found 1 live models and 1 in-flight" in logs, logs
        assert "gRPC: 1 ModelInfer call(s) answered on native lanes" in logs
    finally:
        proc.kill_if_running()


# ------------------------------------------------------------------ what lanes leave alone --

def test_stream_is_untouched_by_lanes(servers):
    on, off = servers
    replies = []
    for proc in (on, off):
        got: queue.Queue = queue.Queue()
        with grpcclient.InferenceServerClient(proc.grpc_address) as client:
            client.start_stream(callback=lambda result, error: got.put((result, error)))
            for i in range(3):
                a = grpcclient.InferInput("A", [1, 2], "FP32")
                a.set_data_from_numpy(np.array([[i, i]], dtype=np.float32))
                b = grpcclient.InferInput("B", [1, 3], "INT32")
                b.set_data_from_numpy(np.array([[i, 0, 0]], dtype=np.int32))
                client.async_stream_infer("lanes", [a, b], request_id=f"s{i}")
            out = [got.get(timeout=TIMEOUT) for _ in range(3)]
            client.stop_stream()
        assert all(e is None for _, e in out)
        replies.append(sorted((r.get_response().id, r.as_numpy("SUM").tolist()) for r, _ in out))
    assert replies[0] == replies[1] == [(f"s{i}", [[3 * i, 3 * i]]) for i in range(3)]


def test_tracing_turns_lanes_off(servers, channels):
    on, _ = servers
    with grpcclient.InferenceServerClient(on.grpc_address) as client:
        client.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"], "trace_rate": "1"})
        try:
            for i in range(3):
                err, reply = call(channels[0], infer_request("lanes", lanes_inputs(1, 2, i), rid=f"traced{i}"))
                assert err is None and parse(reply).id == f"traced{i}"
        finally:
            client.update_trace_settings(settings={"trace_level": ["OFF"]})
    err, _ = call(channels[0], infer_request("lanes", lanes_inputs(1, 2, 9), rid="untraced"))
    assert err is None
    _expect()


def test_lanes_answered_exactly_the_plain_calls(servers, channels):
    """(Last: stops both servers.) Bad requests, streams and traced calls took Python."""
    on, off = servers
    if EXPECTED[1] == 0:  # run alone
        for i in range(3):
            assert call(channels[0], infer_request("lanes", lanes_inputs(1, 1, i)))[0] is None
            _expect()
    served = lane_served(on)
    assert EXPECTED[0] <= served <= EXPECTED[1], (served, EXPECTED)
    assert lane_served(off) == 0
