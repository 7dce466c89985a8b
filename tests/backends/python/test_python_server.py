"""The Python backend as Triton 24.04 runs it, seen through a real server and real clients:
the stub's sys.argv, error texts, the server log, async BLS concurrency, the live verbose
level and custom metrics on /metrics."""

from __future__ import annotations

import json
import queue
import re
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.models import write_model
from support.naiad_process import NaiadProcess, http_get

TIMEOUT = 30.0

_FP32_IO = '''
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
'''
_DECOUPLED = "model_transaction_policy { decoupled: true }\n"

# Runs its own unit tests with unittest.main(), as Triton's QA models do; answers 1 on success.
UNITTEST_MODEL = '''
import sys
import unittest
import numpy as np
import triton_python_backend_utils as pb_utils


class ArgvTest(unittest.TestCase):
    def test_argv(self):
        self.assertEqual(sys.argv, [""])


class TritonPythonModel:
    def execute(self, requests):
        ok = unittest.main("model", exit=False).result.wasSuccessful()
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([float(ok)], np.float32))])
                for _ in requests]
'''

# How it fails is chosen by the request's IN value.
FAILING_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        mode = int(pb_utils.get_input_tensor_by_name(requests[0], "IN").as_numpy()[0])
        if mode == 0:
            return self.fail()
        if mode == 1:
            return None
        if mode == 2:
            return [None]
        return []

    def fail(self):
        raise ValueError("boom")
'''

DECOUPLED_FAILING_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        if pb_utils.get_input_tensor_by_name(requests[0], "IN").as_numpy()[0] == 0:
            raise RuntimeError("decoupled boom")
        return []
'''

ASYNC_RAISING_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        for request in requests:
            request.get_response_sender().send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        raise ValueError("wait_secs cannot be negative")
'''

# Counts how many of its executions overlap; each waits (bounded) until `WANT` are in at once
# and answers the largest overlap it saw.
OVERLAP_MODEL = '''
import asyncio
import numpy as np
import triton_python_backend_utils as pb_utils

WANT = 3


class TritonPythonModel:
    def initialize(self, args):
        self.running = 0
        self.peak = 0

    async def execute(self, requests):
        self.running += 1
        self.peak = max(self.peak, self.running)
        for _ in range(1000):
            if self.peak >= WANT:
                break
            await asyncio.sleep(0.01)
        self.running -= 1
        for request in requests:
            sender = request.get_response_sender()
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([self.peak], np.float32))]),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''

# The pattern of Triton's async_execute_decouple_bls: await a decoupled async_exec, then
# iterate the responses with a plain `for`.
ASYNC_BLS_MODEL = '''
import asyncio
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def _one(self, request):
        bls = pb_utils.InferenceRequest(
            model_name="overlap", inputs=[pb_utils.get_input_tensor_by_name(request, "IN")],
            requested_output_names=["OUT"])
        responses = await bls.async_exec(decoupled=True)
        sender = request.get_response_sender()
        for response in responses:
            if response.has_error():
                raise pb_utils.TritonModelException(response.error().message())
            out = pb_utils.get_output_tensor_by_name(response, "OUT")
            if out is not None:
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", out.as_numpy())]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    async def execute(self, requests):
        await asyncio.gather(*[self._one(r) for r in requests])
        return None
'''

LOGGING_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            pb_utils.Logger.log_verbose(f"verbose-mark-{n}")
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.zeros(1, np.float32))]) for _ in requests]
'''

METRICS_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.family = pb_utils.MetricFamily(
            name="naiad_test_requests", description="requests seen by the model",
            kind=pb_utils.MetricFamily.COUNTER)
        self.requests = self.family.Metric(labels={"model": args["model_name"], "kind": "e2e"})
        self.gauges = pb_utils.MetricFamily(
            name="naiad_test_last_value", description="the last input", kind=pb_utils.MetricFamily.GAUGE)
        self.last = self.gauges.Metric(labels={})

    def execute(self, requests):
        out = []
        for request in requests:
            value = float(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            self.requests.increment(1)
            self.last.set(value)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([self.requests.value()], np.float32))]))
        return out
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("python_server")
    repo = root / "models"
    write_model(repo, "unittest_model", _FP32_IO, UNITTEST_MODEL)
    write_model(repo, "failing", _FP32_IO, FAILING_MODEL)
    write_model(repo, "decoupled_failing", _FP32_IO + _DECOUPLED, DECOUPLED_FAILING_MODEL)
    write_model(repo, "async_raising", _FP32_IO + _DECOUPLED, ASYNC_RAISING_MODEL)
    write_model(repo, "overlap", _FP32_IO + _DECOUPLED, OVERLAP_MODEL)
    write_model(repo, "async_bls", _FP32_IO + _DECOUPLED, ASYNC_BLS_MODEL)
    write_model(repo, "logging_model", _FP32_IO, LOGGING_MODEL)
    write_model(repo, "metrics_model", _FP32_IO, METRICS_MODEL)
    proc = NaiadProcess(root, [f"--model-repository={repo}", "--model-control-mode=explicit", "--load-model=*"])
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        proc.kill_if_running()


def _fp32(value: float, client=httpclient) -> list:
    inp = client.InferInput("IN", [1], "FP32")
    inp.set_data_from_numpy(np.array([value], np.float32))
    return [inp]


def _log_contains(server: NaiadProcess, text: str, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.logs():
            return True
        time.sleep(0.05)
    return False


def _stream(server: NaiadProcess, model: str, values: list[float], want: int) -> list:
    """Send `values` on one gRPC stream; the first `want` callbacks as (result, error)."""
    got: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_address)
    client.start_stream(callback=lambda result, error: got.put((result, error)))
    try:
        for v in values:
            client.async_stream_infer(model, _fp32(v, grpcclient))
        return [got.get(timeout=TIMEOUT) for _ in range(want)]
    finally:
        client.stop_stream()
        client.close()


def test_a_model_calling_unittest_main_sees_the_embedded_argv(server) -> None:
    with httpclient.InferenceServerClient(server.http_address) as client:
        result = client.infer("unittest_model", _fp32(0))
    assert result.as_numpy("OUT")[0] == 1.0, server.logs()[-3000:]


@pytest.mark.parametrize("mode,message", [
    (1, "Failed to process the request(s) for model instance 'failing_0_0', message: "
        "Expected a list in the execute return, found type '<class 'NoneType'>'."),
    (2, "Failed to process the request(s) for model instance 'failing_0_0', message: "
        "Expected an 'InferenceResponse' object in the execute function return list, found type "
        "'<class 'NoneType'>'."),
    (3, "Failed to process the request(s) for model instance 'failing_0_0', message: "
        "Number of InferenceResponse objects do not match the number of InferenceRequest objects. "
        "InferenceRequest(s) size is:1, and InferenceResponse(s) size is:0\n"),
])
def test_execute_return_errors_have_tritons_words(server, mode: int, message: str) -> None:
    with httpclient.InferenceServerClient(server.http_address) as client:
        with pytest.raises(InferenceServerException) as exc:
            client.infer("failing", _fp32(mode))
    assert exc.value.status() == "500"
    assert exc.value.message() == message


def test_an_exception_in_execute_names_the_instance_and_the_model_frames(server) -> None:
    with httpclient.InferenceServerClient(server.http_address) as client:
        with pytest.raises(InferenceServerException) as exc:
            client.infer("failing", _fp32(0))
    head, _, frames = exc.value.message().partition("\n\nAt:\n")
    assert head == "Failed to process the request(s) for model instance 'failing_0_0', message: ValueError: boom"
    lines = frames.splitlines()
    # innermost first, as pybind11 writes them; only the model's own frames
    assert len(lines) == 2, frames
    assert lines[0].endswith("/failing/1/model.py(18): fail") and lines[1].endswith("model.py(10): execute"), frames


def test_decoupled_errors_reach_the_client_as_is_and_the_log_with_the_prefix(server) -> None:
    (result, error), = _stream(server, "decoupled_failing", [1.0], 1)
    assert error.message() == ("Python model 'decoupled_failing_0_0' is using the decoupled mode and the "
                               "execute function must return None.")
    assert _log_contains(server, "Failed to process the request(s) for model 'decoupled_failing_0_0', message: "
                                 "Python model 'decoupled_failing_0_0' is using the decoupled mode")
    (result, error), = _stream(server, "decoupled_failing", [0.0], 1)
    assert error.message().startswith("RuntimeError: decoupled boom\n\nAt:\n")


def test_an_async_decoupled_exception_is_logged_as_a_python_traceback(server) -> None:
    assert "ValueError: wait_secs cannot be negative" not in server.logs()
    _stream(server, "async_raising", [0.0], 0)  # (its final flag, sent before raising, has no response)
    assert _log_contains(server, "ValueError: wait_secs cannot be negative")
    log = server.logs()
    assert "Traceback (most recent call last):" in log and '/async_raising/1/model.py", line 9, in execute' in log


def test_async_bls_serves_several_requests_at_once(server) -> None:
    """Each request's BLS callee waits until three are running at once: they can only all
    answer 3 if the BLS model had all three in flight together."""
    got = _stream(server, "async_bls", [1.0, 2.0, 3.0], 3)
    assert [error for _, error in got] == [None, None, None]
    assert [result.as_numpy("OUT")[0] for result, _ in got] == [3.0, 3.0, 3.0]


def test_log_verbose_follows_the_level_set_at_run_time(server) -> None:
    with httpclient.InferenceServerClient(server.http_address) as client:
        client.infer("logging_model", _fp32(1))
        assert client.update_log_settings({"log_verbose_level": 1})["log_verbose_level"] == 1
        try:
            client.infer("logging_model", _fp32(2))
            assert _log_contains(server, "verbose-mark-2")
            # headed with the model's file and line, as Triton writes a model's log lines
            assert re.search(r"^I\d{4} [\d:.]+ \d+ model\.py:\d+\] verbose-mark-2$", server.logs(), re.M)
        finally:
            client.update_log_settings({"log_verbose_level": 0})
        client.infer("logging_model", _fp32(3))
        client.infer("unittest_model", _fp32(0))  # a later request: mark 3 had its chance
    log = server.logs()
    assert "verbose-mark-1" not in log and "verbose-mark-3" not in log


def _metrics(server: NaiadProcess) -> str:
    status, body = http_get(f"http://127.0.0.1:{server.metrics_port}/metrics")
    assert status == 200
    return body.decode()


def test_custom_metrics_appear_on_the_metrics_endpoint(server) -> None:
    with httpclient.InferenceServerClient(server.http_address) as client:
        client.infer("metrics_model", _fp32(4.5))
        result = client.infer("metrics_model", _fp32(7))
        assert result.as_numpy("OUT")[0] == 2.0
        text = _metrics(server)
        assert "# HELP naiad_test_requests requests seen by the model\n# TYPE naiad_test_requests counter\n" in text
        assert 'naiad_test_requests{kind="e2e",model="metrics_model"} 2\n' in text
        assert "# TYPE naiad_test_last_value gauge\nnaiad_test_last_value 7\n" in text
        client.unload_model("metrics_model")
        deadline = time.monotonic() + TIMEOUT
        while "naiad_test_requests{" in _metrics(server) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "naiad_test_requests{" not in _metrics(server)  # its series went with the model
