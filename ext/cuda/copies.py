"""Host<->device copies on a stream: the native `_cuda_copy` module (GIL released)
where it is built, else its cuda-python twin (`PYTHON_COPIES`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .runtime import CudaError, check, require
from .streams import Stream

def host_address(buffer: Any) -> tuple[int, int]:
    """(address, nbytes) of a C-contiguous host buffer (ndarray, HostBuffer, memoryview)."""
    array = buffer if isinstance(buffer, np.ndarray) else np.frombuffer(buffer, dtype=np.uint8)
    if not array.flags.c_contiguous:
        raise ValueError("host buffer must be C-contiguous")
    return int(array.__array_interface__["data"][0]), int(array.nbytes)


class _PythonCopies:
    """The copies over cuda-python: the twin of the native `_cuda_copy` module, with the
    same signatures (streams by handle, host memory as buffers, `nbytes=-1` for all)."""

    @staticmethod
    def _async(dst: int, src: int, nbytes: int, kind: str, stream: int, what: str) -> None:
        if nbytes:
            rt = require(what)
            check(rt.cudaMemcpyAsync(dst, src, nbytes, getattr(rt.cudaMemcpyKind, kind), stream), what)

    @staticmethod
    def _size(available: int, nbytes: int) -> int:
        if nbytes < 0:
            return available
        if nbytes > available:
            raise ValueError(f"nbytes ({nbytes}) exceeds the host buffer ({available} bytes)")
        return nbytes

    def copy_h2d(self, dst: int, src: Any, stream: int, nbytes: int = -1) -> None:
        address, size = host_address(src)
        self._async(dst, address, self._size(size, nbytes), "cudaMemcpyHostToDevice", stream,
                    "cudaMemcpyAsync(host to device)")

    def copy_d2h(self, dst: Any, src: int, stream: int, nbytes: int = -1) -> None:
        address, size = host_address(dst)
        self._async(address, src, self._size(size, nbytes), "cudaMemcpyDeviceToHost", stream,
                    "cudaMemcpyAsync(device to host)")

    def copy_d2d(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._async(dst, src, nbytes, "cudaMemcpyDeviceToDevice", stream, "cudaMemcpyAsync(device to device)")

    @staticmethod
    def gather(dst: Any, sources: list) -> list[int]:
        out = np.frombuffer(dst, dtype=np.uint8)
        views = [np.frombuffer(s, dtype=np.uint8) for s in sources]
        total = sum(v.nbytes for v in views)
        if total > out.nbytes:
            raise ValueError(f"the batch ({total} bytes) does not fit the staging buffer ({out.nbytes} bytes)")
        offsets, at = [], 0
        for v in views:
            offsets.append(at)
            out[at:at + v.nbytes] = v
            at += v.nbytes
        return offsets

    def gather_to_device(self, dst: int, staging: Any, sources: list, stream: int) -> list[int]:
        offsets = self.gather(staging, sources)
        total = offsets[-1] + memoryview(sources[-1]).nbytes if sources else 0
        self.copy_h2d(dst, staging, stream, total)
        return offsets


PYTHON_COPIES = _PythonCopies()
_native_copies: Any = False  # False: not looked for yet; None: not usable here


def native_copies() -> Any:
    """The native `_cuda_copy` module where it is built and its CUDA runtime sees a device,
    else None (NAIAD_PURE_PYTHON=1 forces None)."""
    global _native_copies
    if _native_copies is False:
        import os

        module = None
        if os.environ.get("NAIAD_PURE_PYTHON") != "1":
            try:
                from naiad.ext import _cuda_copy as module  # type: ignore[attr-defined, no-redef]
            except ImportError:
                module = None
        _native_copies = module if module is not None and module.probe()[0] > 0 else None
    return _native_copies


def copies() -> Any:
    """What runs the copies: the native module when usable, else its cuda-python twin."""
    return native_copies() or PYTHON_COPIES


def _run(op: str, *args: Any) -> Any:
    """copies().op(*args), with the native module's CUDA failures raised as CudaError."""
    try:
        return getattr(copies(), op)(*args)
    except RuntimeError as exc:  # the native module's words already name the call and error
        raise CudaError(op, None, str(exc)) from None


def copy_to_device(dst: int, src: Any, stream: Stream, nbytes: int | None = None) -> None:
    """Enqueue a host->device copy of `src` (a host buffer) to device address `dst`."""
    require("a host-to-device copy")
    _run("copy_h2d", dst, src, stream.handle, -1 if nbytes is None else nbytes)


def copy_to_host(dst: Any, src: int, stream: Stream, nbytes: int | None = None) -> None:
    """Enqueue a device->host copy from device address `src` into `dst` (a writable host buffer)."""
    require("a device-to-host copy")
    _run("copy_d2h", dst, src, stream.handle, -1 if nbytes is None else nbytes)


def copy_on_device(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    require("a device-to-device copy")
    _run("copy_d2d", dst, src, nbytes, stream.handle)


def gather_to_device(dst: int, staging: Any, sources: list, stream: Stream) -> list[int]:
    """Gather a batch's host buffers back to back into `staging` (a pinned pool buffer) and
    enqueue one host->device copy of the whole batch; returns each source's offset. Keep
    `staging` alive until an event recorded after this call has passed."""
    require("a batch copy to the device")
    return _run("gather_to_device", dst, staging, list(sources), stream.handle)
