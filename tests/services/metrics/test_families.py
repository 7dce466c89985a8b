"""The metric families as pure logic: what a statistics snapshot renders to, Triton's text
format, the latency summaries and the `--metrics-config` options."""

from __future__ import annotations

import math

import pytest

from naiad.kernel.inference.stats import ModelStatistics
from naiad.kernel.schema import ConfigError
from naiad.services.metrics.exposition import format_value, render
from naiad.services.metrics.families import ModelFamilies
from naiad.services.metrics.host_families import HostFamilies
from naiad.services.metrics.gpu import GpuReading
from naiad.services.metrics.model_info import ModelInfo
from naiad.services.metrics.options import DEFAULT_QUANTILES, parse
from naiad.services.metrics.summaries import DeltaSummary, SlidingQuantiles
from naiad.services.metrics.system import CpuReading


def _stats(name="m", version="1", n=4, ns=4_000_000) -> ModelStatistics:
    s = ModelStatistics(name, version)
    s.inference_count = n * 2
    s.execution_count = n
    inf = s.inference_stats
    inf.success.add(ns, n)
    inf.queue.add(ns // 4, n)
    inf.compute_input.add(ns // 8, n)
    inf.compute_infer.add(ns // 2, n)
    inf.compute_output.add(ns // 8, n)
    inf.fail.add(1000, 2)
    s.failures_by_reason = {"BACKEND": 1}
    s.pending_requests = 3
    return s


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_model_families_from_one_snapshot():
    fam = ModelFamilies(parse([]))
    info = ModelInfo((("team", "vision"),), False, {"_team": "vision"})
    fam.update([(_stats(), info)])
    text = render(fam.collect()).decode()
    assert "# TYPE nv_inference_request_success counter" in text  # no _total suffix
    assert "# TYPE nv_inference_pending_request_count gauge" in text
    got = _samples(text)
    labels = 'model="m",version="1",_team="vision"'
    assert got[f"nv_inference_request_success{{{labels}}}"] == 4
    assert got[f"nv_inference_count{{{labels}}}"] == 8
    assert got[f"nv_inference_exec_count{{{labels}}}"] == 4
    assert got[f"nv_inference_pending_request_count{{{labels}}}"] == 3
    assert got[f"nv_inference_request_duration_us{{{labels}}}"] == 4000
    assert got[f"nv_inference_queue_duration_us{{{labels}}}"] == 1000
    assert got[f"nv_inference_compute_infer_duration_us{{{labels}}}"] == 2000
    assert got[f'nv_inference_request_failure{{{labels},reason="BACKEND"}}'] == 1
    assert got[f'nv_inference_request_failure{{{labels},reason="OTHER"}}'] == 1  # the unexplained one
    assert got[f'nv_inference_request_failure{{{labels},reason="REJECTED"}}'] == 0
    assert "nv_cache" not in text and "summary" not in text


def test_cache_families_only_for_models_with_the_cache():
    fam = ModelFamilies(parse([]))
    cached = _stats("c")
    cached.inference_stats.cache_hit.add(3000, 3)
    cached.inference_stats.cache_miss.add(5000, 1)
    fam.update([(cached, ModelInfo((), True)), (_stats("plain"), ModelInfo())])
    got = _samples(render(fam.collect()).decode())
    assert got['nv_cache_num_hits_per_model{model="c",version="1"}'] == 3
    assert got['nv_cache_hit_duration_per_model{model="c",version="1"}'] == 3
    assert got['nv_cache_num_misses_per_model{model="c",version="1"}'] == 1
    assert got['nv_cache_miss_duration_per_model{model="c",version="1"}'] == 5
    assert not [k for k in got if k.startswith("nv_cache") and 'model="plain"' in k]


def test_summaries_on_counters_off():
    fam = ModelFamilies(parse(["counter_latencies=false", "summary_latencies=true",
                               "summary_quantiles=0.5:0.05,0.99:0.001"]))
    s = _stats(n=0, ns=0)
    fam.update([(s, ModelInfo())])
    for i, us in enumerate((100, 200, 300, 400), start=1):  # one request per reading
        s.inference_stats.success.add(us * 1000, 1)
        fam.update([(s, ModelInfo())])
    text = render(fam.collect()).decode()
    assert "duration_us" not in text
    assert "# TYPE nv_inference_request_summary_us summary" in text
    got = _samples(text)
    base = 'model="m",version="1"'
    assert got[f"nv_inference_request_summary_us_count{{{base}}}"] == 4
    assert got[f"nv_inference_request_summary_us_sum{{{base}}}"] == 1000
    assert got[f'nv_inference_request_summary_us{{{base},quantile="0.5"}}'] == 200
    assert got[f'nv_inference_request_summary_us{{{base},quantile="0.99"}}'] == 400
    assert "nv_cache_hit_summary_per_model" not in text


def test_sliding_window_forgets_old_observations():
    w = SlidingQuantiles(max_age=60)
    w.observe(5.0, 1, now=0.0)
    w.observe(1.0, 3, now=50.0)
    assert w.quantiles([0.5, 1.0], now=55.0) == [1.0, 5.0]
    assert w.quantiles([0.5], now=100.0) == [1.0]
    assert math.isnan(w.quantiles([0.5], now=200.0)[0])
    d = DeltaSummary()
    d.update(2, 4000)
    d.update(1, 1000)  # totals went back: the model was reloaded
    assert (d.count, d.sum_us) == (1, 1.0)


def test_host_families():
    host = HostFamilies()
    host.cpu = CpuReading(0.25, 1000, 400)
    host.gpus = [GpuReading("GPU-abc", 0.5, 80, 40, 100.5, 300.0, 12.0)]
    text = render(host.collect()).decode()
    got = _samples(text)
    assert got["nv_cpu_utilization"] == 0.25 and got["nv_cpu_memory_used_bytes"] == 400
    assert got['nv_gpu_utilization{gpu_uuid="GPU-abc"}'] == 0.5
    assert got['nv_gpu_power_usage{gpu_uuid="GPU-abc"}'] == 100.5
    assert "# TYPE nv_energy_consumption counter" in text


def test_text_format_details():
    assert format_value(3.0) == "3" and format_value(0.25) == "0.25" and format_value(math.nan) == "NaN"
    assert format_value(7) == "7"


def test_metrics_config_options():
    o = parse([])
    assert o.counter_latencies and not o.summary_latencies and o.quantiles == DEFAULT_QUANTILES
    o = parse(["summary_latencies=true", "counter_latencies=false", 'summary_quantiles="0.5:0.05, 0.9:0.01"'])
    assert not o.counter_latencies and o.summary_latencies and o.quantiles == ((0.5, 0.05), (0.9, 0.01))
    for bad in ("bogus=1", "counter_latencies=maybe", "summary_quantiles=0.5", "summary_quantiles=2:0.1", "x"):
        with pytest.raises(ConfigError):
            parse([bad])


class _FakeNvml:
    """Stands in for pynvml (no GPU on this machine): two GPUs with fixed readings."""

    class _Util:
        gpu = 40

    class _Mem:
        total, used = 80 * 2**30, 10 * 2**30

    def __init__(self) -> None:
        self.energy = 5000.0

    def nvmlDeviceGetUtilizationRates(self, h):
        return self._Util()

    def nvmlDeviceGetMemoryInfo(self, h):
        return self._Mem()

    def nvmlDeviceGetPowerUsage(self, h):
        return 123456  # mW

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 700000

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self.energy += 1500.0  # mJ
        return self.energy

    def nvmlShutdown(self):
        pass


def test_gpu_sampler_readings():
    from naiad.services.metrics.gpu import GpuSampler

    sampler = GpuSampler(_FakeNvml(), [0, 1], ["GPU-a", "GPU-b"])
    readings = sampler.sample()
    assert [r.uuid for r in readings] == ["GPU-a", "GPU-b"]
    r = readings[0]
    assert (r.utilization, r.memory_total, r.memory_used) == (0.4, 80 * 2**30, 10 * 2**30)
    assert (r.power_usage, r.power_limit) == (123.456, 700.0)
    assert r.energy > 0  # joules since the sampler opened


def test_gpu_sampler_absent_without_nvml():
    from naiad.services.metrics.gpu import GpuSampler

    try:
        import pynvml  # noqa: F401
    except ImportError:
        assert GpuSampler.open() is None
    else:
        pytest.skip("nvidia-ml-py installed here")
