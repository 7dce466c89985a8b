"""One inference entry: every way a request reaches the models service keeps the same books.

The same mix of requests goes in through each entry of a real `naiad serve` — HTTP and gRPC
ModelInfer on the native front ends (native lanes, the task-less SubmitInfer path with
lanes off, and the awaited path they fall back to for a gzip body or while tracing), HTTP
on aiohttp, ModelInfer on grpcio, and ModelStreamInfer on both transports — and each leaves
the same deltas in the statistics API and in the request metrics, the ones Triton 24.04
would count:

- answered: a success (counts its execution and its inference);
- answered with an error by the model: a failure whose execution still counts;
- no response returned for the request (None in execute's list): the execution fails as a
  whole, a failure with no execution counted;
- classification: a success; asked of a BYTES output it fails the reply but, as Triton
  classifies in its front ends after the core counted the request, still a success;
- an output into a shared-memory region too small for it: the reply fails, the request
  is still a success (Triton's Python backend counts a response whose output could not
  be allocated as sent);
- an unknown requested output: refused before the model, counted nowhere;
- timed out or cancelled in the queue: counted in no statistic, only as a REJECTED or
  CANCELED failure metric;
- a decoupled model: refused by the unary entries before the model (counted nowhere);
  on a stream, ending with only the final flag is a success."""

from __future__ import annotations

import contextlib
import os
import re
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.metrics import scrape
from support.models import DELAYED_IDENTITY_MODEL, identity_config, write_model
from support.naiad_process import NaiadProcess
from support.shared_memory import shared_memory_module

try:
    from naiad.ext import _native_grpc  # noqa: F401
    from naiad.ext import _native_http  # noqa: F401
    NATIVE_MISSING = ""
except ImportError as exc:
    NATIVE_MISSING = f"native front ends not built here ({exc})"

TIMEOUT = 20.0

# Answers INPUT0 > 0 with OUTPUT0 (a copy) and LABEL (a string); INPUT0 < 0 with an error;
# INPUT0 == 0 with no response at all (None in the list), which fails the execution.
PICKY = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            t = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            if t[0] < 0:
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("refused")))
            elif t[0] == 0:
                out.append(None)
            else:
                out.append(pb_utils.InferenceResponse([
                    pb_utils.Tensor("OUTPUT0", t), pb_utils.Tensor("LABEL", np.array([b"x"], dtype=object))]))
        return out
'''

PICKY_CONFIG = '''
name: "picky"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 3 ] },
         { name: "LABEL" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
'''

# Sends INPUT0[0] responses, then the final flag alone.
DECOUPLED = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            t = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            sender = r.get_response_sender()
            for _ in range(int(t[0])):
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", t)]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''

# One instance busy for 0.5 s a request; a queued request may shorten the 10 s queue timeout
# (without a default, Triton has none) and time out (REJECT).
SLOW_CONFIG = identity_config("slow", dims="[ 1 ]", max_batch_size=1, extra='''
parameters [ { key: "delay" value: { string_value: "0.5" } } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
dynamic_batching { default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 10000000
                                          allow_timeout_override: true } }
''')

NATIVE = '[services.http]\ntransport = "native"\n{lanes}[services.grpc]\ntransport = "native"\n{lanes}'
TRANSPORTS = {
    "native": NATIVE.format(lanes=""),  # plain requests on native lanes (ext/frontend/lane.h)
    "native-nolanes": NATIVE.format(lanes="native_lanes = false\n"),  # on the task-less SubmitInfer path
    "python": '[services.http]\ntransport = "aiohttp"\n[services.grpc]\ntransport = "grpcio"\n',
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("entry_models")
    write_model(path, "picky", PICKY_CONFIG, PICKY)
    write_model(path, "slow", SLOW_CONFIG, DELAYED_IDENTITY_MODEL)
    write_model(path, "deco", identity_config("deco", dims="[ 1 ]", extra=(
        "model_transaction_policy { decoupled: true }\n")), DECOUPLED)
    return path


SMALL_REGION = "entry_small"  # 4 bytes: too small for picky's OUTPUT0 (12)


@pytest.fixture(scope="module")
def small_region():
    shm = shared_memory_module()
    key = f"/naiad_entry_{os.getpid()}"
    handle = shm.create_shared_memory_region(SMALL_REGION, key, 4)
    yield key
    shm.destroy_shared_memory_region(handle)


@pytest.fixture(scope="module")
def servers(repo, small_region, tmp_path_factory):
    """The servers of TRANSPORTS, each started on first use, with a trace file so that a
    test can switch tracing on."""
    started: dict[str, NaiadProcess] = {}

    def get(kind: str) -> NaiadProcess:
        if kind.startswith("native") and NATIVE_MISSING:
            pytest.skip(NATIVE_MISSING)
        proc = started.get(kind)
        if proc is None:
            work = tmp_path_factory.mktemp(f"entry_{kind}")
            proc = started[kind] = NaiadProcess(
                work, ["--model-repository", str(repo), f"--trace-config=triton,file={work / 'trace.json'}"],
                config=TRANSPORTS[kind])
            proc.start()
            httpclient.InferenceServerClient(proc.http_address).register_system_shared_memory(
                SMALL_REGION, small_region, 4)
        return proc

    yield get
    for proc in started.values():
        proc.kill_if_running()


# ------------------------------------------------------------------ how each entry sends --

SHAPES = {"picky": [3], "slow": [1, 1], "deco": [1]}


def _inputs(mod: Any, model: str, value: float) -> list:
    """INPUT0 of `model`'s shape, its first element `value`, the others 1, 2, ..."""
    shape = SHAPES[model]
    data = np.arange(np.prod(shape), dtype=np.float32)
    data[0] = value
    t = mod.InferInput("INPUT0", shape, "FP32")
    t.set_data_from_numpy(data.reshape(shape))
    return [t]


def _outputs(mod: Any, outputs: dict[str, int | str] | None) -> list | None:
    """Requested outputs: name -> class count, or name -> the shared-memory region (4 bytes)
    to write it into."""
    if outputs is None:
        return None
    wanted = []
    for name, how in outputs.items():
        out = mod.InferRequestedOutput(name, class_count=how if isinstance(how, int) else 0)
        if isinstance(how, str):
            out.set_shared_memory(how, 4)
        wanted.append(out)
    return wanted


def _http(gzip: bool = False) -> Callable:
    def send(server: NaiadProcess, model: str, value: float, outputs=None, timeout_us=None) -> dict:
        client = httpclient.InferenceServerClient(server.http_address, network_timeout=TIMEOUT)
        try:
            result = client.infer(model, _inputs(httpclient, model, value), outputs=_outputs(httpclient, outputs),
                                  timeout=timeout_us, request_compression_algorithm="gzip" if gzip else None)
            return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}
        finally:
            client.close()
    return send


def _grpc(server: NaiadProcess, model: str, value: float, outputs=None, timeout_us=None) -> dict:
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        result = client.infer(model, _inputs(grpcclient, model, value), outputs=_outputs(grpcclient, outputs),
                              timeout=timeout_us, client_timeout=TIMEOUT)
        return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


def _stream(server: NaiadProcess, model: str, value: float, outputs=None, timeout_us=None) -> dict:
    """One request on a ModelStreamInfer stream of its own: its one response (or error)."""
    got: queue.Queue = queue.Queue()
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        client.start_stream(callback=lambda result, error: got.put((result, error)))
        try:
            client.async_stream_infer(model, _inputs(grpcclient, model, value),
                                      outputs=_outputs(grpcclient, outputs), timeout=timeout_us)
            result, error = got.get(timeout=TIMEOUT)
        finally:
            client.stop_stream()
    if error is not None:
        raise error
    return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


# entry id: (server, send, traced). The native front ends hand plain requests to a lane
# where the model has one, others (classification, timeouts, ...) to the task-less
# SubmitInfer path, which a lanes-off server takes for all; traced requests and gzip
# bodies make them decline it for the awaited one. (Traced entries use the lanes-off
# server: a lane learns of tracing switched on elsewhere only a moment later.)
ENTRIES = {
    "http-native-lanes": ("native", _http(), False),
    "http-native-fast": ("native-nolanes", _http(), False),
    "http-native-gzip": ("native-nolanes", _http(gzip=True), False),
    "http-native-traced": ("native-nolanes", _http(), True),
    "http-aiohttp": ("python", _http(), False),
    "grpc-native-lanes": ("native", _grpc, False),
    "grpc-native-fast": ("native-nolanes", _grpc, False),
    "grpc-native-traced": ("native-nolanes", _grpc, True),
    "grpc-grpcio": ("python", _grpc, False),
    "stream-native": ("native", _stream, False),
    "stream-grpcio": ("python", _stream, False),
}


@contextlib.contextmanager
def _tracing(server: NaiadProcess, on: bool):
    if not on:
        yield
        return
    client = httpclient.InferenceServerClient(server.http_address)
    client.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"], "trace_rate": "1"})
    try:
        yield
    finally:
        client.update_trace_settings(settings={"trace_level": ["OFF"]})


# ------------------------------------------------------------------ what the books say --

def _books(server: NaiadProcess, model: str) -> dict[str, float]:
    client = httpclient.InferenceServerClient(server.http_address)
    s = client.get_inference_statistics(model)["model_stats"][0]
    samples = scrape(server)  # (the parser names a counter's samples <name>_total)

    def metric(name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in samples.items()
                   if n == name and ("model", model) in ls and all((k, x) in ls for k, x in labels.items()))

    return {"success": s["inference_stats"]["success"]["count"], "fail": s["inference_stats"]["fail"]["count"],
            "execution_count": s["execution_count"], "inference_count": s["inference_count"],
            "metric_success": metric("nv_inference_request_success_total"),
            "metric_failure": metric("nv_inference_request_failure_total"),
            "metric_rejected": metric("nv_inference_request_failure_total", reason="REJECTED"),
            "metric_canceled": metric("nv_inference_request_failure_total", reason="CANCELED")}


def _delta_after(server: NaiadProcess, model: str, before: dict, expected: dict) -> dict:
    """The books' change since `before`, once it reaches `expected` (an execution is
    counted when the instance returns, a moment after its reply left) or 5 s pass."""
    deadline = time.monotonic() + 5.0
    while True:
        now = _books(server, model)
        delta = {k: now[k] - before[k] for k in now}
        if delta == expected or time.monotonic() > deadline:
            return delta
        time.sleep(0.05)


def _fails(send: Callable, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InferenceServerException) as info:
        send(*args, **kwargs)
    return info.value.message()


# ------------------------------------------------------------------ the tests --

PICKY_BOOKS = {"success": 5, "fail": 2, "execution_count": 6, "inference_count": 5,
               "metric_success": 5, "metric_failure": 2, "metric_rejected": 0, "metric_canceled": 0}


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_every_entry_counts_the_same_mix_as_triton(servers, entry) -> None:
    kind, send, traced = ENTRIES[entry]
    server = servers(kind)
    before = _books(server, "picky")
    with _tracing(server, traced):
        assert send(server, "picky", 1.0)["OUTPUT0"].tolist() == [1.0, 1.0, 2.0]
        assert send(server, "picky", 2.0)["LABEL"].tolist() == [b"x"]
        assert "refused" in _fails(send, server, "picky", -1.0)
        assert "Expected an 'InferenceResponse' object" in _fails(send, server, "picky", 0.0)
        top = send(server, "picky", 3.0, outputs={"OUTPUT0": 2})["OUTPUT0"]
        assert [v.decode() if isinstance(v, bytes) else v for v in top.tolist()] == ["3.000000:0", "2.000000:2"]
        # The model answered; the reply fails; the request counts as the model answered it.
        assert _fails(send, server, "picky", 4.0, outputs={"LABEL": 1}) == (
            "class result not available for output due to unsupported type 'BYTES'")
        assert _fails(send, server, "picky", 6.0, outputs={"OUTPUT0": SMALL_REGION}) == (
            "shared memory size specified with the request for output 'OUTPUT0' (4 bytes) should be at least "
            "12 bytes to hold the results")
        assert _fails(send, server, "picky", 5.0, outputs={"NOPE": 0}) == (
            "unexpected inference output 'NOPE' for model 'picky'")
    assert _delta_after(server, "picky", before, PICKY_BOOKS) == PICKY_BOOKS


SLOW_BOOKS = {"success": 1, "fail": 0, "execution_count": 1, "inference_count": 1,
              "metric_success": 1, "metric_failure": 1, "metric_rejected": 1, "metric_canceled": 0}


@pytest.mark.parametrize("entry", ["http-native-lanes", "http-native-fast", "http-aiohttp", "grpc-native-lanes",
                                   "grpc-native-fast", "grpc-grpcio", "stream-native", "stream-grpcio"])
def test_a_request_timed_out_in_the_queue_counts_only_as_rejected(servers, entry) -> None:
    kind, send, _ = ENTRIES[entry]
    server = servers(kind)
    before = _books(server, "slow")
    with ThreadPoolExecutor(2) as pool:
        holder = pool.submit(send, server, "slow", 1.0)
        time.sleep(0.15)  # the holder is on the one instance; the next one queues
        queued = pool.submit(_fails, send, server, "slow", 2.0, timeout_us=100_000)
        assert queued.result(TIMEOUT) == "Request timeout expired"
        assert holder.result(TIMEOUT)["OUTPUT0"].tolist() == [[1.0]]
    assert _delta_after(server, "slow", before, SLOW_BOOKS) == SLOW_BOOKS


CANCELLED_BOOKS = {**SLOW_BOOKS, "metric_rejected": 0, "metric_canceled": 1}


@pytest.mark.parametrize("entry", ["grpc-native-lanes", "grpc-native-fast", "grpc-native-traced", "grpc-grpcio"])
def test_a_call_cancelled_in_the_queue_counts_only_as_canceled(servers, entry) -> None:
    kind, _, traced = ENTRIES[entry]
    server = servers(kind)
    before = _books(server, "slow")
    answers: queue.Queue = queue.Queue()
    with _tracing(server, traced), grpcclient.InferenceServerClient(server.grpc_address) as client:
        client.async_infer("slow", _inputs(grpcclient, "slow", 1.0), lambda result, error: answers.put(error))
        time.sleep(0.15)  # the holder is on the one instance; the next one queues
        call = client.async_infer("slow", _inputs(grpcclient, "slow", 2.0), lambda result, error: None)
        time.sleep(0.1)
        call.cancel()
        assert answers.get(timeout=TIMEOUT) is None
    assert _delta_after(server, "slow", before, CANCELLED_BOOKS) == CANCELLED_BOOKS


NOTHING = {"success": 0, "fail": 0, "execution_count": 0, "inference_count": 0,
           "metric_success": 0, "metric_failure": 0, "metric_rejected": 0, "metric_canceled": 0}


@pytest.mark.parametrize("entry", ["http-native-lanes", "http-native-fast", "http-native-gzip", "http-aiohttp",
                                   "grpc-native-lanes", "grpc-native-fast", "grpc-native-traced", "grpc-grpcio"])
def test_unary_entries_refuse_a_decoupled_model_before_counting(servers, entry) -> None:
    kind, send, traced = ENTRIES[entry]
    server = servers(kind)
    before = _books(server, "deco")
    where = "HTTP end point" if entry.startswith("http") else "ModelInfer RPC"
    with _tracing(server, traced):
        # Refused before the request is read: one asking for an unknown output too.
        for outputs in (None, {"NOPE": 0}):
            assert _fails(send, server, "deco", 1.0, outputs=outputs) == (
                f"{where} doesn't support models with decoupled transaction policy")
    assert _delta_after(server, "deco", before, NOTHING) == NOTHING


@pytest.mark.parametrize("kind", ["native", "python"])
def test_a_decoupled_request_ending_with_only_the_final_flag_is_a_success(servers, kind) -> None:
    server = servers(kind)
    before = _books(server, "deco")
    for n in (0, 2):
        got: queue.Queue = queue.Queue()
        with grpcclient.InferenceServerClient(server.grpc_address) as client:
            client.start_stream(callback=lambda result, error: got.put((result, error)))
            try:
                client.async_stream_infer("deco", _inputs(grpcclient, "deco", float(n)),
                                          enable_empty_final_response=True)
                outputs = 0
                while True:
                    result, error = got.get(timeout=TIMEOUT)
                    assert error is None
                    response = result.get_response()
                    outputs += bool(response.outputs)
                    if response.parameters["triton_final_response"].bool_param:
                        break
            finally:
                client.stop_stream()
        assert outputs == n
    expected = {**NOTHING, "success": 2, "execution_count": 2, "inference_count": 2, "metric_success": 2}
    assert _delta_after(server, "deco", before, expected) == expected


def test_the_lanes_entry_took_lanes(servers) -> None:
    """Last (it stops the server): the plain calls of the "lanes" entries above, and these
    two, were answered on lanes — the books above are the lanes' books."""
    server = servers("native")
    for value in (1.0, -1.0):
        with contextlib.suppress(InferenceServerException):
            _grpc(server, "picky", value)
    server.stop()
    served = [int(n) for n in re.findall(r"gRPC: (\d+) ModelInfer call\(s\) answered on native lanes",
                                         server.logs())]
    if not served:
        pytest.skip("this build's gRPC front end has no native lanes")
    assert served[-1] >= 2
