"""The CUDA path: device probing, per-instance streams and events, host<->device copies
through pinned staging buffers, CUDA shared-memory regions (Triton's cudasharedmemory
extension), and DLPack views of device memory.

Everything goes through cuda-python's runtime bindings (`pip install 'naiad[gpu]'`),
imported on first use: importing this module never touches CUDA (a process that
initialises CUDA and then forks breaks its children), and without cuda-python or a GPU
every entry point fails with one clear InferenceError instead of an ImportError.

Pieces, one job each:

  has_gpu() / device_count()   whether CUDA is usable here (cached)
  Stream, Event                one non-blocking stream per model instance; events mark
                               where work ends so a thread can wait for just that work
  DeviceBuffer                 a cudaMalloc'd allocation that grows on demand
  copy_to_device/copy_to_host  cudaMemcpyAsync on a stream; host memory should come from
  gather_to_device             `naiad.ext.host_buffers.default_pool()`, whose slabs are
                               page-locked where a GPU exists, so the copies are async.
                               They run in the native `_cuda_copy` module (GIL released)
                               where it is built, else in its cuda-python twin
  CudaShmRegion                a client's device allocation opened with
                               cudaIpcOpenMemHandle: inputs are read from it, outputs
                               written to it, and a GPU model can take a zero-copy view
  DLPackTensor                 device (or host) memory as a DLPack producer
                               (`__dlpack__` / `__dlpack_device__`): torch.from_dlpack,
                               cupy, jax and numpy (host memory) take it without a copy
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any, Sequence

import numpy as np

from naiad.kernel.inference.errors import ErrorCode, InferenceError

log = logging.getLogger(__name__)

__all__ = [
    "CUDA_IPC_HANDLE_SIZE",
    "CudaError",
    "CudaShmRegion",
    "DLPackTensor",
    "DeviceBuffer",
    "Event",
    "Stream",
    "copies",
    "copy_to_device",
    "copy_to_host",
    "gather_to_device",
    "native_copies",
    "cudart",
    "device_count",
    "has_gpu",
    "host_address",
    "require",
]

CUDA_IPC_HANDLE_SIZE = 64  # sizeof(cudaIpcMemHandle_t)


class CudaError(InferenceError):
    """A CUDA runtime call failed."""

    def __init__(self, what: str, err: Any, message: str | None = None) -> None:
        name = getattr(err, "name", str(err))
        super().__init__(message or f"CUDA error in {what}: {name}", ErrorCode.INTERNAL)
        self.err = err


# ------------------------------------------------------------------ probing --

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


# ------------------------------------------------------------------ streams and events --


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


# ------------------------------------------------------------------ memory and copies --


def host_address(buffer: Any) -> tuple[int, int]:
    """(address, nbytes) of a C-contiguous host buffer (ndarray, HostBuffer, memoryview)."""
    array = buffer if isinstance(buffer, np.ndarray) else np.frombuffer(buffer, dtype=np.uint8)
    if not array.flags.c_contiguous:
        raise ValueError("host buffer must be C-contiguous")
    return int(array.__array_interface__["data"][0]), int(array.nbytes)


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


# ------------------------------------------------------------------ CUDA shared memory --


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
        rt = _cudart
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


# ------------------------------------------------------------------ DLPack --


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_DLManagedTensor))
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _DELETER)]

_CAPSULE_NAME = b"dltensor"
_USED_NAME = b"used_dltensor"
# Managed tensors handed out and not yet deleted: address -> (struct, shape array, owner).
_live: dict[int, tuple[Any, Any, Any]] = {}
_live_lock = threading.Lock()

# Private prototypes: `ctypes.pythonapi`'s function objects are shared by the whole process,
# and other libraries (tritonclient's DLPack helpers) reset their argtypes.
_PyCapsule_New = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)(
    ("PyCapsule_New", ctypes.pythonapi))
_PyCapsule_IsValid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_IsValid", ctypes.pythonapi))
_PyCapsule_GetPointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi))


def _delete(managed: Any) -> None:
    address = ctypes.cast(managed, ctypes.c_void_p).value
    with _live_lock:
        _live.pop(address, None)


_deleter = _DELETER(_delete)


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _capsule_destructor(capsule: int) -> None:
    # A capsule that no consumer took still owns its managed tensor: delete it here.
    if _PyCapsule_IsValid(capsule, _CAPSULE_NAME):
        address = _PyCapsule_GetPointer(capsule, _CAPSULE_NAME)
        with _live_lock:
            _live.pop(address, None)


_DTYPE_CODES = {"i": 0, "u": 1, "f": 2, "c": 5, "b": 6}


def _dl_dtype(dtype: np.dtype, bfloat16: bool) -> tuple[int, int]:
    if bfloat16:
        return 4, 16  # kDLBfloat
    code = _DTYPE_CODES.get(dtype.kind)
    if code is None:
        raise InferenceError.invalid(f"dtype {dtype} has no DLPack equivalent")
    return code, dtype.itemsize * 8


class DLPackTensor:
    """A C-contiguous tensor at a raw address as a DLPack producer.

    `owner` is kept alive as long as any consumer holds the memory (a region, a
    DeviceBuffer, a host array). BF16 data is carried as uint16 and declared bfloat16
    with `bfloat16=True`.
    """

    CPU = 1
    CUDA = 2
    CUDA_HOST = 3

    def __init__(self, ptr: int, shape: Sequence[int], dtype: Any, device_type: int = CPU, device_id: int = 0,
                 owner: Any = None, bfloat16: bool = False) -> None:
        self.ptr = int(ptr)
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.device_type = device_type
        self.device_id = device_id
        self.owner = owner
        self.bfloat16 = bfloat16

    @classmethod
    def from_host(cls, array: np.ndarray, bfloat16: bool = False) -> "DLPackTensor":
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
        return cls(array.__array_interface__["data"][0], array.shape, array.dtype, cls.CPU, 0, owner=array,
                   bfloat16=bfloat16)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (self.device_type, self.device_id)

    def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any:
        # The data is complete before it is handed out (copies synchronised), so the
        # consumer's stream needs no wait.
        ndim = len(self.shape)
        shape = (ctypes.c_int64 * max(ndim, 1))(*self.shape)
        managed = _DLManagedTensor()
        t = managed.dl_tensor
        t.data = self.ptr
        t.device = _DLDevice(self.device_type, self.device_id)
        t.ndim = ndim
        code, bits = _dl_dtype(self.dtype, self.bfloat16)
        t.dtype = _DLDataType(code, bits, 1)
        t.shape = ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64))
        t.strides = None  # C-contiguous
        t.byte_offset = 0
        managed.manager_ctx = None
        managed.deleter = _deleter
        address = ctypes.addressof(managed)
        with _live_lock:
            _live[address] = (managed, shape, self.owner)
        return _PyCapsule_New(address, _CAPSULE_NAME, ctypes.cast(_capsule_destructor, ctypes.c_void_p))


def live_dlpack_count() -> int:
    """Managed tensors not yet released by their consumers (for tests and leak checks)."""
    with _live_lock:
        return len(_live)
