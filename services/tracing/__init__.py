"""Tracing service: Triton's trace settings, its JSON trace file and OpenTelemetry export."""

from .service import TracingService

__all__ = ["TracingService"]
