"""Datatypes: Triton's DataType codes, wire names and numpy types, and BYTES tensors' serialization."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

TRITON_STRING_TO_NUMPY = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}

# Triton DataType enum values (model_config.proto) <-> numpy.
_CODE_TO_NUMPY: dict[int, Any] = {
    1: np.bool_,
    2: np.uint8,
    3: np.uint16,
    4: np.uint32,
    5: np.uint64,
    6: np.int8,
    7: np.int16,
    8: np.int32,
    9: np.int64,
    10: np.float16,
    11: np.float32,
    12: np.float64,
    13: np.object_,
}

_NUMPY_TO_CODE: dict[np.dtype, int] = {
    np.dtype(t): c for c, t in _CODE_TO_NUMPY.items() if t is not np.object_
}

TYPE_BYTES = 13
TYPE_BF16 = 14

# Wire names (KServe v2) <-> DataType enum values, shared with the stub.
WIRE_TO_CODE: dict[str, int] = {
    "BOOL": 1, "UINT8": 2, "UINT16": 3, "UINT32": 4, "UINT64": 5, "INT8": 6, "INT16": 7,
    "INT32": 8, "INT64": 9, "FP16": 10, "FP32": 11, "FP64": 12, "BYTES": 13, "BF16": 14,
}

CODE_TO_WIRE: dict[int, str] = {v: k for k, v in WIRE_TO_CODE.items()}


def serialize_byte_tensor(input_tensor: np.ndarray) -> bytes | None:
    """Flatten a BYTES tensor into Triton's layout (per element: uint32 length, bytes)."""
    if input_tensor.size == 0:
        return b""
    if input_tensor.dtype.kind not in "OSU":
        return None
    pack = struct.Struct("<I").pack
    parts: list[bytes] = []
    for item in np.ravel(input_tensor, order="C"):
        if isinstance(item, bytes):
            b = item
        elif isinstance(item, (bytearray, memoryview)):
            b = bytes(item)
        elif isinstance(item, np.bytes_):
            b = bytes(item)
        else:
            b = str(item).encode("utf-8")
        parts.append(pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def deserialize_bytes_tensor(encoded_tensor: bytes | memoryview) -> np.ndarray:
    """Triton's BYTES layout back into a 1-D numpy object array of `bytes`."""
    view = memoryview(encoded_tensor).cast("B")
    unpack = struct.Struct("<I").unpack_from
    items: list[bytes] = []
    offset, total = 0, len(view)
    while offset < total:
        (length,) = unpack(view, offset)
        offset += 4
        items.append(bytes(view[offset : offset + length]))
        offset += length
    out = np.empty(len(items), dtype=np.object_)
    out[:] = items
    return out


def triton_to_numpy_type(data_type: int) -> Any:
    return _CODE_TO_NUMPY.get(data_type)


def numpy_to_triton_type(data_type: Any) -> int | None:
    try:
        dtype = np.dtype(data_type)
    except TypeError:
        return None
    if dtype.kind in "OS":
        return TYPE_BYTES
    return _NUMPY_TO_CODE.get(dtype)


def triton_string_to_numpy(triton_type_string: str) -> Any:
    return TRITON_STRING_TO_NUMPY[triton_type_string]
