"""Per-model statistics in Triton's shape — the one source of truth that the statistics
APIs (HTTP, gRPC) and the Prometheus metrics both read."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Duration:
    """A count and a total in nanoseconds (Triton's StatisticDuration)."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        # Triton's figures are unsigned: a clock that went backwards adds nothing.
        self.count += count
        if ns > 0:
            self.ns += ns


@dataclass(slots=True)
class InferStats:
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    cache_hit: Duration = field(default_factory=Duration)
    cache_miss: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class BatchStats:
    batch_size: int
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class ResponseStats:
    """Per response index of decoupled models ("0", "1", ...)."""

    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    empty_response: Duration = field(default_factory=Duration)
    cancel: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class MemoryUsage:
    type: str
    id: int
    byte_size: int


@dataclass(slots=True)
class ModelStatistics:
    name: str
    version: str
    last_inference: int = 0  # ms since the epoch
    inference_count: int = 0  # batch elements inferred
    execution_count: int = 0  # model executions
    inference_stats: InferStats = field(default_factory=InferStats)
    response_stats: dict[str, ResponseStats] = field(default_factory=dict)
    batch_stats: dict[int, BatchStats] = field(default_factory=dict)
    memory_usage: list[MemoryUsage] = field(default_factory=list)
    # Not in Triton's statistics message but needed for its metrics.
    pending_requests: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    load_duration_s: float = 0.0  # nv_model_load_duration_secs
    # nv_inference_first_response_histogram_ms: upper bounds (ms) and per-bucket counts
    # (one more than the bounds: +Inf), sum of the observations.
    first_response_bounds: tuple[float, ...] = (100.0, 500.0, 2000.0, 5000.0)
    first_response_counts: list[int] = field(default_factory=lambda: [0] * 5)
    first_response_sum_ms: float = 0.0
