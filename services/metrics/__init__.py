"""Metrics service: Triton's Prometheus metrics on their own port (`GET /metrics`)."""

from .service import MetricsService

__all__ = ["MetricsService"]
