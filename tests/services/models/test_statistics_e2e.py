"""Statistics as Triton 24.04 counts them, read through a real `naiad serve` with
tritonclient: an iterative sequence whose request is rescheduled (each execution counts,
no negative queue time, gRPC statistics still answer), response-cache hits, a request
cancelled while queued (not counted) and one cancelled while it runs (counted when it
ends), and an ensemble (one execution per request, its composing models' compute time,
steps pruned when an output is not requested)."""

from __future__ import annotations

import queue
import threading
import time
from functools import partial

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from support.models import DELAYED_IDENTITY_MODEL, IDENTITY_MODEL, identity_config, write_model

# Counts down from IN: one response per execution, released with RESCHEDULE until 0.
ITERATIVE = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.left = {}

    def execute(self, requests):
        for r in requests:
            key = r.correlation_id()
            left = self.left.get(key)
            if left is None:
                left = int(pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()[0])
            left -= 1
            sender = r.get_response_sender()
            response = pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([left], np.int32))])
            if left > 0:
                self.left[key] = left
                r.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
                sender.send(response)
            else:
                self.left.pop(key, None)
                sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''

ITERATIVE_CONFIG = '''
name: "iterative"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
sequence_batching { iterative_sequence: true }
instance_group [ { kind: KIND_CPU } ]
'''

# Two independent steps: A doubles X, B echoes X.
PAIR = '''
name: "pair"
platform: "ensemble"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "A" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "B" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling {
  step [
    { model_name: "step_a" model_version: -1
      input_map { key: "INPUT0" value: "X" } output_map { key: "OUTPUT0" value: "A" } },
    { model_name: "step_b" model_version: -1
      input_map { key: "INPUT0" value: "X" } output_map { key: "OUTPUT0" value: "B" } }
  ]
}
'''

BROKEN = '''
name: "broken"
platform: "ensemble"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling {
  step [ { model_name: "fail_py" input_map { key: "INPUT0" value: "X" } output_map { key: "OUTPUT0" value: "Y" } } ]
}
'''

FAILING = '''
class TritonPythonModel:
    def execute(self, requests):
        raise ValueError("fail_py refuses everything")
'''


def _slow_config(name: str, delay: float, extra: str = "") -> str:
    return identity_config(name, dims="[ 4 ]", extra=f'''
parameters [ {{ key: "delay" value: {{ string_value: "{delay}" }} }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
{extra}''')


@pytest.fixture(scope="module")
def server(serve, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "iterative", ITERATIVE_CONFIG, ITERATIVE)
    write_model(repo, "cached", _slow_config("cached", 0, "response_cache { enable: true }"), DELAYED_IDENTITY_MODEL)
    write_model(repo, "slow", _slow_config("slow", 0.6), DELAYED_IDENTITY_MODEL)
    write_model(repo, "step_a", identity_config("step_a", dims="[ 4 ]"), IDENTITY_MODEL)
    write_model(repo, "step_b", identity_config("step_b", dims="[ 4 ]"), IDENTITY_MODEL)
    write_model(repo, "fail_py", identity_config("fail_py", dims="[ 4 ]"), FAILING)
    for name, config in (("pair", PAIR), ("broken", BROKEN)):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(config)
    return serve(repo, "--cache-config", "local,size=1048576")


def _input(name: str = "INPUT0", value: float = 1.0):
    t = grpcclient.InferInput(name, [4], "FP32")
    t.set_data_from_numpy(np.full(4, value, np.float32))
    return t


def _stats(server, model: str) -> dict:
    return httpclient.InferenceServerClient(server.http_address).get_inference_statistics(model)["model_stats"][0]


def _count(stats: dict, field: str) -> int:
    return int(stats["inference_stats"][field]["count"])


def _ns(stats: dict, field: str) -> int:
    return int(stats["inference_stats"][field]["ns"])


def test_a_rescheduled_request_counts_each_execution_and_statistics_still_answer(server):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        t = grpcclient.InferInput("IN", [1], "INT32")
        t.set_data_from_numpy(np.array([3], np.int32))
        client.async_stream_infer("iterative", [t])
        got = []
        for _ in range(3):
            result, error = responses.get(timeout=20)
            assert error is None, error
            got.append(int(result.as_numpy("OUT")[0]))
    finally:
        client.stop_stream()
    assert got == [2, 1, 0]
    # Every model's statistics over gRPC: one negative figure used to fail the whole reply.
    every = client.get_inference_statistics(as_json=True)["model_stats"]
    stats = next(s for s in every if s["name"] == "iterative")
    for field in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert int(stats["inference_stats"][field].get("ns", 0)) >= 0, field
    # As Triton's Python backend reports them: each of the three executions is a success.
    assert _count(stats, "success") == 3
    assert _count(stats, "queue") == 3
    assert int(stats["execution_count"]) == 3


def test_cache_hits_count_as_triton_counts_them(server):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    for _ in range(3):
        result = client.infer("cached", [_input(value=7.0)])
        assert result.as_numpy("OUTPUT0").tolist() == [7.0] * 4
    stats = _stats(server, "cached")
    assert _count(stats, "success") == 3
    assert _count(stats, "cache_miss") == 1
    assert _count(stats, "cache_hit") == 2
    assert _count(stats, "queue") == 3  # a hit is a queued request too
    assert _count(stats, "compute_infer") == 1  # only the miss ran the model
    assert int(stats["execution_count"]) == 1
    assert int(stats["inference_count"]) == 1


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_request_cancelled_while_queued_is_not_counted(server):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    before = _stats(server, "slow")
    done = threading.Event()
    client.async_infer("slow", [_input()], callback=lambda result, error: done.set())  # holds the instance
    time.sleep(0.2)
    queued_errors: queue.Queue = queue.Queue()
    call = client.async_infer("slow", [_input()], callback=lambda result, error: queued_errors.put(error))
    time.sleep(0.1)
    call.cancel()
    assert done.wait(10)
    # The cancelled one never ran: Triton 24.04 counts it nowhere.
    time.sleep(0.8)
    after = _stats(server, "slow")
    assert _count(after, "success") == _count(before, "success") + 1
    assert _count(after, "fail") == _count(before, "fail")
    assert int(after["execution_count"]) == int(before["execution_count"]) + 1


def test_a_request_cancelled_while_it_runs_is_counted_when_it_ends(server):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    before = _count(_stats(server, "slow"), "success")
    call = client.async_infer("slow", [_input()], callback=lambda result, error: None)
    time.sleep(0.3)  # executing now (the model ignores cancellation)
    call.cancel()
    _wait_for(lambda: _count(_stats(server, "slow"), "success") == before + 1)


def test_an_ensemble_counts_one_execution_per_request_with_its_steps_compute_time(server):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    for i in range(2):
        result = client.infer("pair", [_input("X", float(i))])
        assert result.as_numpy("A").tolist() == [float(i)] * 4
    ensemble, a, b = (_stats(server, m) for m in ("pair", "step_a", "step_b"))
    assert _count(ensemble, "success") == 2
    assert _count(ensemble, "queue") == 2
    assert int(ensemble["execution_count"]) == 2
    assert int(ensemble["inference_count"]) == 2
    assert [(s["batch_size"], int(s["compute_infer"]["count"])) for s in ensemble["batch_stats"]] == [(1, 2)]
    assert _count(a, "success") == _count(b, "success") == 2
    # The ensemble's compute time is its composing models'.
    for field in ("compute_input", "compute_infer", "compute_output"):
        assert _count(ensemble, field) == 2
        assert _ns(ensemble, field) == _ns(a, field) + _ns(b, field), field


def test_an_ensemble_runs_only_the_steps_its_requested_outputs_need(server):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    a_before, b_before = (_count(_stats(server, m), "success") for m in ("step_a", "step_b"))
    result = client.infer("pair", [_input("X", 2.0)], outputs=[grpcclient.InferRequestedOutput("B")])
    assert result.as_numpy("B").tolist() == [2.0] * 4
    assert result.as_numpy("A") is None
    assert _count(_stats(server, "step_b"), "success") == b_before + 1
    assert _count(_stats(server, "step_a"), "success") == a_before  # pruned, as Triton does


def test_an_ensemble_error_names_the_ensemble_and_the_instance(server):
    client = httpclient.InferenceServerClient(server.http_address)
    t = httpclient.InferInput("X", [4], "FP32")
    t.set_data_from_numpy(np.zeros(4, np.float32))
    with pytest.raises(Exception) as err:
        client.infer("broken", [t])
    message = err.value.message()
    assert message.startswith("in ensemble 'broken', "), message
    assert "'fail_py_0_0'" in message and "fail_py refuses everything" in message
    stats = _stats(server, "broken")
    assert _count(stats, "fail") == 1 and _count(stats, "success") == 0
    assert int(stats["execution_count"]) == 0


def test_an_ensemble_config_has_no_instance_group_or_optimization(server):
    config = httpclient.InferenceServerClient(server.http_address).get_model_config("pair")
    assert config["platform"] == "ensemble"
    assert config.get("instance_group", []) == []
    assert "optimization" not in config
