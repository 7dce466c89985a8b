"""Status service: a live page (HTML + JSON) on the metrics port showing models, their
throughput, latency and queues over the last minutes, stub processes, config and uptime."""

from .service import StatusService

__all__ = ["StatusService"]
