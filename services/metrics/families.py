"""The per-model metric families (`core:src/metrics.cc`, `metric_model_reporter.cc`),
built from one statistics snapshot per scrape: a prometheus_client custom collector whose
`collect()` reads the snapshot it was last given.

Labels: `model`, `version`, then `_<key>` for each `metric_tags` entry of the model config.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client.core import Metric

from naiad.kernel.inference.stats import ModelStatistics

from .model_info import ModelInfo
from .options import MetricsOptions
from .summaries import DeltaSummary

FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")

# name, help, reads the value from a snapshot
_COUNTS: tuple[tuple[str, str, Callable[[ModelStatistics], float]], ...] = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes",
     lambda s: s.inference_stats.success.count),
    ("nv_inference_count", "Number of inferences performed (does not include cached requests)",
     lambda s: s.inference_count),
    ("nv_inference_exec_count", "Number of model executions performed (does not include cached requests)",
     lambda s: s.execution_count),
)
_LATENCY_COUNTERS: tuple[tuple[str, str, Callable[[ModelStatistics], float]], ...] = (
    ("nv_inference_request_duration_us",
     "Cumulative inference request duration in microseconds (includes cached requests)",
     lambda s: s.inference_stats.success.ns // 1000),
    ("nv_inference_queue_duration_us",
     "Cumulative inference queuing duration in microseconds (includes cached requests)",
     lambda s: s.inference_stats.queue.ns // 1000),
    ("nv_inference_compute_input_duration_us",
     "Cumulative compute input duration in microseconds (does not include cached requests)",
     lambda s: s.inference_stats.compute_input.ns // 1000),
    ("nv_inference_compute_infer_duration_us",
     "Cumulative compute inference duration in microseconds (does not include cached requests)",
     lambda s: s.inference_stats.compute_infer.ns // 1000),
    ("nv_inference_compute_output_duration_us",
     "Cumulative inference compute output duration in microseconds (does not include cached requests)",
     lambda s: s.inference_stats.compute_output.ns // 1000),
)
_CACHE_COUNTERS: tuple[tuple[str, str, Callable[[ModelStatistics], float]], ...] = (
    ("nv_cache_num_hits_per_model", "Number of cache hits per model",
     lambda s: s.inference_stats.cache_hit.count),
    ("nv_cache_hit_duration_per_model", "Total cache hit duration per model, in microseconds",
     lambda s: s.inference_stats.cache_hit.ns // 1000),
    ("nv_cache_num_misses_per_model", "Number of cache misses per model",
     lambda s: s.inference_stats.cache_miss.count),
    ("nv_cache_miss_duration_per_model",
     "Total cache miss (insert+lookup) duration per model, in microseconds",
     lambda s: s.inference_stats.cache_miss.ns // 1000),
)
# name, help, which Duration, only without the cache, only with it
_SUMMARIES: tuple[tuple[str, str, str, bool, bool], ...] = (
    ("nv_inference_request_summary_us",
     "Summary of inference request duration in microseconds (includes cached requests)", "success", True, False),
    ("nv_inference_queue_summary_us",
     "Summary of inference queuing duration in microseconds (includes cached requests)", "queue", False, False),
    ("nv_inference_compute_input_summary_us",
     "Summary of compute input duration in microseconds (does not include cached requests)",
     "compute_input", False, False),
    ("nv_inference_compute_infer_summary_us",
     "Summary of compute inference duration in microseconds (does not include cached requests)",
     "compute_infer", False, False),
    ("nv_inference_compute_output_summary_us",
     "Summary of inference compute output duration in microseconds (does not include cached requests)",
     "compute_output", False, False),
    ("nv_cache_hit_summary_per_model", "Summary of cache hit duration per model, in microseconds",
     "cache_hit", False, True),
    ("nv_cache_miss_summary_per_model",
     "Summary of cache miss (insert+lookup) duration per model, in microseconds", "cache_miss", False, True),
)


class ModelFamilies:
    """prometheus_client collector of the per-model families."""

    def __init__(self, options: MetricsOptions) -> None:
        self.options = options
        self._rows: list[tuple[ModelStatistics, ModelInfo]] = []
        self._summaries: dict[tuple[str, str, str], DeltaSummary] = {}

    def update(self, rows: list[tuple[ModelStatistics, ModelInfo]]) -> None:
        """Take a new snapshot (and feed the summaries with what changed)."""
        self._rows = rows
        if self.options.summary_latencies:
            self.observe(rows)

    def observe(self, rows: list[tuple[ModelStatistics, ModelInfo]]) -> None:
        live = set()
        for stats, info in rows:
            for name, _, which, no_cache, with_cache in _SUMMARIES:
                if (no_cache and info.cache) or (with_cache and not info.cache):
                    continue
                key = (stats.name, stats.version, which)
                live.add(key)
                d = getattr(stats.inference_stats, which)
                summary = self._summaries.get(key)
                if summary is None:
                    summary = self._summaries[key] = DeltaSummary()
                summary.update(d.count, d.ns)
        for key in [k for k in self._summaries if k not in live]:  # unloaded models
            del self._summaries[key]

    @staticmethod
    def _labels(stats: ModelStatistics, info: ModelInfo) -> dict[str, str]:
        labels = {"model": stats.name, "version": stats.version}
        labels.update(info.extra_labels)
        return labels

    def collect(self) -> Iterator[Metric]:
        rows = self._rows
        labelled = [(s, i, self._labels(s, i)) for s, i in rows]
        yield from self._counters(_COUNTS[:1], labelled)
        failure = Metric("nv_inference_request_failure", "Number of failed inference requests, all batch sizes",
                         "counter")
        for s, _, labels in labelled:
            reasons = dict.fromkeys(FAILURE_REASONS, 0)
            reasons.update(s.failures_by_reason)
            # BACKEND and OTHER failures are the statistics' fail count; REJECTED and CANCELED
            # requests are not in it (24.04 counts them nowhere) but are in this metric.
            unexplained = s.inference_stats.fail.count - reasons["BACKEND"] - reasons["OTHER"]
            if unexplained > 0:
                reasons["OTHER"] += unexplained
            for reason, n in reasons.items():
                failure.add_sample("nv_inference_request_failure", {**labels, "reason": reason}, n)
        yield failure
        yield from self._counters(_COUNTS[1:], labelled)
        pending = Metric("nv_inference_pending_request_count",
                         "Instantaneous number of pending requests awaiting execution per-model.", "gauge")
        for s, _, labels in labelled:
            pending.add_sample(pending.name, labels, max(s.pending_requests, 0))
        yield pending
        load = Metric("nv_model_load_duration_secs", "Model load time in seconds", "gauge")
        for s, _, labels in labelled:
            load.add_sample(load.name, labels, s.load_duration_s)
        yield load
        if self.options.histogram_latencies:
            yield self._first_response_histogram(labelled)
        if self.options.counter_latencies:
            yield from self._counters(_LATENCY_COUNTERS, labelled)
            cached = [row for row in labelled if row[1].cache]
            if cached:
                yield from self._counters(_CACHE_COUNTERS, cached)
        if self.options.summary_latencies:
            yield from self._summary_families(labelled)

    @staticmethod
    def _first_response_histogram(labelled: list) -> Metric:
        name = "nv_inference_first_response_histogram_ms"
        m = Metric(name, "Duration from request to first response in milliseconds", "histogram")
        for s, _, labels in labelled:
            cumulative = 0
            for bound, n in zip((*s.first_response_bounds, float("inf")), s.first_response_counts):
                cumulative += n
                m.add_sample(name + "_bucket", {**labels, "le": "+Inf" if bound == float("inf") else format(bound, "g")},
                             cumulative)
            m.add_sample(name + "_count", labels, cumulative)
            m.add_sample(name + "_sum", labels, s.first_response_sum_ms)
        return m

    @staticmethod
    def _counters(table: tuple, labelled: list) -> Iterator[Metric]:
        for name, doc, read in table:
            m = Metric(name, doc, "counter")
            for s, _, labels in labelled:
                m.add_sample(name, labels, read(s))
            yield m

    def _summary_families(self, labelled: list) -> Iterator[Metric]:
        qs = [q for q, _ in self.options.quantiles]
        for name, doc, which, no_cache, with_cache in _SUMMARIES:
            m = Metric(name, doc, "summary")
            for s, info, labels in labelled:
                if (no_cache and info.cache) or (with_cache and not info.cache):
                    continue
                summary = self._summaries.get((s.name, s.version, which))
                if summary is None:
                    continue
                m.add_sample(name + "_count", labels, summary.count)
                m.add_sample(name + "_sum", labels, summary.sum_us)
                for q, v in zip(qs, summary.window.quantiles(qs)):
                    m.add_sample(name, {**labels, "quantile": format(q, "g")}, v)
            if m.samples:
                yield m
