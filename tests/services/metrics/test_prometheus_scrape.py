"""A real Prometheus scrapes a real naiad every second; after inferences (tritonclient) its
HTTP API answers for the newer families, a model's own pb_utils.MetricFamily counter, and
the queue-time ratio Triton's Kubernetes charts autoscale on."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.manifests import adapter_rule
from support.models import identity_config, write_model
from support.prometheus import BINARY, SKIP_REASON, Prometheus

pytestmark = pytest.mark.skipif(BINARY is None, reason=SKIP_REASON)

# What the HPA rule in deploy/kubernetes/ scales on (Triton's k8s-onprem chart's expression).
QUEUE_RATIO = "avg(delta(nv_inference_queue_duration_us[30s])/(1+delta(nv_inference_request_success[30s])))"

# Sleeps 50 ms a request, counts its requests in a custom family, fails a negative input.
MODEL = '''
import time
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        # Kept: a Metric is invalid once its family is deleted (as in Triton).
        self.family = pb_utils.MetricFamily("model_requests_seen", "Requests this model saw",
                                            pb_utils.MetricFamily.COUNTER)
        self.seen = self.family.Metric(labels={"kind": "test"})

    def execute(self, requests):
        time.sleep(0.05 * len(requests))
        self.seen.increment(len(requests))
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError("negative input")) if t[0] < 0
                else pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", t)]) for t in inputs]
'''

REQUESTS = 8


@pytest.fixture
def stack(naiad, tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "queued", identity_config("queued", dims="[ 1 ]"), MODEL)
    server = naiad(f"--model-repository={repo}", "--metrics-config=histogram_latencies=true",
                   "--pinned-memory-pool-byte-size=2097152")
    prom = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{server.metrics_port}")
    try:
        prom.wait_ready()
        yield server, prom
    finally:
        prom.stop()


def _infer(server, x: float) -> None:
    client = httpclient.InferenceServerClient(server.http_address, network_timeout=30)
    inp = httpclient.InferInput("INPUT0", [1], "FP32")
    inp.set_data_from_numpy(np.array([x], np.float32))
    client.infer("queued", [inp])


def _scalar(result: list[dict]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def _is(expected: float):
    return lambda result: len(result) == 1 and float(result[0]["value"][1]) == expected


def test_prometheus_scrapes_naiad(stack) -> None:
    server, prom = stack
    # A scrape before any request, so that the deltas below start from zero.
    prom.wait_for('nv_inference_request_success{model="queued"}', _is(0))
    threads = [threading.Thread(target=_infer, args=(server, 1.0)) for _ in range(REQUESTS)]
    for t in threads:  # all at once: one instance, so they queue behind each other
        t.start()
    for t in threads:
        t.join(60)
    with pytest.raises(InferenceServerException, match="negative input"):
        _infer(server, -1.0)

    sel = '{model="queued",version="1"}'
    prom.wait_for(f"nv_inference_request_success{sel}", _is(REQUESTS))
    prom.wait_for(f'nv_inference_request_failure{{model="queued",reason="BACKEND"}}', _is(1))
    for reason in ("REJECTED", "CANCELED", "OTHER"):
        assert _scalar(prom.query(f'nv_inference_request_failure{{model="queued",reason="{reason}"}}')) == 0
    assert _scalar(prom.query(f"nv_model_load_duration_secs{sel}")) > 0
    assert _scalar(prom.query("nv_pinned_memory_pool_total_bytes")) == 2097152
    assert _scalar(prom.query("nv_pinned_memory_pool_used_bytes")) >= 0
    assert _scalar(prom.query('model_requests_seen{kind="test"}')) == REQUESTS + 1

    # The histogram, as dashboards read it: every request within +Inf, a usable quantile.
    assert _scalar(prom.query(f'nv_inference_first_response_histogram_ms_bucket{{model="queued",le="+Inf"}}')) \
        == REQUESTS + 1
    les = {r["metric"]["le"] for r in prom.query(f"nv_inference_first_response_histogram_ms_bucket{sel}")}
    assert les == {"100", "500", "2000", "5000", "+Inf"}
    p50 = _scalar(prom.query(f"histogram_quantile(0.5, nv_inference_first_response_histogram_ms_bucket{sel})"))
    assert 0 < p50 <= 5000

    # The autoscaling signal: queue time per request over the last 30 s, above zero now that
    # eight requests waited behind each other for a 50 ms model.
    queued_us = _scalar(prom.query(f"nv_inference_queue_duration_us{sel}"))
    assert queued_us > 50_000  # at least one request waited a whole execution
    ratio = _scalar(prom.wait_for(QUEUE_RATIO, lambda r: len(r) == 1 and float(r[0]["value"][1]) > 0))
    print(f"queue-time ratio {ratio:.0f} us per request; p50 first response {p50:.0f} ms")
    assert 0 < ratio < queued_us

    # The Prometheus adapter's rule in deploy/kubernetes/, as the adapter expands it for one
    # job (in a cluster: for the pods of a namespace), answers the same signal.
    query = adapter_rule()["metricsQuery"].replace("<<.LabelMatchers>>", 'job="naiad"').replace("<<.GroupBy>>", "job")
    (row,) = prom.wait_for(query, lambda r: len(r) == 1 and float(r[0]["value"][1]) > 0)
    assert row["metric"] == {"job": "naiad"}
