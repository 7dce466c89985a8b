"""Statistics of failed requests and of the sequence batcher's oldest strategy as Triton
24.04 counts them, read over HTTP and gRPC from a real `naiad serve`:

- a request the model answers with an error counts only as a failure: no queue, compute
  or inference figures (Triton's ReportStatistics with success=false), while its
  execution still counts (the backend's batch statistics);
- an execute that raises counts no execution either, except for a decoupled model,
  whose Python backend reports the batch before it looks at the error;
- under the oldest strategy a request's queue time starts when the sequence batcher
  got it, not when it entered the dynamic batcher behind it."""

from __future__ import annotations

import queue
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from support.models import DELAYED_IDENTITY_MODEL, identity_config, write_model

# Answers a request whose INPUT0 is negative with an error, any other with its input.
PICKY = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            t = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            if (t < 0).any():
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("negative input")))
            else:
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", t)]))
        return out
'''

RAISING = '''
class TritonPythonModel:
    def execute(self, requests):
        raise ValueError("refuses everything")
'''

CONTROLS = '''
    control_input [
      { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
      { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] }
    ]'''


def _sequence_config(name: str, strategy: str, delay: float = 0) -> str:
    return identity_config(name, dims="[ 4 ]", max_batch_size=2, extra=f'''
parameters [ {{ key: "delay" value: {{ string_value: "{delay}" }} }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
sequence_batching {{ max_sequence_idle_microseconds: 10000000 {strategy} {CONTROLS} }}
''')


@pytest.fixture(scope="module")
def server(serve, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "picky", identity_config("picky", dims="[ 4 ]"), PICKY)
    write_model(repo, "raising", identity_config("raising", dims="[ 4 ]"), RAISING)
    write_model(repo, "raising_decoupled", identity_config(
        "raising_decoupled", dims="[ 4 ]", extra="model_transaction_policy { decoupled: true }"), RAISING)
    write_model(repo, "picky_direct", _sequence_config("picky_direct", "direct { }"), PICKY)
    write_model(repo, "slow_oldest", _sequence_config(
        "slow_oldest", "oldest { max_candidate_sequences: 2 }", delay=0.4), DELAYED_IDENTITY_MODEL)
    return serve(repo)


def _both(server, model: str) -> list[dict]:
    """The model's statistics over HTTP and over gRPC (as JSON)."""
    http = httpclient.InferenceServerClient(server.http_address).get_inference_statistics(model)
    grpc = grpcclient.InferenceServerClient(server.grpc_address).get_inference_statistics(model, as_json=True)
    return [http["model_stats"][0], grpc["model_stats"][0]]


# (gRPC's JSON leaves out fields that are zero.)
def _count(stats: dict, field: str) -> int:
    return int(stats["inference_stats"].get(field, {}).get("count", 0))


def _ns(stats: dict, field: str) -> int:
    return int(stats["inference_stats"].get(field, {}).get("ns", 0))


def _batch_counts(stats: dict) -> dict[int, int]:
    return {int(b["batch_size"]): int(b.get("compute_infer", {}).get("count", 0)) for b in stats.get("batch_stats", [])}


def _input(value: float, batched: bool = False) -> grpcclient.InferInput:
    data = np.full([1, 4] if batched else [4], value, np.float32)
    t = grpcclient.InferInput("INPUT0", list(data.shape), "FP32")
    t.set_data_from_numpy(data)
    return t


def test_a_request_answered_with_an_error_counts_only_as_a_failure(server):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    assert client.infer("picky", [_input(1.0)]).as_numpy("OUTPUT0").tolist() == [1.0] * 4
    with pytest.raises(Exception, match="negative input"):
        client.infer("picky", [_input(-1.0)])
    for stats in _both(server, "picky"):
        assert (_count(stats, "success"), _count(stats, "fail")) == (1, 1)
        assert _ns(stats, "fail") > 0
        for field in ("queue", "compute_input", "compute_infer", "compute_output"):
            assert _count(stats, field) == 1, field
        assert int(stats.get("inference_count", 0)) == 1
        # Both executions ran: the backend reports each batch.
        assert int(stats.get("execution_count", 0)) == 2
        assert _batch_counts(stats) == {1: 2}


def test_an_execute_that_raises_counts_no_execution(server):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    with pytest.raises(Exception, match="refuses everything"):
        client.infer("raising", [_input(1.0)])
    for stats in _both(server, "raising"):
        assert (_count(stats, "success"), _count(stats, "fail")) == (0, 1)
        for field in ("queue", "compute_input", "compute_infer", "compute_output"):
            assert _count(stats, field) == 0, field
        assert int(stats.get("inference_count", 0)) == 0
        assert int(stats.get("execution_count", 0)) == 0
        assert _batch_counts(stats) == {}


def test_a_decoupled_execute_that_raises_counts_its_execution_but_no_request_figures(server):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    errors: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: errors.put(error))
    try:
        client.async_stream_infer("raising_decoupled", [_input(1.0)])
        error = errors.get(timeout=20)
    finally:
        client.stop_stream()
    assert error is not None and "refuses everything" in str(error)
    for stats in _both(server, "raising_decoupled"):
        assert (_count(stats, "success"), _count(stats, "fail")) == (0, 1)
        assert _count(stats, "queue") == 0
        assert int(stats.get("inference_count", 0)) == 0
        assert int(stats.get("execution_count", 0)) == 1


def test_a_sequence_request_answered_with_an_error_counts_only_as_a_failure(server):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    client.infer("picky_direct", [_input(1.0, True)], sequence_id=7, sequence_start=True)
    with pytest.raises(Exception, match="negative input"):
        client.infer("picky_direct", [_input(-1.0, True)], sequence_id=7, sequence_end=True)
    for stats in _both(server, "picky_direct"):
        assert (_count(stats, "success"), _count(stats, "fail")) == (1, 1)
        assert _count(stats, "queue") == 1
        assert _count(stats, "compute_infer") == 1
        assert int(stats.get("inference_count", 0)) == 1
        assert int(stats.get("execution_count", 0)) == 2


def test_oldest_queue_time_starts_when_the_sequence_batcher_gets_the_request(server):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    results: queue.Queue = queue.Queue()
    # The second request waits in the sequence batcher while the first runs (0.4 s).
    put = lambda result, error: results.put((result, error))  # noqa: E731
    client.async_infer("slow_oldest", [_input(1.0, True)], put, sequence_id=11, sequence_start=True)
    time.sleep(0.1)  # (so that the sequence's start arrives first)
    client.async_infer("slow_oldest", [_input(2.0, True)], put, sequence_id=11, sequence_end=True)
    for _ in range(2):
        result, error = results.get(timeout=20)
        assert error is None, error
    for stats in _both(server, "slow_oldest"):
        assert _count(stats, "queue") == 2
        assert _ns(stats, "queue") >= 200_000_000, stats["inference_stats"]["queue"]
