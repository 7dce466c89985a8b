"""Device (or host) memory as a DLPack producer (`__dlpack__` / `__dlpack_device__`)."""

from __future__ import annotations

import ctypes
import threading
from typing import Any, Sequence

import numpy as np

from naiad.kernel.inference.errors import InferenceError

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
