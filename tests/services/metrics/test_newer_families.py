"""Metrics Triton added after 24.04 that dashboards use, scraped from a real server:
nv_model_load_duration_secs, the pinned-memory pool gauges, failure reasons, and the
first-response histogram behind `--metrics-config histogram_latencies=true`."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.metrics import scrape, value
from support.models import DELAYED_IDENTITY_MODEL, NEGATIVE_REFUSING_MODEL, identity_config, write_model

@pytest.fixture
def server(naiad, tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "picky", identity_config("picky", dims="[ 1 ]"), NEGATIVE_REFUSING_MODEL)
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


def _metric_control(family: str, buckets: str) -> str:
    return (f'model_metrics {{ metric_control [ {{ metric_identifier {{ family: "{family}" }} '
            f'histogram_options {{ buckets: {buckets} }} }} ] }}')


def test_per_model_buckets(naiad, tmp_path) -> None:
    """`model_metrics` in config.pbtxt sets one model's first-response buckets (Triton 24.11+);
    another model keeps the defaults; an unknown family is warned about; buckets that do not
    increase fail the load."""
    repo = tmp_path / "repo"
    family = "nv_inference_first_response_histogram_ms"
    delayed = identity_config("tuned", dims="[ 1 ]", extra=f"""
        parameters {{ key: "delay" value {{ string_value: "0.03" }} }}
        {_metric_control(family, "[ 1, 10, 250.5 ]")}""")
    write_model(repo, "tuned", delayed, DELAYED_IDENTITY_MODEL)
    write_model(repo, "plain", identity_config("plain", dims="[ 1 ]",
                                               extra=_metric_control("nv_inference_count", "[ 1 ]")), NEGATIVE_REFUSING_MODEL)
    write_model(repo, "unsorted", identity_config("unsorted", dims="[ 1 ]", extra=_metric_control(family, "[ 5, 1 ]")),
                NEGATIVE_REFUSING_MODEL)
    proc = naiad(f"--model-repository={repo}", "--metrics-config=histogram_latencies=true", "--exit-on-error=false",
                 "--strict-readiness=false")
    for model in ("tuned", "plain"):
        client = httpclient.InferenceServerClient(proc.http_address)
        inp = httpclient.InferInput("INPUT0", [1], "FP32")
        inp.set_data_from_numpy(np.array([1.0], np.float32))
        client.infer(model, [inp])
    samples = scrape(proc)
    buckets = {(dict(ls)["model"], dict(ls)["le"]): v for (name, ls), v in samples.items()
               if name == family + "_bucket"}
    # 30 ms of model time: above 10, within 250.5.
    assert {le: v for (m, le), v in buckets.items() if m == "tuned"} == {"1": 0, "10": 0, "250.5": 1, "+Inf": 1}
    assert {le for (m, le) in buckets if m == "plain"} == {"100", "500", "2000", "5000", "+Inf"}
    assert value(samples, family + "_sum", model="tuned", version="1") >= 30
    assert "Metric family 'nv_inference_count' in 'metric_identifier' is not a customizable metric" in proc.logs()
    assert "the buckets of 'nv_inference_first_response_histogram_ms' must be strictly increasing" in proc.logs()
    assert not any(dict(ls).get("model") == "unsorted" for _, ls in samples)
