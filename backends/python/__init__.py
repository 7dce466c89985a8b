"""Triton-compatible Python backend: each model instance runs `model.py` in its own stub process.

Modules, one job each: `backend` (the Backend the model manager sees), `instance` (one
instance: owns a stub, dispatches batches, routes responses), `launcher` (spawn, watch and
kill a stub process), `ipc` (the closed set of control messages and their framing), `shm`
(memfd regions and the arena allocator for tensor data), `stub` (the stub process itself),
`pb_utils` (what a user's model.py imports as `triton_python_backend_utils`),
`environments` (a model's own Python environment, EXECUTION_ENV_PATH) and `readiness`
(a model's `is_ready()`).

The stub imports this package too, so it stays import-light: `PythonBackend` is loaded
on first access.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PythonBackend"]


def __getattr__(name: str) -> Any:
    if name == "PythonBackend":
        from .backend import PythonBackend

        return PythonBackend
    raise AttributeError(name)
