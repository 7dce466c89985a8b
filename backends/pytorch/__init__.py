"""Triton-compatible PyTorch backend: `backend: "pytorch"` / `platform: "pytorch_libtorch"`
models (`<version>/model.pt`, TorchScript).

Modules: `backend` (the Backend the model manager sees: auto-complete, instances, weight
sharing), `naming` (Triton's rules mapping config tensor names to forward() arguments and
results), `signature` (forward()'s schema and the auto-complete built on it) and
`instance` (one loaded module per instance, run on the instance's own thread and, on a
GPU, its own CUDA stream).

`torch` is imported on first use (it is slow to import and optional: `naiad[torch]`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PyTorchBackend"]


def __getattr__(name: str) -> Any:
    if name == "PyTorchBackend":
        from .backend import PyTorchBackend

        return PyTorchBackend
    raise AttributeError(name)
