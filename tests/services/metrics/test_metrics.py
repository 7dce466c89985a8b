"""The metrics service through a real server: `GET /metrics` scraped after real
inferences over HTTP (tritonclient), its values against the statistics API, the
`--metrics-config` and `--allow-*-metrics` flags."""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.models import IDENTITY_MODEL, NEGATIVE_REFUSING_MODEL, identity_config, write_model


_LINE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(proc) -> tuple[str, dict]:
    """(content type, {(name, frozenset(labels)): value}) of one scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as r:
        assert r.status == 200
        ctype = r.headers["Content-Type"]
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        assert m, line
        labels = frozenset(_LABEL.findall(m.group("labels") or ""))
        samples[(m.group("name"), labels)] = float(m.group("value"))
    return ctype, samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names(samples: dict) -> set[str]:
    return {n for n, _ in samples}


def _repo(tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "ident", identity_config("ident", extra='metric_tags { key: "team" value: "vision" }'),
                IDENTITY_MODEL)
    write_model(repo, "failing", identity_config("failing"), NEGATIVE_REFUSING_MODEL)
    return repo


def _infer(client, model, values):
    inp = httpclient.InferInput("INPUT0", [len(values)], "FP32")
    inp.set_data_from_numpy(np.asarray(values, np.float32))
    return client.infer(model, [inp])


def test_counters_move_with_real_inferences(naiad, tmp_path):
    proc = naiad("--model-repository", str(_repo(tmp_path)), "--metrics-interval-ms=100")
    client = httpclient.InferenceServerClient(proc.http_address)
    ctype, before = scrape(proc)
    assert ctype == "text/plain; charset=utf-8"
    ident = {"model": "ident", "version": "1", "_team": "vision"}
    assert value(before, "nv_inference_request_success", **ident) == 0
    assert value(before, "nv_inference_pending_request_count", **ident) == 0

    for i in range(5):
        _infer(client, "ident", [float(i)] * 8)
    _infer(client, "failing", [1.0])
    with pytest.raises(InferenceServerException, match="negative input"):
        _infer(client, "failing", [-1.0])

    _, after = scrape(proc)
    assert value(after, "nv_inference_request_success", **ident) == 5
    assert value(after, "nv_inference_count", **ident) == 5
    assert value(after, "nv_inference_exec_count", **ident) == 5
    assert value(after, "nv_inference_pending_request_count", **ident) == 0
    for family in ("nv_inference_request_duration_us", "nv_inference_compute_infer_duration_us"):
        assert value(after, family, **ident) > 0
    for family in ("nv_inference_queue_duration_us", "nv_inference_compute_input_duration_us",
                   "nv_inference_compute_output_duration_us"):
        assert value(after, family, **ident) >= 0
    assert value(after, "nv_inference_request_duration_us", **ident) >= (
        value(after, "nv_inference_compute_infer_duration_us", **ident))
    failing = {"model": "failing", "version": "1"}
    assert value(after, "nv_inference_request_success", **failing) == 1
    failures = {dict(labels)["reason"]: v for (n, labels), v in after.items()
                if n == "nv_inference_request_failure" and ("model", "failing") in labels}
    assert set(failures) >= {"REJECTED", "CANCELED", "BACKEND", "OTHER"} and sum(failures.values()) == 1
    assert not [k for k in after if k[0] == "nv_inference_request_failure" and ("model", "ident") in k[1]
                and after[k] != 0]

    # The statistics API and the metrics read the same numbers.
    stats = client.get_inference_statistics("ident")["model_stats"][0]["inference_stats"]
    assert int(stats["success"]["count"]) == 5
    assert value(after, "nv_inference_request_duration_us", **ident) == int(stats["success"]["ns"]) // 1000

    # CPU figures, sampled in the background.
    assert 0.0 <= value(after, "nv_cpu_utilization") <= 1.0
    assert value(after, "nv_cpu_memory_total_bytes") >= value(after, "nv_cpu_memory_used_bytes") > 0
    assert not [n for n in names(after) if n.startswith("nv_gpu")]  # no GPU here
    assert not [n for n in names(after) if "summary" in n or n.startswith("nv_cache")]

    # Only GET /metrics.
    req = urllib.request.Request(f"http://127.0.0.1:{proc.metrics_port}/metrics", data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 405
    assert proc.stop() == 0


def test_summaries_instead_of_counters(naiad, tmp_path):
    proc = naiad("--model-repository", str(_repo(tmp_path)), "--metrics-config=summary_latencies=true",
                 "--metrics-config=counter_latencies=false", "--metrics-config=summary_quantiles=0.5:0.05,0.9:0.01")
    client = httpclient.InferenceServerClient(proc.http_address)
    for i in range(4):
        _infer(client, "ident", [float(i)])
    _, got = scrape(proc)
    ident = {"model": "ident", "version": "1", "_team": "vision"}
    assert not [n for n in names(got) if n.endswith("_duration_us")]
    assert value(got, "nv_inference_request_summary_us_count", **ident) == 4
    assert value(got, "nv_inference_queue_summary_us_count", **ident) == 4
    total_us = value(got, "nv_inference_request_summary_us_sum", **ident)
    p50 = value(got, "nv_inference_request_summary_us", **ident, quantile="0.5")
    p90 = value(got, "nv_inference_request_summary_us", **ident, quantile="0.9")
    assert 0 < p50 <= p90 <= total_us
    assert value(got, "nv_inference_request_success", **ident) == 4  # counts stay
    assert proc.stop() == 0


def test_allow_flags(naiad, tmp_path):
    repo = _repo(tmp_path)
    proc = naiad("--model-repository", str(repo), "--allow-cpu-metrics=false", "--allow-gpu-metrics=false")
    _, got = scrape(proc)
    assert "nv_inference_request_success" in names(got)
    assert not [n for n in names(got) if n.startswith(("nv_cpu", "nv_gpu"))]
    assert proc.stop() == 0

    proc = naiad("--model-repository", str(repo), "--allow-metrics=false")
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex(("127.0.0.1", proc.metrics_port)) != 0  # nothing listens
    assert "metrics service listening" not in proc.logs()
    assert proc.stop() == 0
