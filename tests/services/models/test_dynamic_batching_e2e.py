"""The dynamic batcher through a real `naiad serve` and tritonclient: concurrent
requests batched (the model reports the batch it saw) and never beyond max_batch_size,
preferred sizes sent at once, REJECT vs DELAY queue timeouts, priorities served in
order. Every test runs twice: on the native batch queue (the default) and with
`[services.models] native_batcher = false` (the Python twin)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from naiad.ext import batcher
from support.models import write_model

# Answers each request with its input and the number of requests in the batch it ran in;
# ORDER counts executions, so tests can see who ran when.
BATCH_REPORTER = '''
import json
import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay = float(params.get("delay", {}).get("string_value", "0"))
        self.order = 0

    def execute(self, requests):
        time.sleep(self.delay)
        out = []
        for r in requests:
            self.order += 1
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            rows = x.shape[0]
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT0", x),
                pb_utils.Tensor("SEEN", np.full((rows, 1), len(requests), np.int32)),
                pb_utils.Tensor("ORDER", np.full((rows, 1), self.order, np.int32))]))
        return out
'''


def _config(name: str, max_batch_size: int, delay: float, batching: str) -> str:
    return f'''
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }},
         {{ name: "SEEN" data_type: TYPE_INT32 dims: [ 1 ] }},
         {{ name: "ORDER" data_type: TYPE_INT32 dims: [ 1 ] }} ]
{batching}
parameters {{ key: "delay" value: {{ string_value: "{delay}" }} }}
'''


MODELS = {
    "batched": (8, 0.05, "dynamic_batching { max_queue_delay_microseconds: 100000 }"),
    "preferred": (8, 0.02, "dynamic_batching { preferred_batch_size: [ 2 ] max_queue_delay_microseconds: 3000000 }"),
    "reject": (1, 0.6, "dynamic_batching { default_queue_policy { timeout_action: REJECT "
                       "default_timeout_microseconds: 100000 } }"),
    "delay": (1, 0.6, "dynamic_batching { default_queue_policy { timeout_action: DELAY "
                      "default_timeout_microseconds: 100000 } }"),
    "prio": (1, 0.4, "dynamic_batching { priority_levels: 2 default_priority_level: 2 }"),
}


@pytest.fixture(scope="module", params=[True, False], ids=["native", "python"])
def server(request, serve, tmp_path_factory):
    native = request.param
    if native and not batcher.NATIVE:
        pytest.skip("naiad.ext._batcher is not built")
    repo: Path = tmp_path_factory.mktemp("repo")
    for name, (mbs, delay, batching) in MODELS.items():
        write_model(repo, name, _config(name, mbs, delay, batching), BATCH_REPORTER)
    proc = serve(repo, "--log-verbose=1", config=f"[services.models]\nnative_batcher = {str(native).lower()}\n")
    wanted = "native batch queue" if native else "Python batch queue"
    assert wanted in proc.log_path.read_text()  # the switch chose the queue
    return proc


def _input(value: float = 1.0):
    i = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    i.set_data_from_numpy(np.full((1, 4), value, np.float32))
    return i


def _concurrent(server, model: str, n: int, **kwargs):
    client = httpclient.InferenceServerClient(server.http_address, concurrency=n)
    try:
        pending = [client.async_infer(model, [_input(i)], **kwargs) for i in range(n)]
        return [p.get_result(timeout=20) for p in pending]
    finally:
        client.close()


def test_concurrent_requests_are_batched_within_max_batch_size(server):
    results = _concurrent(server, "batched", 24)
    seen = [int(r.as_numpy("SEEN")[0, 0]) for r in results]
    for i, r in enumerate(results):
        assert np.array_equal(r.as_numpy("OUTPUT0"), np.full((1, 4), i, np.float32))  # each got its own rows
    assert max(seen) > 1, seen
    assert max(seen) <= 8, seen
    stats = httpclient.InferenceServerClient(server.http_address).get_inference_statistics("batched")
    sizes = [int(b["batch_size"]) for b in stats["model_stats"][0]["batch_stats"]]
    assert sizes and max(sizes) <= 8
    assert int(stats["model_stats"][0]["inference_count"]) == 24


def test_preferred_batch_size_goes_at_once(server):
    start = time.monotonic()
    results = _concurrent(server, "preferred", 6)
    elapsed = time.monotonic() - start
    assert [int(r.as_numpy("SEEN")[0, 0]) for r in results] == [2] * 6
    assert elapsed < 2.5  # nobody waited for the 3 s queue delay


def test_reject_policy_fails_a_request_that_waited_too_long(server):
    client = httpclient.InferenceServerClient(server.http_address, concurrency=2)
    try:
        first = client.async_infer("reject", [_input()])
        time.sleep(0.15)  # the first one is executing (0.6 s)
        second = client.async_infer("reject", [_input()])
        first.get_result(timeout=10)
        with pytest.raises(InferenceServerException, match="Request timeout expired"):
            second.get_result(timeout=10)
    finally:
        client.close()


def test_delay_policy_serves_a_request_that_waited_too_long(server):
    client = httpclient.InferenceServerClient(server.http_address, concurrency=2)
    try:
        first = client.async_infer("delay", [_input()])
        time.sleep(0.15)
        second = client.async_infer("delay", [_input(2.0)])
        first.get_result(timeout=10)
        out = second.get_result(timeout=10)
        assert np.array_equal(out.as_numpy("OUTPUT0"), np.full((1, 4), 2.0, np.float32))
    finally:
        client.close()


def test_higher_priority_is_served_first(server):
    client = httpclient.InferenceServerClient(server.http_address, concurrency=8)
    try:
        blocker = client.async_infer("prio", [_input()])
        time.sleep(0.15)  # executing (0.4 s); everything below queues behind it
        low = [client.async_infer("prio", [_input()], priority=2) for _ in range(3)]
        time.sleep(0.1)
        high = [client.async_infer("prio", [_input()], priority=1) for _ in range(3)]
        blocker.get_result(timeout=10)
        low_order = [int(p.get_result(timeout=10).as_numpy("ORDER")[0, 0]) for p in low]
        high_order = [int(p.get_result(timeout=10).as_numpy("ORDER")[0, 0]) for p in high]
    finally:
        client.close()
    assert max(high_order) < min(low_order), (high_order, low_order)
