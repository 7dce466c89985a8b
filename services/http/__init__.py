"""HTTP/REST service: KServe v2 with Triton's extensions."""

from .service import HttpService

__all__ = ["HttpService"]
