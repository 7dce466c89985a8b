"""Triton-compatible ONNX Runtime backend: `backend: "onnxruntime"` / `platform:
"onnxruntime_onnx"` models (`<version>/model.onnx`).

Modules: `backend` (the Backend the model manager sees: auto-complete, instances),
`signature` (a model's inputs and outputs read from the ONNX graph, without building a
session), `session` (SessionOptions, execution providers and run options from the model
config, as Triton's onnxruntime backend names them) and `instance` (one InferenceSession
per instance, run on the instance's own thread).

`onnxruntime` (and `onnx`, for fast auto-complete) are imported on first use: naiad runs
without them, and a model that needs them fails to load with a line saying what to install.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OnnxRuntimeBackend"]


def __getattr__(name: str) -> Any:
    if name == "OnnxRuntimeBackend":
        from .backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend
    raise AttributeError(name)
