"""Metrics Triton added after 24.04 that dashboards use, scraped from a real server:
nv_model_load_duration_secs, the pinned-memory pool gauges, failure reasons, and the
first-response histogram behind `--metrics-config histogram_latencies=true`."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from support.models import identity_config, write_model

# Answers a negative input with an error (the model's own words reach the client).
FAILING_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            t = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            if t[0] < 0:
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("negative input")))
            else:
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", t)]))
        return out
'''


def scrape(proc) -> dict:
    """{(sample name, frozenset(labels)): value}, parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def server(naiad, tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "picky", identity_config("picky", dims="[ 1 ]"), FAILING_MODEL)
    return naiad(f"--model-repository={repo}", "--metrics-config=histogram_latencies=true",
                 "--pinned-memory-pool-byte-size=1048576")


def _infer(proc, x: float) -> None:
    client = httpclient.InferenceServerClient(proc.http_address)
    inp = httpclient.InferInput("INPUT0", [1], "FP32")
    inp.set_data_from_numpy(np.array([x], np.float32))
    client.infer("picky", [inp])


def test_newer_families(server) -> None:
    for _ in range(3):
        _infer(server, 1.0)
    with pytest.raises(InferenceServerException, match="negative input"):
        _infer(server, -1.0)
    samples = scrape(server)
    labels = {"model": "picky", "version": "1"}
    assert value(samples, "nv_model_load_duration_secs", **labels) > 0
    assert value(samples, "nv_pinned_memory_pool_total_bytes") == 1048576
    assert value(samples, "nv_pinned_memory_pool_used_bytes") >= 0
    assert value(samples, "nv_inference_request_failure_total", reason="BACKEND", **labels) == 1
    assert value(samples, "nv_inference_request_failure_total", reason="OTHER", **labels) == 0
    assert value(samples, "nv_inference_first_response_histogram_ms_count", **labels) == 4
    assert value(samples, "nv_inference_first_response_histogram_ms_bucket", le="+Inf", **labels) == 4
    assert value(samples, "nv_inference_first_response_histogram_ms_bucket", le="5000", **labels) == 4
    assert {le for (name, ls) in samples if name.endswith("_bucket") for k, le in ls if k == "le"} == \
        {"100", "500", "2000", "5000", "+Inf"}
