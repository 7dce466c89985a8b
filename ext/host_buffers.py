"""Aligned, reusable host staging buffers, page-locked for CUDA when possible.

HostBufferPool/HostBuffer come from the native module when it is built and from
the pure-Python twin otherwise (`NATIVE` says which; NAIAD_PURE_PYTHON=1 forces
the twin).  `default_pool()` is the process-wide pool: when cuda-python is
importable and a CUDA device exists, its slabs are registered with
cudaHostRegister so host<->device copies can run at full speed and
asynchronously.  NAIAD_PIN_HOST_BUFFERS=0 turns pinning off.

CUDA is probed lazily, on the first default_pool() or PINNED access, never at
import: initialising CUDA in a process that later forks breaks the children.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from .twins import native_module

_log = logging.getLogger(__name__)

__all__ = ["NATIVE", "PINNED", "HostBuffer", "HostBufferPool", "default_pool", "default_pool_bytes_in_use", "size_class"]

_native = native_module("_host_buffers")
NATIVE: bool = _native is not None
if _native is not None:
    HostBuffer, HostBufferPool, size_class = _native.HostBuffer, _native.HostBufferPool, _native.size_class
else:
    from .host_buffers_py import HostBuffer, HostBufferPool, size_class

DEFAULT_ALIGNMENT = 64  # a cache line; plenty for SIMD loads
# cudaHostRegister locks whole pages: page-aligned slabs (whose size classes are
# page multiples) never share a page, so registering one cannot clash with another.
PINNED_ALIGNMENT = 4096
DEFAULT_MAX_CACHED_BYTES = 256 << 20


def _import_cudart() -> Any:
    """cuda-python's runtime module, or None where cuda-python is absent."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6

        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # older cuda-python layout

        return cudart
    except ImportError:
        return None


def _error_of(result: Any) -> Any:
    # cuda-python returns (err, *outputs); be lenient about a bare error code.
    return result[0] if isinstance(result, tuple) else result


class _CudaPinner:
    """Slab hooks that page-lock new slabs and unlock them before they are freed.

    Hooks never raise: the first failure is logged once and turns pinning off
    for later slabs, so the pool keeps working with pageable memory.
    """

    def __init__(self, cudart: Any) -> None:
        self._cudart = cudart
        self._success = cudart.cudaError_t.cudaSuccess
        self._flags = getattr(cudart, "cudaHostRegisterDefault", 0)
        self._lock = threading.Lock()
        self._pinned: set[int] = set()
        self._disabled = False
        self._unpin_failed = False

    @property
    def active(self) -> bool:
        return not self._disabled

    def on_new_slab(self, address: int, nbytes: int) -> None:
        if self._disabled:
            return
        try:
            err = _error_of(self._cudart.cudaHostRegister(address, nbytes, self._flags))
        except Exception as exc:  # a broken binding must not break acquire()
            err = exc
        if err != self._success:
            self._disabled = True
            _log.warning("cudaHostRegister of a %d-byte host buffer failed (%s); "
                         "host buffers stay pageable from now on", nbytes, err)
            return
        with self._lock:
            self._pinned.add(address)

    def on_free_slab(self, address: int, nbytes: int) -> None:
        with self._lock:
            if address not in self._pinned:
                return
            self._pinned.discard(address)
        try:
            err = _error_of(self._cudart.cudaHostUnregister(address))
        except Exception as exc:
            err = exc
        if err != self._success and not self._unpin_failed:
            self._unpin_failed = True
            _log.warning("cudaHostUnregister of a %d-byte host buffer failed (%s); "
                         "further failures are not logged", nbytes, err)


def _probe_pinner() -> _CudaPinner | None:
    if os.environ.get("NAIAD_PIN_HOST_BUFFERS") == "0":
        return None
    cudart = _import_cudart()
    if cudart is None:
        return None
    try:
        err, count = cudart.cudaGetDeviceCount()
        if err != cudart.cudaError_t.cudaSuccess or count <= 0:
            _log.info("no usable CUDA device (%s, count=%s); host buffers are pageable", err, count)
            return None
        return _CudaPinner(cudart)
    except Exception as exc:
        _log.info("CUDA probe failed (%r); host buffers are pageable", exc)
        return None


_default_lock = threading.Lock()
_default: tuple[Any, _CudaPinner | None] | None = None  # (pool, pinner)


def default_pool_bytes_in_use() -> int:
    """Bytes held from the process-wide pool; 0 before anything made it (this never makes
    it: making it probes CUDA)."""
    made = _default
    return int(made[0].stats()["bytes_in_use"]) if made is not None else 0


def default_pool() -> Any:
    """The process-wide HostBufferPool, created (and CUDA probed) on first use."""
    global _default
    with _default_lock:
        if _default is None:
            pinner = _probe_pinner()
            if pinner is None:
                pool = HostBufferPool(DEFAULT_ALIGNMENT, DEFAULT_MAX_CACHED_BYTES)
            else:
                pool = HostBufferPool(
                    PINNED_ALIGNMENT,
                    DEFAULT_MAX_CACHED_BYTES,
                    on_new_slab=pinner.on_new_slab,
                    on_free_slab=pinner.on_free_slab,
                )
            _default = (pool, pinner)
        return _default[0]


def __getattr__(name: str) -> Any:
    # PINNED is computed on access so that importing this module never touches CUDA.
    if name == "PINNED":
        default_pool()
        assert _default is not None
        pinner = _default[1]
        return pinner is not None and pinner.active
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
