"""The sequence batcher through a real `naiad serve`: sequences isolated (two correlation
ids interleaved, over HTTP and a gRPC stream), control inputs as configured, idle
sequences expired with a clear error, implicit state carried, the oldest strategy,
cancellation of a queued request, and an iterative sequence streaming tokens (the
bigram_generator example)."""

from __future__ import annotations

import importlib.util
import queue
import shutil
import sys
import time
import types
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.models import write_model

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "models" / "bigram_generator"

# Sums INPUT per sequence (keyed by correlation id, reset on START) and reports the
# control inputs it saw, the batch size, and CORRID as text.
ACCUMULATOR = '''
import json
import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay = float(params.get("delay", {}).get("string_value", "0"))
        self.acc = {}

    def execute(self, requests):
        time.sleep(self.delay)
        out = []
        for r in requests:
            get = lambda n: pb_utils.get_input_tensor_by_name(r, n).as_numpy().reshape(-1)[0]
            start, end, ready, corrid = get("START"), get("END"), get("READY"), get("CORRID")
            key = r.correlation_id()
            if ready:
                if start:
                    self.acc[key] = 0
                self.acc[key] = self.acc.get(key, 0) + int(get("INPUT"))
            total = self.acc.get(key, 0) if ready else -1
            if isinstance(corrid, bytes):
                corrid = corrid.decode()
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT", np.array([[total]], np.int32)),
                pb_utils.Tensor("FLAGS", np.array([[int(start), int(end), int(ready), len(requests)]], np.int32)),
                pb_utils.Tensor("CID", np.array([[str(corrid).encode()]], dtype=object))]))
        return out
'''


def _accumulator_config(name: str, corrid_type: str = "TYPE_UINT64", extra: str = "", delay: float = 0.0,
                        max_batch_size: int = 4) -> str:
    return f'''
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] }},
         {{ name: "FLAGS" data_type: TYPE_INT32 dims: [ 4 ] }},
         {{ name: "CID" data_type: TYPE_STRING dims: [ 1 ] }} ]
sequence_batching {{
  {extra}
  control_input [
    {{ name: "START" control [ {{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "END" control [ {{ kind: CONTROL_SEQUENCE_END fp32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "READY" control [ {{ kind: CONTROL_SEQUENCE_READY bool_false_true: [ false, true ] }} ] }},
    {{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: {corrid_type} }} ] }}
  ]
}}
parameters {{ key: "delay" value: {{ string_value: "{delay}" }} }}
'''


# Implicit state: STATE_IN arrives from the batcher, STATE_OUT goes back to it.
STATEFUL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            state = pb_utils.get_input_tensor_by_name(r, "STATE_IN").as_numpy()
            x = pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy()
            total = (state + x).astype(np.int32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", total),
                                                   pb_utils.Tensor("STATE_OUT", total)]))
        return out
'''

STATEFUL_CONFIG = '''
name: "stateful"
backend: "python"
max_batch_size: 2
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
sequence_batching {
  state [ {
    input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_INT32 dims: [ 1 ]
    initial_state { data_type: TYPE_INT32 dims: [ 1 ] data_file: "hundred.bin" name: "start at 100" }
  } ]
}
'''

# Default (non-decoupled) mode rescheduling: runs each request three times, answers once.
RESCHEDULE_PROBE = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.runs = {}

    def execute(self, requests):
        out = []
        for r in requests:
            cid = r.correlation_id()
            self.runs[cid] = self.runs.get(cid, 0) + 1
            if self.runs[cid] < 3:
                r.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
                out.append(None)
            else:
                out.append(pb_utils.InferenceResponse([
                    pb_utils.Tensor("RUNS", np.array([[self.runs.pop(cid)]], np.int32))]))
        return out
'''

RESCHEDULE_PROBE_CONFIG = '''
name: "reschedule_probe"
backend: "python"
max_batch_size: 4
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "RUNS" data_type: TYPE_INT32 dims: [ 1 ] } ]
sequence_batching { iterative_sequence: true }
'''


@pytest.fixture(scope="module")
def server(serve, tmp_path_factory):
    repo: Path = tmp_path_factory.mktemp("repo")
    write_model(repo, "accumulator", _accumulator_config("accumulator"), ACCUMULATOR)
    write_model(repo, "accumulator_str", _accumulator_config("accumulator_str", "TYPE_STRING"), ACCUMULATOR)
    write_model(repo, "short_idle", _accumulator_config(
        "short_idle", extra="max_sequence_idle_microseconds: 300000"), ACCUMULATOR)
    write_model(repo, "oldest", _accumulator_config(
        "oldest", extra="oldest { max_candidate_sequences: 4 max_queue_delay_microseconds: 50000 }",
        delay=0.03), ACCUMULATOR)
    write_model(repo, "one_slot", _accumulator_config("one_slot", delay=0.5, max_batch_size=1), ACCUMULATOR)
    model_dir = write_model(repo, "stateful", STATEFUL_CONFIG, STATEFUL)
    (model_dir / "initial_state").mkdir()
    (model_dir / "initial_state" / "hundred.bin").write_bytes(np.array([100], np.int32).tobytes())
    write_model(repo, "reschedule_probe", RESCHEDULE_PROBE_CONFIG, RESCHEDULE_PROBE)
    shutil.copytree(EXAMPLE, repo / "bigram_generator")
    resched = repo / "bigram_generator_resched"
    shutil.copytree(EXAMPLE, resched)
    text = (resched / "config.pbtxt").read_text()
    text = text.replace('name: "bigram_generator"', 'name: "bigram_generator_resched"')
    text = text.replace('string_value: "false"', 'string_value: "true"')
    (resched / "config.pbtxt").write_text(text)
    return serve(repo)


def _int_input(value: int, grpc: bool = False):
    mod = grpcclient if grpc else httpclient
    i = mod.InferInput("INPUT", [1, 1], "INT32")
    i.set_data_from_numpy(np.array([[value]], np.int32))
    return i


def _step(client, model, cid, value, start=False, end=False):
    r = client.infer(model, [_int_input(value)], sequence_id=cid, sequence_start=start, sequence_end=end)
    return int(r.as_numpy("OUTPUT")[0, 0]), r.as_numpy("FLAGS")[0].tolist(), r.as_numpy("CID")[0, 0].decode()


def test_two_interleaved_sequences_stay_isolated(server):
    c = httpclient.InferenceServerClient(server.http_address)
    a = [_step(c, "accumulator", 1001, 1, start=True)]
    b = [_step(c, "accumulator", 1002, 100, start=True)]
    a.append(_step(c, "accumulator", 1001, 2))
    b.append(_step(c, "accumulator", 1002, 200))
    a.append(_step(c, "accumulator", 1001, 3, end=True))
    b.append(_step(c, "accumulator", 1002, 300, end=True))
    assert [x[0] for x in a] == [1, 3, 6] and [x[0] for x in b] == [100, 300, 600]
    # Control inputs as configured: START / END / READY per request, CORRID = the id.
    assert [x[1][:3] for x in a] == [[1, 0, 1], [0, 0, 1], [0, 1, 1]]
    assert {x[2] for x in a} == {"1001"} and {x[2] for x in b} == {"1002"}
    with pytest.raises(InferenceServerException, match="must specify the START flag"):
        _step(c, "accumulator", 1001, 4)  # sequence 1001 has ended


def test_string_correlation_ids_over_a_grpc_stream(server):
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_address)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        plan = [("alpha", 1, True, False), ("beta", 10, True, False), ("alpha", 2, False, False),
                ("beta", 20, False, True), ("alpha", 3, False, True)]
        for cid, value, start, end in plan:
            client.async_stream_infer("accumulator_str", [_int_input(value, grpc=True)], request_id=f"{cid}{value}",
                                      sequence_id=cid, sequence_start=start, sequence_end=end)
        got = {}
        for _ in plan:
            result, error = results.get(timeout=10)
            assert error is None, error
            got[result.get_response().id] = (int(result.as_numpy("OUTPUT")[0, 0]),
                                             result.as_numpy("CID")[0, 0].decode())
    finally:
        client.stop_stream()
    assert got == {"alpha1": (1, "alpha"), "beta10": (10, "beta"), "alpha2": (3, "alpha"),
                   "beta20": (30, "beta"), "alpha3": (6, "alpha")}


def test_idle_sequence_expires_with_tritons_error(server):
    c = httpclient.InferenceServerClient(server.http_address)
    assert _step(c, "short_idle", 77, 5, start=True)[0] == 5
    time.sleep(0.9)
    with pytest.raises(InferenceServerException) as err:
        _step(c, "short_idle", 77, 1)
    assert err.value.message() == ("inference request for sequence 77 to model 'short_idle' must specify the "
                                   "START flag on the first request of the sequence")
    assert _step(c, "short_idle", 77, 2, start=True)[0] == 2  # a new sequence may reuse the id


def test_implicit_state_is_carried_between_requests(server):
    c = httpclient.InferenceServerClient(server.http_address)

    def step(cid, x, start=False, end=False):
        r = c.infer("stateful", [_int_input(x)], sequence_id=cid, sequence_start=start, sequence_end=end)
        assert r.as_numpy("STATE_OUT") is None  # state stays inside the server
        return int(r.as_numpy("OUTPUT")[0, 0])

    assert [step(5, 1, start=True), step(6, 7, start=True), step(5, 2), step(6, 1, end=True),
            step(5, 3, end=True)] == [101, 107, 103, 108, 106]
    assert step(5, 1, start=True) == 101  # a new sequence starts from initial_state again


def test_oldest_strategy_batches_sequences_and_keeps_each_in_order(server):
    client = httpclient.InferenceServerClient(server.http_address, concurrency=16)
    try:
        pending = []
        for i in range(3):
            for cid in (11, 12, 13, 14):
                pending.append((cid, client.async_infer("oldest", [_int_input(cid * 100 + i)], sequence_id=cid,
                                                        sequence_start=i == 0, sequence_end=i == 2)))
            time.sleep(0.01)
        outs = {}
        for cid, p in pending:
            r = p.get_result(timeout=10)
            outs.setdefault(cid, []).append((int(r.as_numpy("OUTPUT")[0, 0]), int(r.as_numpy("FLAGS")[0, 3])))
    finally:
        client.close()
    for cid, rows in outs.items():
        base = cid * 100
        assert [v for v, _ in rows] == [base, 2 * base + 1, 3 * base + 3]
    assert max(size for rows in outs.values() for _, size in rows) > 1  # sequences shared batches


def test_cancelling_a_queued_request_ends_its_sequence(server):
    grpc = grpcclient.InferenceServerClient(server.grpc_address)
    http = httpclient.InferenceServerClient(server.http_address, concurrency=2)
    try:
        first = http.async_infer("one_slot", [_int_input(1)], sequence_id=501, sequence_start=True)
        time.sleep(0.15)  # executing for 0.5 s; the next request of 501 waits in its slot
        done: queue.Queue = queue.Queue()
        ctx = grpc.async_infer("one_slot", [_int_input(2, grpc=True)], partial(lambda q, result, error: q.put(error),
                                                                              done), sequence_id=501)
        time.sleep(0.1)
        ctx.cancel()
        error = done.get(timeout=10)
        assert error is not None and "CANCELLED" in str(error).upper()
        assert int(first.get_result(timeout=10).as_numpy("OUTPUT")[0, 0]) == 1
        time.sleep(0.1)
        with pytest.raises(InferenceServerException, match="must specify the START flag"):
            _step(httpclient.InferenceServerClient(server.http_address), "one_slot", 501, 3)
        # The slot is free again for a new sequence.
        assert _step(httpclient.InferenceServerClient(server.http_address), "one_slot", 502, 9,
                     start=True, end=True)[0] == 9
    finally:
        http.close()
        grpc.close()


def _example_module():
    """The example's own `generate` (its model.py imports pb_utils, which only the
    backend provides: a stand-in is enough for the pure functions)."""
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("bigram_example", EXAMPLE / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stream_generate(server, model: str, prompts: dict[str, int], timeout: float = 15.0) -> dict[str, str]:
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_address)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    texts = {p: [] for p in prompts}
    finals = 0
    try:
        for prompt, count in prompts.items():
            p = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
            p.set_data_from_numpy(np.array([[prompt.encode()]], dtype=object))
            m = grpcclient.InferInput("MAX_TOKENS", [1, 1], "INT32")
            m.set_data_from_numpy(np.array([[count]], np.int32))
            client.async_stream_infer(model, [p, m], request_id=prompt, enable_empty_final_response=True)
        deadline = time.monotonic() + timeout
        while finals < len(prompts):
            result, error = results.get(timeout=max(0.1, deadline - time.monotonic()))
            assert error is None, error
            response = result.get_response()
            if response.parameters["triton_final_response"].bool_param:
                finals += 1
                continue
            texts[response.id].append(result.as_numpy("TOKEN").reshape(-1)[0].decode())
    finally:
        client.stop_stream()
    return {p: "".join(tokens) for p, tokens in texts.items()} | {
        f"{p}#tokens": len(tokens) for p, tokens in texts.items()}


def test_iterative_sequence_streams_tokens(server):
    example = _example_module()
    table = example.bigram_table()
    got = _stream_generate(server, "bigram_generator", {"hello": 12, "naiad": 7})
    assert got["hello#tokens"] == 12 and got["naiad#tokens"] == 7  # one response per token
    assert got["hello"] == example.generate("hello", 12, table)
    assert got["naiad"] == example.generate("naiad", 7, table)


def _rescheduling_supported(server) -> bool:
    c = httpclient.InferenceServerClient(server.http_address)
    try:
        r = c.infer("reschedule_probe", [_int_input(1)])
    except InferenceServerException as exc:
        if "not supported" in str(exc):
            return False
        raise
    assert int(r.as_numpy("RUNS")[0, 0]) == 3  # executed three times, answered once
    return True


def test_request_rescheduling_runs_a_request_again(server):
    if not _rescheduling_supported(server):
        pytest.skip("the Python backend does not report RELEASE_RESCHEDULE to the scheduler yet")


def test_iterative_generation_with_rescheduling_batches_sequences(server):
    if not _rescheduling_supported(server):
        pytest.skip("the Python backend does not report RELEASE_RESCHEDULE to the scheduler yet")
    example = _example_module()
    table = example.bigram_table()
    got = _stream_generate(server, "bigram_generator_resched", {"abc": 9, "xyz": 4, "tide": 6})
    for prompt, count in {"abc": 9, "xyz": 4, "tide": 6}.items():
        assert got[f"{prompt}#tokens"] == count
        assert got[prompt] == example.generate(prompt, count, table)
