"""naiad's in-process Python API (`from naiad import Server`); see naiad.server."""

from naiad.kernel.inference.errors import ErrorCode, InferenceError

from .server import Model, Server

__all__ = ["ErrorCode", "InferenceError", "Model", "Server"]
