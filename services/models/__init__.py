"""The model manager: repositories, model lifecycle, validation, scheduling, shared memory,
statistics — the service that answers the inference API on the bus."""

from .service import ModelService

__all__ = ["ModelService"]
