"""Whether CUDA is usable here (probed once, on first use) and the checked call helper
every other piece goes through; `CudaError` is what a failed runtime call raises."""

from __future__ import annotations

import threading
from typing import Any

from naiad.kernel.inference.errors import ErrorCode, InferenceError

CUDA_IPC_HANDLE_SIZE = 64  # sizeof(cudaIpcMemHandle_t)


class CudaError(InferenceError):
    """A CUDA runtime call failed."""

    def __init__(self, what: str, err: Any, message: str | None = None) -> None:
        name = getattr(err, "name", str(err))
        super().__init__(message or f"CUDA error in {what}: {name}", ErrorCode.INTERNAL)
        self.err = err


_lock = threading.Lock()
_probed = False
_cudart: Any = None
_count = 0
_why = "not probed"


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart as runtime  # older cuda-python layout

        return runtime
    except ImportError:
        return None


def _probe() -> None:
    global _probed, _cudart, _count, _why
    with _lock:
        if _probed:
            return
        _probed = True
        rt = _import_cudart()
        if rt is None:
            _why = "cuda-python is not installed (pip install 'naiad[gpu]')"
            return
        try:
            err, count = rt.cudaGetDeviceCount()
        except Exception as exc:  # a broken install must not break the server
            _why = f"the CUDA runtime could not be queried ({exc!r})"
            return
        if err != rt.cudaError_t.cudaSuccess or not count:
            _why = f"no CUDA device ({getattr(err, 'name', err)})"
            return
        _cudart, _count, _why = rt, int(count), ""


def cudart() -> Any:
    """cuda-python's runtime module when a CUDA device is usable, else None."""
    _probe()
    return _cudart


def has_gpu() -> bool:
    _probe()
    return _cudart is not None


def device_count() -> int:
    _probe()
    return _count


def why_not() -> str:
    """Why CUDA is not usable here ("" when it is)."""
    _probe()
    return _why


def require(what: str = "this operation") -> Any:
    """The runtime module, or InferenceError(UNAVAILABLE) saying why CUDA is not usable."""
    rt = cudart()
    if rt is None:
        raise InferenceError.unavailable(f"{what} needs CUDA, which is not available: {_why}")
    return rt


def check(result: Any, what: str) -> Any:
    """Unpack cuda-python's (err, *values): raise CudaError on failure, return the value(s)."""
    rt = _cudart or _import_cudart()
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if err != rt.cudaError_t.cudaSuccess:
        raise CudaError(what, err)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def set_device(device_id: int) -> None:
    rt = require("selecting a GPU")
    check(rt.cudaSetDevice(int(device_id)), f"cudaSetDevice({device_id})")
