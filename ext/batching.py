"""Batch gather/scatter for the dynamic batcher: native when built, numpy twin otherwise.

`NATIVE` tells which one is in use.  NAIAD_PURE_PYTHON=1 forces the twin.
"""

from __future__ import annotations

from .twins import native_module

__all__ = ["NATIVE", "gather", "scatter"]

_native = native_module("_batching")
NATIVE: bool = _native is not None
if _native is not None:
    gather, scatter = _native.gather, _native.scatter
else:
    from .batching_py import gather, scatter
