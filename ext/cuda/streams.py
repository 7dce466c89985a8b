"""Per-instance CUDA streams and events, and device allocations that grow on demand."""

from __future__ import annotations

from .runtime import CudaError, check, require, set_device

class Stream:
    """A non-blocking CUDA stream on one device (one per model instance)."""

    def __init__(self, device_id: int = 0) -> None:
        rt = require("a CUDA stream")
        set_device(device_id)
        self.device_id = device_id
        self._rt = rt
        self.stream = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")

    @property
    def handle(self) -> int:
        """The cudaStream_t as an integer (what TensorRT's execute_async_v3 takes)."""
        return int(self.stream)

    def synchronize(self) -> None:
        check(self._rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def close(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            check(self._rt.cudaStreamDestroy(stream), "cudaStreamDestroy")


class Event:
    """A CUDA event without timing: record it after some work, wait for exactly that work."""

    def __init__(self, blocking: bool = True) -> None:
        rt = require("a CUDA event")
        self._rt = rt
        flags = rt.cudaEventDisableTiming | (rt.cudaEventBlockingSync if blocking else 0)
        self.event = check(rt.cudaEventCreateWithFlags(flags), "cudaEventCreateWithFlags")

    def record(self, stream: Stream) -> None:
        check(self._rt.cudaEventRecord(self.event, stream.stream), "cudaEventRecord")

    def synchronize(self) -> None:
        check(self._rt.cudaEventSynchronize(self.event), "cudaEventSynchronize")

    def query(self) -> bool:
        err = self._rt.cudaEventQuery(self.event)
        err = err[0] if isinstance(err, tuple) else err
        if err == self._rt.cudaError_t.cudaSuccess:
            return True
        if err == self._rt.cudaError_t.cudaErrorNotReady:
            return False
        raise CudaError("cudaEventQuery", err)

    def close(self) -> None:
        event, self.event = self.event, None
        if event is not None:
            check(self._rt.cudaEventDestroy(event), "cudaEventDestroy")


class DeviceBuffer:
    """Device memory on one GPU that grows (reallocates) when a larger size is asked for."""

    def __init__(self, device_id: int = 0, nbytes: int = 0) -> None:
        self._rt = require("device memory")
        self.device_id = device_id
        self.ptr = 0
        self.nbytes = 0
        if nbytes:
            self.ensure(nbytes)

    def ensure(self, nbytes: int) -> int:
        """At least `nbytes` of device memory; returns the pointer (contents not kept)."""
        if nbytes <= self.nbytes:
            return self.ptr
        self.close()
        set_device(self.device_id)
        size = max(int(nbytes), 256)
        self.ptr = int(check(self._rt.cudaMalloc(size), f"cudaMalloc({size})"))
        self.nbytes = size
        return self.ptr

    def close(self) -> None:
        ptr, self.ptr, self.nbytes = self.ptr, 0, 0
        if ptr:
            check(self._rt.cudaFree(ptr), "cudaFree")
