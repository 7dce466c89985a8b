"""Records one model version's statistics (naiad.kernel.inference.stats) as requests
complete: the figures behind the statistics API and the metrics."""

from __future__ import annotations

import copy
import time
from typing import Any, Sequence

from naiad.kernel.inference.backend import ExecutionTimes
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.stats import BatchStats, ModelStatistics


class Skipped(InferenceError):
    """The error of a request that never reached its model (cancelled or timed out while
    queued): Triton 24.04 answers it without counting it in any statistic."""


class StatsRecorder:
    __slots__ = ("stats",)

    def __init__(self, name: str, version: int) -> None:
        self.stats = ModelStatistics(name=name, version=str(version))

    def queued(self) -> None:
        self.stats.pending_requests += 1

    def dequeued(self, count: int = 1) -> None:
        self.stats.pending_requests -= count

    def request_done(self, arrival_ns: int, error: InferenceError | None = None, reason: str = "OTHER") -> None:
        """A request's last response went out: a success, or a failure unless it was `Skipped`."""
        s = self.stats
        now = time.monotonic_ns()
        if error is None:
            s.inference_stats.success.add(now - arrival_ns)
        elif not isinstance(error, Skipped):
            s.inference_stats.fail.add(now - arrival_ns)
            s.failures_by_reason[reason] = s.failures_by_reason.get(reason, 0) + 1

    def executed(self, batch_size: int, request_count: int, queue_ns_total: int, times: ExecutionTimes,
                 requests: Sequence[Any] = ()) -> None:
        """One batch ran. A request that defines `add_compute` (an ensemble's step) is told
        the batch's compute times, which Triton also counts for the ensemble."""
        ci = times.compute_input_end - times.compute_start
        cf = times.compute_output_start - times.compute_input_end
        co = times.compute_end - times.compute_output_start
        self.add_execution(batch_size, request_count, queue_ns_total, ci, cf, co)
        for r in requests:
            add_compute = getattr(r, "add_compute", None)
            if add_compute is not None:
                add_compute(ci, cf, co)

    def add_execution(self, batch_size: int, request_count: int, queue_ns_total: int, ci: int, cf: int,
                      co: int) -> None:
        """An execution of `request_count` requests with these compute input / infer /
        output times (ns, per request)."""
        s = self.stats
        s.execution_count += 1
        s.inference_count += batch_size
        s.last_inference = int(time.time() * 1000)
        inf = s.inference_stats
        inf.queue.add(queue_ns_total, request_count)
        inf.compute_input.add(ci * request_count, request_count)
        inf.compute_infer.add(cf * request_count, request_count)
        inf.compute_output.add(co * request_count, request_count)
        b = s.batch_stats.get(batch_size)
        if b is None:
            b = s.batch_stats[batch_size] = BatchStats(batch_size)
        b.compute_input.add(ci)
        b.compute_infer.add(cf)
        b.compute_output.add(co)

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
