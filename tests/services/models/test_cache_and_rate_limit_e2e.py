"""The response cache and the rate limiter through a real `naiad serve`
(`--cache-config local,size=...`, `--rate-limit=execution_count`): a cache hit skips the
model (the model counts its executions) and is counted in the statistics; instances that
share a rate-limiter resource never execute at once, unless the resource has copies
enough."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from support.models import write_model

# Returns its input, how many times it has executed, and when it ran (wall clock).
COUNTING = '''
import json
import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay = float(params.get("delay", {}).get("string_value", "0"))
        self.executions = 0

    def execute(self, requests):
        start = time.time()
        self.executions += 1
        time.sleep(self.delay)
        end = time.time()
        return [pb_utils.InferenceResponse([
            pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()),
            pb_utils.Tensor("EXECUTIONS", np.array([self.executions], np.int32)),
            pb_utils.Tensor("SPAN", np.array([start, end], np.float64))]) for r in requests]
'''


def _config(name: str, extra: str = "", delay: float = 0.0) -> str:
    return f'''
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }},
         {{ name: "EXECUTIONS" data_type: TYPE_INT32 dims: [ 1 ] }},
         {{ name: "SPAN" data_type: TYPE_FP64 dims: [ 2 ] }} ]
parameters {{ key: "delay" value: {{ string_value: "{delay}" }} }}
{extra}
'''


def _limited(resource: str, priority: int = 1) -> str:
    return (f'instance_group [ {{ count: 1 kind: KIND_CPU rate_limiter {{ '
            f'resources [ {{ name: "{resource}" count: 1 }} ] priority: {priority} }} }} ]')


@pytest.fixture(scope="module")
def server(serve, tmp_path_factory):
    repo: Path = tmp_path_factory.mktemp("repo")
    write_model(repo, "cached", _config("cached", "response_cache { enable: true }"), COUNTING)
    write_model(repo, "uncached", _config("uncached"), COUNTING)
    write_model(repo, "r_one", _config("r_one", _limited("R"), delay=0.4), COUNTING)
    write_model(repo, "r_two", _config("r_two", _limited("R"), delay=0.4), COUNTING)
    write_model(repo, "s_one", _config("s_one", _limited("S"), delay=0.4), COUNTING)
    write_model(repo, "s_two", _config("s_two", _limited("S"), delay=0.4), COUNTING)
    return serve(repo, "--cache-config=local,size=1048576", "--rate-limit=execution_count",
                 "--rate-limit-resource=S:2")


def _input(values):
    i = httpclient.InferInput("INPUT0", [len(values)], "FP32")
    i.set_data_from_numpy(np.asarray(values, np.float32))
    return i


def _executions(result) -> int:
    return int(result.as_numpy("EXECUTIONS")[0])


def test_a_cache_hit_skips_the_model(server):
    c = httpclient.InferenceServerClient(server.http_address)
    first = c.infer("cached", [_input([1, 2, 3])])
    second = c.infer("cached", [_input([1, 2, 3])])
    other = c.infer("cached", [_input([1, 2, 4])])
    assert _executions(first) == 1
    assert _executions(second) == 1  # answered from the cache: the model did not run
    assert np.array_equal(second.as_numpy("OUTPUT0"), np.array([1, 2, 3], np.float32))
    assert _executions(other) == 2  # different bytes, different key
    stats = c.get_inference_statistics("cached")["model_stats"][0]
    infer = stats["inference_stats"]
    assert int(infer["cache_hit"]["count"]) == 1 and int(infer["cache_miss"]["count"]) == 2
    assert int(infer["cache_hit"]["ns"]) > 0
    assert int(infer["success"]["count"]) == 3 and int(stats["execution_count"]) == 2


def test_a_model_without_response_cache_always_runs(server):
    c = httpclient.InferenceServerClient(server.http_address)
    counts = [_executions(c.infer("uncached", [_input([7])])) for _ in range(3)]
    assert counts == [1, 2, 3]
    infer = c.get_inference_statistics("uncached")["model_stats"][0]["inference_stats"]
    assert int(infer["cache_hit"]["count"]) == 0


def _spans(server, models):
    client = httpclient.InferenceServerClient(server.http_address, concurrency=len(models))
    try:
        pending = [client.async_infer(m, [_input([1])]) for m in models]
        return sorted(tuple(p.get_result(timeout=20).as_numpy("SPAN").tolist()) for p in pending)
    finally:
        client.close()


def test_instances_sharing_a_resource_take_turns(server):
    (s1, e1), (s2, e2) = _spans(server, ["r_one", "r_two"])
    assert s2 >= e1 - 0.02, "r_one and r_two executed at the same time despite resource R: 1"


def test_explicit_resource_copies_let_instances_run_together(server):
    (s1, e1), (s2, e2) = _spans(server, ["s_one", "s_two"])
    assert s2 < e1, "S has two copies (--rate-limit-resource=S:2): both should run at once"
