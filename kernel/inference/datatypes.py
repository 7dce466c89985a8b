"""Triton datatypes: wire names (KServe v2), config enums (TYPE_*), numpy dtypes, BYTES framing.

BF16 has no numpy dtype; naiad carries it as its raw 16-bit patterns (`uint16`) and keeps
the wire name beside the array so it round-trips unchanged.
"""

from __future__ import annotations

import struct
from typing import Iterable

import numpy as np

from .errors import InferenceError

# Wire name -> numpy dtype (little-endian, as on the wire).
WIRE_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
    "BF16": np.dtype("<u2"),
}

# Element size in bytes; BYTES is variable (None).
WIRE_ITEMSIZE: dict[str, int | None] = {
    name: (None if name == "BYTES" else dt.itemsize) for name, dt in WIRE_TO_NUMPY.items()
}

# Config enum name (model_config.proto DataType) <-> wire name.
CONFIG_TO_WIRE: dict[str, str] = {
    "TYPE_BOOL": "BOOL",
    "TYPE_UINT8": "UINT8",
    "TYPE_UINT16": "UINT16",
    "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64",
    "TYPE_INT8": "INT8",
    "TYPE_INT16": "INT16",
    "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64",
    "TYPE_FP16": "FP16",
    "TYPE_FP32": "FP32",
    "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES",
    "TYPE_BF16": "BF16",
}
WIRE_TO_CONFIG: dict[str, str] = {v: k for k, v in CONFIG_TO_WIRE.items()}

# Config enum numbers (DataType values in model_config.proto).
CONFIG_ENUM_VALUE: dict[str, int] = {
    "TYPE_INVALID": 0, "TYPE_BOOL": 1, "TYPE_UINT8": 2, "TYPE_UINT16": 3, "TYPE_UINT32": 4,
    "TYPE_UINT64": 5, "TYPE_INT8": 6, "TYPE_INT16": 7, "TYPE_INT32": 8, "TYPE_INT64": 9,
    "TYPE_FP16": 10, "TYPE_FP32": 11, "TYPE_FP64": 12, "TYPE_STRING": 13, "TYPE_BF16": 14,
}
CONFIG_ENUM_NAME: dict[int, str] = {v: k for k, v in CONFIG_ENUM_VALUE.items()}

_NUMPY_TO_WIRE: dict[np.dtype, str] = {
    np.dtype(np.bool_): "BOOL",
    np.dtype("u1"): "UINT8",
    np.dtype("u2"): "UINT16",
    np.dtype("u4"): "UINT32",
    np.dtype("u8"): "UINT64",
    np.dtype("i1"): "INT8",
    np.dtype("i2"): "INT16",
    np.dtype("i4"): "INT32",
    np.dtype("i8"): "INT64",
    np.dtype("f2"): "FP16",
    np.dtype("f4"): "FP32",
    np.dtype("f8"): "FP64",
    np.dtype(object): "BYTES",
}


def wire_from_numpy(dtype: np.dtype) -> str:
    """Wire name for a numpy dtype; str/bytes arrays are BYTES."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("S", "U", "O"):
        return "BYTES"
    try:
        return _NUMPY_TO_WIRE[dtype.newbyteorder("=")]
    except KeyError:
        raise InferenceError.invalid(f"unsupported numpy dtype {dtype}") from None


def numpy_from_wire(datatype: str) -> np.dtype:
    try:
        return WIRE_TO_NUMPY[datatype]
    except KeyError:
        raise InferenceError.invalid(f"invalid datatype '{datatype}'") from None


def element_count(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# ------------------------------------------------------------------ BYTES framing --
# Triton serialises BYTES tensors as, per element, a 4-byte little-endian length then
# the bytes, elements in row-major order.

_LEN = struct.Struct("<I")


def serialize_bytes(array: np.ndarray) -> bytes:
    """Frame an array of bytes/str objects in Triton's BYTES layout."""
    parts: list[bytes] = []
    append = parts.append
    pack = _LEN.pack
    for item in array.reshape(-1):
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif not isinstance(item, (bytes, bytearray, memoryview)):
            item = str(item).encode("utf-8")
        append(pack(len(item)))
        append(bytes(item))
    return b"".join(parts)


def deserialize_bytes(buffer: bytes | memoryview, count: int | None = None) -> np.ndarray:
    """Parse Triton's BYTES layout into a 1-D object array of `bytes`.

    With `count` given, exactly that many elements must be present and fill the buffer.
    """
    view = memoryview(buffer).cast("B")
    total = len(view)
    items: list[bytes] = []
    offset = 0
    unpack = _LEN.unpack_from
    while offset < total:
        if offset + 4 > total:
            raise InferenceError.invalid("malformed BYTES tensor: truncated length prefix")
        (length,) = unpack(view, offset)
        offset += 4
        end = offset + length
        if end > total:
            raise InferenceError.invalid("malformed BYTES tensor: element runs past the end of the buffer")
        items.append(bytes(view[offset:end]))
        offset = end
    if count is not None and len(items) != count:
        raise InferenceError.invalid(
            f"unexpected number of string elements {len(items)} for inference input, expecting {count}"
        )
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out
