"""Records one model version's statistics (naiad.kernel.inference.stats) as requests
complete: the figures behind the statistics API and the metrics."""

from __future__ import annotations

import bisect
import copy
import time
from typing import Any, NamedTuple, Sequence

from naiad.kernel.inference.backend import ExecutionTimes
from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.stats import BatchStats, ModelStatistics
from naiad.kernel.inference.types import InferenceResponse, ResponseSink


class Skipped(InferenceError):
    """The error of a request that never reached its model (cancelled or timed out while
    queued): Triton 24.04 answers it without counting it in any statistic."""


class AnswerWatch(ResponseSink):
    """A request's sink during one execution of a non-decoupled model: remembers whether
    the execution answered it with an error (Triton then reports it failed)."""

    __slots__ = ("inner", "failed")

    def __init__(self, inner: ResponseSink) -> None:
        self.inner = inner
        self.failed = False

    def send(self, response: InferenceResponse) -> None:
        if response.final and response.error is not None:
            self.failed = True
        self.inner.send(response)

    def finish(self, error: InferenceError | None = None) -> None:
        if error is not None:
            self.failed = True
        self.inner.finish(error)

    def reschedule(self) -> bool:
        return self.inner.reschedule()

    def released(self) -> None:
        released = getattr(self.inner, "released", None)
        if released is not None:
            released()


class Ran(NamedTuple):
    """A request of an execution, for `StatsRecorder.executed`."""

    request: Any
    batch_size: int
    queue_ns: int  # from its queue start to the execution's start
    watch: AnswerWatch | None  # None: decoupled (it succeeded unless the execution failed)


# The core families whose buckets a model config's `model_metrics` may set (Triton 24.11+).
HISTOGRAM_FAMILIES = ("nv_inference_first_response_histogram_ms",)


def first_response_bounds(config: Any, log: Any) -> tuple[float, ...] | None:
    """The buckets `model_metrics.metric_control` sets for the first-response histogram
    (the last entry naming it wins, as in Triton), or None for the default ones. Raises
    InferenceError for buckets that do not increase (Triton's prometheus-cpp refuses them)."""
    bounds = None
    if not config.HasField("model_metrics"):
        return None
    for control in config.model_metrics.metric_control:
        family = control.metric_identifier.family
        if family not in HISTOGRAM_FAMILIES:
            log.warning("Metric family '%s' in 'metric_identifier' is not a customizable metric in Triton core.",
                        family)
            continue
        bounds = tuple(control.histogram_options.buckets)
        if any(later <= earlier for earlier, later in zip(bounds, bounds[1:])):
            raise InferenceError.invalid(
                f"model '{config.name}': the buckets of '{family}' must be strictly increasing, got {list(bounds)}")
    return bounds


class StatsRecorder:
    __slots__ = ("stats",)

    def __init__(self, name: str, version: int, first_response_bounds: tuple[float, ...] | None = None) -> None:
        self.stats = ModelStatistics(name=name, version=str(version))
        if first_response_bounds is not None:
            self.stats.first_response_bounds = first_response_bounds
            self.stats.first_response_counts = [0] * (len(first_response_bounds) + 1)

    def queued(self) -> None:
        self.stats.pending_requests += 1

    def dequeued(self, count: int = 1) -> None:
        self.stats.pending_requests -= count

    def first_response(self, arrival_ns: int) -> None:
        """A request's first response went out (Triton observes whole milliseconds)."""
        s = self.stats
        ms = (time.monotonic_ns() - arrival_ns) // 1_000_000
        s.first_response_sum_ms += ms
        s.first_response_counts[bisect.bisect_left(s.first_response_bounds, ms)] += 1

    def request_done(self, arrival_ns: int, error: InferenceError | None = None, reason: str = "OTHER") -> None:
        """A request's last response went out: a success, or a failure unless it was `Skipped`.

        `reason` is the failure's label on `nv_inference_request_failure` (Triton's BACKEND
        when the model answered with the error, OTHER otherwise). A `Skipped` request counts
        in no statistic, as in 24.04, but in that metric as later Triton counts it: CANCELED,
        or REJECTED (timed out in the queue)."""
        s = self.stats
        now = time.monotonic_ns()
        if error is None:
            s.inference_stats.success.add(now - arrival_ns)
            return
        if isinstance(error, Skipped):
            reason = "CANCELED" if error.code == ErrorCode.CANCELLED else "REJECTED"
        else:
            s.inference_stats.fail.add(now - arrival_ns)
        s.failures_by_reason[reason] = s.failures_by_reason.get(reason, 0) + 1

    def executed(self, times: ExecutionTimes, decoupled: bool, batch: Sequence[Ran]) -> None:
        """One execution of `batch`. As Triton's backends report it: the batch counts
        (execution_count, batch_stats) unless the execution failed as a whole (a decoupled
        Python model's counts even then); each request counts its queue and compute times
        and its batch size only when it succeeded (TRITONBACKEND_ModelInstanceReportStatistics
        with success: a request answered with an error counts only as a failure, when it
        ends). A request that defines `add_compute` (an ensemble's step) is told its
        compute times, which Triton also counts for the ensemble when the step succeeded."""
        ci = times.compute_input_end - times.compute_start
        cf = times.compute_output_start - times.compute_input_end
        co = times.compute_end - times.compute_output_start
        if decoupled or not times.failed:
            self._batch(sum(r.batch_size for r in batch), ci, cf, co)
        if times.failed:
            return
        for r in batch:
            if r.watch is not None and r.watch.failed:
                continue
            self._request(r.batch_size, r.queue_ns, ci, cf, co)
            add_compute = getattr(r.request, "add_compute", None)
            if add_compute is not None:
                add_compute(ci, cf, co)

    def skipped(self, reason: str, count: int = 1) -> None:
        """Requests answered without reaching their model (`Skipped`): counted only in the
        failure metric, under CANCELED or REJECTED (see request_done)."""
        s = self.stats
        s.failures_by_reason[reason] = s.failures_by_reason.get(reason, 0) + count

    def lane_executed(self, times: ExecutionTimes, batch_size: int, count: int, queue_ns: int,
                      summary: tuple[int, int, int, int, list[int]]) -> None:
        """One execution of `count` lane requests (ext/lane/batch.h), counted as `executed`
        and `request_done` count a Python batch: `summary` is (succeeded, their total ns,
        failed, their total ns, [ms to the answer, per request]); `queue_ns` the requests'
        total queue time. A failed request counts as answered by its model (BACKEND)."""
        ok, ok_ns, failed, failed_ns, first_ms = summary
        ci = times.compute_input_end - times.compute_start
        cf = times.compute_output_start - times.compute_input_end
        co = times.compute_end - times.compute_output_start
        if not times.failed:
            self._batch(batch_size, ci, cf, co)
            if ok:
                # (per-request batch sizes stay native: when some failed, count them pro rata)
                share = batch_size if ok == count else max(ok, batch_size * ok // count)
                self._request(share, queue_ns * ok // count, ci * ok, cf * ok, co * ok, ok)
        s = self.stats
        if ok:
            s.inference_stats.success.add(ok_ns, ok)
        if failed:
            s.inference_stats.fail.add(failed_ns, failed)
            s.failures_by_reason["BACKEND"] = s.failures_by_reason.get("BACKEND", 0) + failed
        bounds, counts = s.first_response_bounds, s.first_response_counts
        for ms in first_ms:
            s.first_response_sum_ms += ms
            counts[bisect.bisect_left(bounds, ms)] += 1

    def add_execution(self, batch_size: int, request_count: int, queue_ns_total: int, ci: int, cf: int,
                      co: int) -> None:
        """An execution of `request_count` successful requests with these compute input /
        infer / output times (ns, per request)."""
        self._batch(batch_size, ci, cf, co)
        self._request(batch_size, queue_ns_total, ci * request_count, cf * request_count, co * request_count,
                      request_count)

    def _batch(self, batch_size: int, ci: int, cf: int, co: int) -> None:
        s = self.stats
        s.execution_count += 1
        s.last_inference = int(time.time() * 1000)
        b = s.batch_stats.get(batch_size)
        if b is None:
            b = s.batch_stats[batch_size] = BatchStats(batch_size)
        b.compute_input.add(ci)
        b.compute_infer.add(cf)
        b.compute_output.add(co)

    def _request(self, batch_size: int, queue_ns: int, ci: int, cf: int, co: int, count: int = 1) -> None:
        s = self.stats
        s.inference_count += batch_size
        inf = s.inference_stats
        inf.queue.add(queue_ns, count)
        inf.compute_input.add(ci, count)
        inf.compute_infer.add(cf, count)
        inf.compute_output.add(co, count)

    def add_compute(self, batch_size: int, ci: int, cf: int, co: int) -> None:
        """Compute time that belongs to an execution already counted."""
        inf = self.stats.inference_stats
        b = self.stats.batch_stats.get(batch_size)
        for total, batch, ns in ((inf.compute_input, b and b.compute_input, ci),
                                 (inf.compute_infer, b and b.compute_infer, cf),
                                 (inf.compute_output, b and b.compute_output, co)):
            total.add(ns, 0)
            if batch:
                batch.add(ns, 0)

    def cache(self, hit: bool, ns: int) -> None:
        inf = self.stats.inference_stats
        if hit:
            # As Triton: a hit is also a queued request (its queue time ends at the lookup).
            inf.cache_hit.add(ns)
            inf.queue.add(0)
        else:
            inf.cache_miss.add(ns)

    def snapshot(self) -> ModelStatistics:
        return copy.deepcopy(self.stats)
