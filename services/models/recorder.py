"""Records one model version's statistics (naiad.kernel.inference.stats) as requests
complete: the figures behind the statistics API and the metrics."""

from __future__ import annotations

import copy
import time

from naiad.kernel.inference.backend import ExecutionTimes
from naiad.kernel.inference.stats import BatchStats, ModelStatistics


class StatsRecorder:
    __slots__ = ("stats",)

    def __init__(self, name: str, version: int) -> None:
        self.stats = ModelStatistics(name=name, version=str(version))

    def queued(self) -> None:
        self.stats.pending_requests += 1

    def dequeued(self, count: int = 1) -> None:
        self.stats.pending_requests -= count

    def request_done(self, arrival_ns: int, ok: bool, reason: str = "OTHER") -> None:
        s = self.stats
        now = time.monotonic_ns()
        if ok:
            s.inference_stats.success.add(now - arrival_ns)
        else:
            s.inference_stats.fail.add(now - arrival_ns)
            s.failures_by_reason[reason] = s.failures_by_reason.get(reason, 0) + 1

    def executed(self, batch_size: int, request_count: int, queue_ns_total: int, times: ExecutionTimes) -> None:
        s = self.stats
        s.execution_count += 1
        s.inference_count += batch_size
        s.last_inference = int(time.time() * 1000)
        ci = times.compute_input_end - times.compute_start
        cf = times.compute_output_start - times.compute_input_end
        co = times.compute_end - times.compute_output_start
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

    def cache(self, hit: bool, ns: int) -> None:
        (self.stats.inference_stats.cache_hit if hit else self.stats.inference_stats.cache_miss).add(ns)

    def snapshot(self) -> ModelStatistics:
        return copy.deepcopy(self.stats)
