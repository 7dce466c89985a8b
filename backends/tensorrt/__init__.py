"""Triton-compatible TensorRT backend: `backend: "tensorrt"` / `platform: "tensorrt_plan"`
models (`<version>/model.plan`), through TensorRT's Python API (>= 10) and cuda-python.

Modules: `backend` (the Backend the model manager sees), `engine` (the engine's I/O
tensors and profiles, auto-complete, config checks, profile choice: pure logic) and
`instance` (engine, execution contexts, stream, event and device buffers of one
instance). `tensorrt` and cuda-python are imported on first use (`naiad[tensorrt]`):
without them, or without a GPU, a TensorRT model fails to load with a line saying why.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TensorRTBackend"]


def __getattr__(name: str) -> Any:
    if name == "TensorRTBackend":
        from .backend import TensorRTBackend

        return TensorRTBackend
    raise AttributeError(name)
