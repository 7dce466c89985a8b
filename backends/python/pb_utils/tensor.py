"""Tensor: a named array on the host, or a DLPack-capable object of another framework."""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

from .dtypes import _NUMPY_TO_CODE, CODE_TO_WIRE, TYPE_BF16, TYPE_BYTES
from .errors import TritonModelException, _typed


class MemoryType(enum.IntEnum):
    TRITONSERVER_MEMORY_GPU = 0
    TRITONSERVER_MEMORY_CPU = 1


TRITONSERVER_MEMORY_GPU = MemoryType.TRITONSERVER_MEMORY_GPU
TRITONSERVER_MEMORY_CPU = MemoryType.TRITONSERVER_MEMORY_CPU


class PreferredMemory:
    """Where a BLS call would like its outputs (naiad delivers them on the CPU)."""

    __slots__ = ("preferred_memory_type", "preferred_device_id")

    def __init__(self, preferred_memory_type: int = MemoryType.TRITONSERVER_MEMORY_CPU, preferred_device_id: int = 0) -> None:
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


_DL_CPU = 1
_DL_CUDA_HOST = 3


def _code_of(dtype: np.dtype) -> int:
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return TYPE_BYTES
    code = _NUMPY_TO_CODE.get(dtype)
    if code is None and dtype.byteorder == ">":
        code = _NUMPY_TO_CODE.get(dtype.newbyteorder("="))
    if code is None:
        raise TritonModelException(f"Unsupported numpy dtype for a Triton tensor: {dtype}")
    return code


class Tensor:
    """A named tensor. Inputs are numpy views over shared memory (no copy)."""

    __slots__ = ("_name", "_array", "_dtype", "_foreign")

    def __init__(self, name: str, numpy_array: Any, triton_dtype: int | None = None) -> None:
        _typed(name, str, "Tensor(): name")
        if numpy_array is None:
            raise TypeError("Tensor(): numpy_array must not be None")
        if not name:
            raise TritonModelException("Tensor name cannot be an empty string.")
        if type(numpy_array) is not np.ndarray and not isinstance(numpy_array, np.ndarray):
            numpy_array = np.asarray(numpy_array)
        if triton_dtype is not None:
            code = int(triton_dtype)
        else:
            code = _NUMPY_TO_CODE.get(numpy_array.dtype) or _code_of(numpy_array.dtype)
        self._name = name
        self._array = numpy_array
        self._dtype = code
        self._foreign = None  # a non-CPU DLPack producer (torch/cupy tensor on a GPU)

    @classmethod
    def _wrap(cls, name: str, array: np.ndarray, code: int) -> "Tensor":
        t = cls.__new__(cls)
        t._name = name
        t._array = array
        t._dtype = code
        t._foreign = None
        return t

    def name(self) -> str:
        return self._name

    def triton_dtype(self) -> int:
        return self._dtype

    def shape(self) -> list[int]:
        src = self._array if self._array is not None else self._foreign
        return [int(d) for d in src.shape]

    def is_cpu(self) -> bool:
        return self._foreign is None

    def as_numpy(self) -> np.ndarray:
        if self._array is None:
            raise TritonModelException("Tensor is stored in GPU and cannot be converted to NumPy.")
        return self._array

    # -- DLPack -------------------------------------------------------------------------

    def to_dlpack(self) -> Any:
        if self._dtype == TYPE_BYTES:
            raise TritonModelException("DLPack does not have support for string tensors.")
        if self._foreign is not None:
            return self._foreign.__dlpack__()
        return self._array.__dlpack__()

    def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any:
        if self._dtype == TYPE_BYTES:
            raise TritonModelException("DLPack does not have support for string tensors.")
        if self._foreign is not None:
            return self._foreign.__dlpack__(stream=stream, **kwargs) if stream is not None else self._foreign.__dlpack__(**kwargs)
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        if self._foreign is not None:
            return tuple(self._foreign.__dlpack_device__())
        return (_DL_CPU, 0)

    @staticmethod
    def from_dlpack(name: str, dlpack_tensor: Any) -> "Tensor":
        if not isinstance(name, str) or not name:
            raise TritonModelException("Tensor name cannot be an empty string.")
        obj = dlpack_tensor
        if isinstance(obj, Tensor) and obj._foreign is None:
            return Tensor._wrap(name, obj._array, obj._dtype)  # keeps BF16 (numpy has none)
        if type(obj).__name__ == "PyCapsule":
            obj = _Capsule(obj)
        elif not (hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__")):
            raise TritonModelException(
                "Provided tensor is not supported. Tensor must be a DLPack capsule "
                "or have `__dlpack__` and `__dlpack_device__` attributes"
            )
        device = tuple(obj.__dlpack_device__())[0]
        if device in (_DL_CPU, _DL_CUDA_HOST):
            try:
                array = np.from_dlpack(obj)
                code = _code_of(array.dtype)
            except (TypeError, BufferError, RuntimeError, ValueError) as exc:
                array, code = _bf16_from(obj, exc)
            if not array.flags.c_contiguous:
                raise TritonModelException(
                    "DLPack tensor is not contiguous. Only contiguous DLPack tensors that "
                    "are stored in C-Order are supported."
                )
            return Tensor._wrap(name, array, code)
        # A device tensor: keep the producer; it is copied to the host when sent.
        t = Tensor.__new__(Tensor)
        t._name = name
        t._array = None
        t._foreign = dlpack_tensor if not isinstance(obj, _Capsule) else _foreign_from_capsule(obj)
        t._dtype = _foreign_code(t._foreign)
        return t

    def _host_array(self) -> np.ndarray:
        """The data on the host (copies a device tensor across)."""
        if self._array is not None:
            return self._array
        f = self._foreign
        for attempt in (
            lambda: np.from_dlpack(f, device="cpu", copy=True),
            lambda: f.cpu().numpy() if self._dtype != TYPE_BF16 else f.cpu().view(_torch_uint16(f)).numpy(),
            lambda: f.get(),
        ):
            try:
                out = attempt()
                if self._dtype == TYPE_BF16:
                    out = out.view(np.uint16)
                return out
            except Exception:
                continue
        raise TritonModelException(f"cannot copy tensor '{self._name}' from its device to the host")

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, dtype={CODE_TO_WIRE.get(self._dtype, self._dtype)}, shape={self.shape()})"


class _Capsule:
    """Gives a bare DLPack capsule the `__dlpack__` protocol numpy expects."""

    __slots__ = ("capsule",)

    def __init__(self, capsule: Any) -> None:
        self.capsule = capsule

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        return self.capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return _capsule_device(self.capsule)


def _capsule_device(capsule: Any) -> tuple[int, int]:
    """Read DLManagedTensor.dl_tensor.device from a `dltensor` capsule."""
    import ctypes

    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    ptr = get(capsule, b"dltensor")
    # struct DLTensor { void* data; DLDevice device {int32 type; int32 id}; ... }
    dev = (ctypes.c_int32 * 2).from_address(ptr + ctypes.sizeof(ctypes.c_void_p))
    return (int(dev[0]), int(dev[1]))


def _foreign_from_capsule(cap: _Capsule) -> Any:
    for modname, fn in (("torch.utils.dlpack", "from_dlpack"), ("cupy", "from_dlpack")):
        try:
            mod = __import__(modname, fromlist=[fn])
            return getattr(mod, fn)(cap.capsule)
        except Exception:
            continue
    raise TritonModelException("DLPack capsule passed pointer to memory allocated on GPU device, when GPU is not available")


def _foreign_code(obj: Any) -> int:
    text = str(getattr(obj, "dtype", ""))
    if "bfloat16" in text:
        return TYPE_BF16
    name = text.replace("torch.", "")
    aliases = {"bool": "bool", "float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32"}
    try:
        return _code_of(np.dtype(aliases.get(name, name)))
    except Exception as exc:
        raise TritonModelException(f"unsupported DLPack dtype {text}") from exc


def _torch_uint16(t: Any) -> Any:
    import torch

    return getattr(torch, "uint16", torch.int16)


def _bf16_from(obj: Any, exc: Exception) -> tuple[np.ndarray, int]:
    """numpy has no bfloat16: carry a bf16 producer's raw 16-bit patterns as uint16."""
    if "bfloat16" in str(getattr(obj, "dtype", "")) and hasattr(obj, "view"):
        return np.from_dlpack(obj.view(_torch_uint16(obj))).view(np.uint16), TYPE_BF16
    raise TritonModelException(f"cannot read DLPack tensor: {exc}") from exc
