"""CUDA shared-memory regions (Triton's cudasharedmemory extension): a client's device
allocation opened with cudaIpcOpenMemHandle."""

from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

import numpy as np

from naiad.kernel.inference.errors import InferenceError

from .copies import copy_to_device, copy_to_host
from .dlpack import DLPackTensor
from .runtime import CUDA_IPC_HANDLE_SIZE, CudaError, check, cudart, device_count, require, set_device
from .streams import Stream

log = logging.getLogger("naiad.ext.cuda_path")

class CudaShmRegion:
    """A client's CUDA allocation registered as a shared-memory region.

    The client (tritonclient.utils.cuda_shared_memory) sends the 64-byte
    cudaIpcMemHandle_t of its allocation, the device it lives on and its size; the region
    is opened once with cudaIpcOpenMemHandle and closed at unregister. Reads and writes
    go through pooled pinned host buffers on the region's own stream; `dlpack()` gives a
    GPU model the memory itself, without a copy.
    """

    def __init__(self, name: str, device_id: int, byte_size: int, base: int, stream: Stream | None) -> None:
        self.name = name
        self.device_id = device_id
        self.byte_size = byte_size
        self.base = base
        self.stream = stream
        self._lock = threading.Lock()  # one copy at a time per region stream

    @classmethod
    def open(cls, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> "CudaShmRegion":
        rt = cudart()
        if rt is None:
            raise InferenceError.invalid(
                f"failed to register CUDA shared memory region: '{name}', GPUs not supported")
        if len(raw_handle) != CUDA_IPC_HANDLE_SIZE:
            raise InferenceError.invalid(
                f"failed to register CUDA shared memory region: '{name}', the raw handle is {len(raw_handle)} bytes, "
                f"a cudaIpcMemHandle_t is {CUDA_IPC_HANDLE_SIZE}")
        if byte_size <= 0:
            raise InferenceError.invalid(f"failed to register CUDA shared memory region: '{name}', byte_size must be positive")
        if not 0 <= device_id < device_count():
            raise InferenceError.invalid(
                f"failed to register CUDA shared memory region: '{name}', GPU {device_id} does not exist "
                f"({device_count()} visible)")
        try:
            set_device(device_id)
            handle = rt.cudaIpcMemHandle_t()
            handle.reserved = bytes(raw_handle)
            base = int(check(rt.cudaIpcOpenMemHandle(handle, rt.cudaIpcMemLazyEnablePeerAccess), "cudaIpcOpenMemHandle"))
        except CudaError as exc:
            raise InferenceError.invalid(
                f"failed to register CUDA shared memory region: '{name}', failed to open CUDA IPC handle: {exc.message}") from None
        try:
            stream = Stream(device_id)
        except Exception:
            rt.cudaIpcCloseMemHandle(base)
            raise
        return cls(name, device_id, byte_size, base, stream)

    @property
    def info(self) -> Any:
        from naiad.kernel.inference.messages import CudaShmRegion as Info

        return Info(self.name, self.device_id, self.byte_size)

    def _check(self, offset: int, nbytes: int) -> None:
        if offset < 0 or nbytes < 0 or offset + nbytes > self.byte_size:
            raise InferenceError.invalid(f"Invalid offset + byte size for shared memory region: '{self.name}'")

    def device_pointer(self, offset: int = 0, nbytes: int = 0) -> int:
        self._check(offset, nbytes)
        return self.base + offset

    def read(self, offset: int, nbytes: int) -> memoryview:
        """The bytes at [offset, offset + nbytes) as host memory (a pooled pinned buffer
        that returns to the pool when the last view of it is gone)."""
        from naiad.ext.host_buffers import default_pool

        self._check(offset, nbytes)
        host = default_pool().acquire(nbytes)
        if nbytes:
            assert self.stream is not None
            with self._lock:
                copy_to_host(host, self.base + offset, self.stream, nbytes)
                self.stream.synchronize()
        return memoryview(host)

    def write(self, offset: int, data: Any) -> int:
        """Copy `data` (a host buffer) to the region at `offset`; returns the byte count."""
        view = memoryview(data).cast("B")
        nbytes = view.nbytes
        self._check(offset, nbytes)
        if nbytes:
            assert self.stream is not None
            from naiad.ext.host_buffers import default_pool

            staging = default_pool().acquire(nbytes)  # page-locked: the copy runs at full speed
            np.frombuffer(staging, dtype=np.uint8)[:] = np.frombuffer(view, dtype=np.uint8)
            with self._lock:
                copy_to_device(self.base + offset, staging, self.stream, nbytes)
                self.stream.synchronize()
        return nbytes

    def dlpack(self, offset: int, shape: Sequence[int], dtype: Any) -> "DLPackTensor":
        """A zero-copy DLPack view of a tensor stored in the region (for GPU models)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if len(shape) else dtype.itemsize
        ptr = self.device_pointer(offset, nbytes)
        return DLPackTensor(ptr, shape, dtype, DLPackTensor.CUDA, self.device_id, owner=self)

    def close(self) -> None:
        base, self.base = self.base, 0
        stream, self.stream = self.stream, None
        rt = cudart()
        if stream is not None:
            try:
                stream.close()
            except CudaError as exc:
                log.warning("closing the stream of CUDA shared memory region '%s': %s", self.name, exc.message)
        if base and rt is not None:
            err = rt.cudaIpcCloseMemHandle(base)
            err = err[0] if isinstance(err, tuple) else err
            if err != rt.cudaError_t.cudaSuccess:
                log.warning("cudaIpcCloseMemHandle of region '%s' failed: %s", self.name, getattr(err, "name", err))


def ipc_handle(ptr: int) -> bytes:
    """The 64-byte cudaIpcMemHandle_t of a device allocation (to hand it to another process,
    e.g. a Python-backend stub, which opens it with CudaShmRegion.open)."""
    rt = require("a CUDA IPC handle")
    handle = check(rt.cudaIpcGetMemHandle(ptr), "cudaIpcGetMemHandle")
    return bytes(handle.reserved)
