"""Ensembles through a real `naiad serve`: a DAG whose independent steps run at once, a
failing step that fails the request cleanly, a decoupled step that makes the ensemble
stream, cancellation reaching the composing model, and loading / unloading with the
composing models (explicit mode, unload_dependents)."""

from __future__ import annotations

import queue
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.models import ADD_SUB_MODEL, add_sub_config, write_model

UNARY = '''
import json
import os
import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        p = lambda k, d="": params.get(k, {}).get("string_value", d)
        self.op, self.delay, self.marker = p("op"), float(p("delay", "0")), p("marker")

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            if self.op == "wait":  # until cancelled (at most 5 s)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not r.is_cancelled():
                    time.sleep(0.01)
                if r.is_cancelled():
                    open(self.marker, "w").write("cancelled")
                    out.append(pb_utils.InferenceResponse(
                        error=pb_utils.TritonError("stopped", pb_utils.TritonError.CANCELLED)))
                    continue
            time.sleep(self.delay)
            if self.op == "guard" and (x > 1000).any():
                raise ValueError("guard refuses values above 1000")
            y = x * 2 if self.op == "double" else x
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y.astype(np.float32))]))
        return out
'''


def _unary_config(name: str, op: str, delay: float = 0.0, marker: str = "", dims: str = "[ 4 ]") -> str:
    return f'''
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "X" data_type: TYPE_FP32 dims: {dims} }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: {dims} }} ]
parameters [ {{ key: "op" value: {{ string_value: "{op}" }} }},
             {{ key: "delay" value: {{ string_value: "{delay}" }} }},
             {{ key: "marker" value: {{ string_value: "{marker}" }} }} ]
'''


PIPELINE = '''
name: "pipeline"
platform: "ensemble"
max_batch_size: 0
input [ { name: "A" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "B" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "DOUBLED_SUM" data_type: TYPE_FP32 dims: [ 4 ] },
         { name: "CHECKED_DIFF" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling {
  step [
    { model_name: "add_sub" model_version: -1
      input_map { key: "INPUT0" value: "A" } input_map { key: "INPUT1" value: "B" }
      output_map { key: "OUTPUT0" value: "SUM" } output_map { key: "OUTPUT1" value: "DIFF" } },
    { model_name: "double" model_version: -1
      input_map { key: "X" value: "SUM" } output_map { key: "Y" value: "DOUBLED_SUM" } },
    { model_name: "guard" model_version: -1
      input_map { key: "X" value: "DIFF" } output_map { key: "Y" value: "CHECKED_DIFF" } }
  ]
}
'''

# A decoupled first step: every response of `repeat_decoupled` runs `double_one` once.
STREAMER = '''
name: "streamer"
platform: "ensemble"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
ensemble_scheduling {
  step [
    { model_name: "repeat_decoupled" input_map { key: "IN" value: "IN" } output_map { key: "OUT" value: "VALUE" } },
    { model_name: "to_float" input_map { key: "X" value: "VALUE" } output_map { key: "Y" value: "FLOAT" } },
    { model_name: "double_one" input_map { key: "X" value: "FLOAT" } output_map { key: "Y" value: "OUT" } }
  ]
}
'''

TO_FLOAT = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy().astype(np.float32))]) for r in requests]
'''

WAITER = '''
name: "waiter_pipe"
platform: "ensemble"
max_batch_size: 0
input [ { name: "A" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling {
  step [ { model_name: "waiter" input_map { key: "X" value: "A" } output_map { key: "Y" value: "OUT" } } ]
}
'''

REPEAT_CONFIG_PATH = Path(__file__).resolve().parents[4] / "examples" / "models" / "repeat_decoupled"


def _build(repo: Path, marker: Path) -> None:
    write_model(repo, "add_sub", add_sub_config(), ADD_SUB_MODEL)
    write_model(repo, "double", _unary_config("double", "double", delay=0.4), UNARY)
    write_model(repo, "guard", _unary_config("guard", "guard", delay=0.4), UNARY)
    write_model(repo, "pipeline", PIPELINE, "")
    write_model(repo, "repeat_decoupled", (REPEAT_CONFIG_PATH / "config.pbtxt").read_text(),
                (REPEAT_CONFIG_PATH / "1" / "model.py").read_text())
    write_model(repo, "to_float", _unary_config("to_float", "id", dims="[ 1 ]").replace(
        'name: "X" data_type: TYPE_FP32', 'name: "X" data_type: TYPE_INT32'), TO_FLOAT)
    write_model(repo, "double_one", _unary_config("double_one", "double", dims="[ 1 ]"), UNARY)
    write_model(repo, "streamer", STREAMER, "")
    write_model(repo, "waiter", _unary_config("waiter", "wait", marker=str(marker)), UNARY)
    write_model(repo, "waiter_pipe", WAITER, "")
    for name in ("pipeline", "streamer", "waiter_pipe"):
        (repo / name / "1" / "model.py").unlink()  # ensembles have an empty version folder


@pytest.fixture(scope="module")
def marker(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("marker") / "cancelled"


@pytest.fixture(scope="module")
def server(serve, tmp_path_factory, marker):
    repo = tmp_path_factory.mktemp("repo")
    _build(repo, marker)
    return serve(repo)


def _ab(a, b, grpc: bool = False):
    mod = grpcclient if grpc else httpclient
    inputs = []
    for name, value in (("A", a), ("B", b)):
        i = mod.InferInput(name, [4], "FP32")
        i.set_data_from_numpy(np.asarray(value, np.float32))
        inputs.append(i)
    return inputs


def test_ensemble_runs_its_dag_with_independent_steps_at_once(server):
    c = httpclient.InferenceServerClient(server.http_address)
    meta = c.get_model_metadata("pipeline")
    assert meta["platform"] == "ensemble"
    a, b = np.array([1, 2, 3, 4], np.float32), np.array([10, 20, 30, 40], np.float32)
    c.infer("pipeline", _ab(a, b))  # warm
    start = time.monotonic()
    r = c.infer("pipeline", _ab(a, b))
    elapsed = time.monotonic() - start
    assert np.array_equal(r.as_numpy("DOUBLED_SUM"), 2 * (a + b))
    assert np.array_equal(r.as_numpy("CHECKED_DIFF"), a - b)
    assert elapsed < 0.75, elapsed  # double and guard (0.4 s each) ran side by side
    stats = c.get_inference_statistics("double")["model_stats"][0]
    assert int(stats["inference_stats"]["success"]["count"]) >= 2  # composing models keep their stats


def test_a_failing_step_fails_the_request_cleanly(server):
    c = httpclient.InferenceServerClient(server.http_address)
    with pytest.raises(InferenceServerException, match="guard refuses values above 1000"):
        c.infer("pipeline", _ab([5000, 0, 0, 0], [0, 0, 0, 0]))
    r = c.infer("pipeline", _ab([1, 1, 1, 1], [1, 1, 1, 1]))  # the ensemble is still fine
    assert np.array_equal(r.as_numpy("CHECKED_DIFF"), np.zeros(4, np.float32))


def test_a_decoupled_step_makes_the_ensemble_stream(server):
    c = httpclient.InferenceServerClient(server.http_address)
    assert c.get_model_config("streamer")["model_transaction_policy"]["decoupled"] is True
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_address)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        i = grpcclient.InferInput("IN", [3], "INT32")
        i.set_data_from_numpy(np.array([4, 5, 6], np.int32))
        client.async_stream_infer("streamer", [i], request_id="s1", enable_empty_final_response=True)
        values = []
        while True:
            result, error = results.get(timeout=10)
            assert error is None, error
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
            values.append(float(result.as_numpy("OUT")[0]))
    finally:
        client.stop_stream()
    assert sorted(values) == [8.0, 10.0, 12.0]


def test_cancelling_an_ensemble_request_cancels_its_steps(server, marker):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    done: queue.Queue = queue.Queue()
    i = grpcclient.InferInput("A", [4], "FP32")
    i.set_data_from_numpy(np.zeros(4, np.float32))
    ctx = client.async_infer("waiter_pipe", [i], partial(lambda q, result, error: q.put(error), done))
    time.sleep(0.5)
    ctx.cancel()
    assert done.get(timeout=10) is not None
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the composing model never saw is_cancelled()"
    client.close()


def test_explicit_load_brings_composing_models_and_unload_dependents_removes_them(serve, tmp_path_factory):
    repo = tmp_path_factory.mktemp("explicit")
    _build(repo, tmp_path_factory.mktemp("m") / "x")
    broken = PIPELINE.replace('"pipeline"', '"broken"').replace('model_name: "guard"', 'model_name: "missing"')
    write_model(repo, "broken", broken, "")
    proc = serve(repo, "--model-control-mode=explicit", "--load-model=pipeline")
    c = httpclient.InferenceServerClient(proc.http_address)
    for name in ("pipeline", "add_sub", "double", "guard"):
        assert c.is_model_ready(name), name
    assert not c.is_model_ready("streamer")
    r = c.infer("pipeline", _ab([1, 2, 3, 4], [1, 1, 1, 1]))
    assert np.array_equal(r.as_numpy("DOUBLED_SUM"), np.array([4, 6, 8, 10], np.float32))
    with pytest.raises(InferenceServerException, match="depends on 'missing'"):
        c.load_model("broken")
    c.unload_model("pipeline", unload_dependents=True)
    deadline = time.monotonic() + 10
    while any(c.is_model_ready(n) for n in ("pipeline", "add_sub", "double", "guard")):
        assert time.monotonic() < deadline, "composing models still loaded"
        time.sleep(0.1)
