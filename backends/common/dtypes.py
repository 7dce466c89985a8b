"""Datatype maps between the model config (`TYPE_*`), the wire (KServe v2 names), numpy and
the frameworks' own type names (ONNX element types, ONNX Runtime type strings, torch
dtypes, TensorRT `DataType` names).

The framework maps are keyed by names, not by the frameworks' objects, so importing this
module never imports a framework.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from naiad.kernel.inference.datatypes import CONFIG_ENUM_NAME, CONFIG_ENUM_VALUE, CONFIG_TO_WIRE, WIRE_TO_NUMPY
from naiad.kernel.inference.errors import InferenceError

# ONNX TensorProto.DataType numbers -> config names (onnx.proto's enum).
ONNX_TO_CONFIG: dict[int, str] = {
    1: "TYPE_FP32",  # FLOAT
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    8: "TYPE_STRING",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",  # FLOAT16
    11: "TYPE_FP64",  # DOUBLE
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
    16: "TYPE_BF16",  # BFLOAT16
}

# ONNX Runtime's type strings (NodeArg.type) -> config names.
ORT_TO_CONFIG: dict[str, str] = {
    "tensor(float)": "TYPE_FP32",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(int8)": "TYPE_INT8",
    "tensor(uint16)": "TYPE_UINT16",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(string)": "TYPE_STRING",
    "tensor(bool)": "TYPE_BOOL",
    "tensor(float16)": "TYPE_FP16",
    "tensor(double)": "TYPE_FP64",
    "tensor(uint32)": "TYPE_UINT32",
    "tensor(uint64)": "TYPE_UINT64",
    "tensor(bfloat16)": "TYPE_BF16",
}

# torch dtype names (str(torch.float32) without "torch.") -> config names.
TORCH_TO_CONFIG: dict[str, str] = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
}
CONFIG_TO_TORCH: dict[str, str] = {v: k for k, v in TORCH_TO_CONFIG.items()}

# TensorRT DataType member names -> config names (FP8, INT4, FP4 have no config type).
TRT_TO_CONFIG: dict[str, str] = {
    "FLOAT": "TYPE_FP32",
    "HALF": "TYPE_FP16",
    "BF16": "TYPE_BF16",
    "INT8": "TYPE_INT8",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
}


def config_name(data_type: int | str) -> str:
    """`TYPE_*` name of a config enum value (or the name itself)."""
    if isinstance(data_type, str):
        return data_type
    return CONFIG_ENUM_NAME.get(int(data_type), "TYPE_INVALID")


def config_value(name: str) -> int:
    return CONFIG_ENUM_VALUE[name]


def wire_of(data_type: int | str) -> str:
    """Wire name ("FP32", "BYTES") of a config data type."""
    name = config_name(data_type)
    try:
        return CONFIG_TO_WIRE[name]
    except KeyError:
        raise InferenceError.invalid(f"unsupported data type {name}") from None


def numpy_of(data_type: int | str) -> np.dtype:
    """numpy dtype that carries a config data type (BYTES: object, BF16: uint16 bits)."""
    return WIRE_TO_NUMPY[wire_of(data_type)]


def torch_dtype(data_type: int | str, torch: Any) -> Any:
    """The torch dtype of a config data type; `torch` is the imported module."""
    name = config_name(data_type)
    attr = CONFIG_TO_TORCH.get(name)
    dtype = getattr(torch, attr, None) if attr else None
    if dtype is None:
        raise InferenceError.invalid(f"data type {name} has no torch equivalent")
    return dtype


def config_of_torch(dtype: Any) -> str:
    return TORCH_TO_CONFIG.get(str(dtype).replace("torch.", ""), "TYPE_INVALID")


def matches_numpy(data_type: int | str, dtype: np.dtype) -> bool:
    """Whether an array of `dtype` can be returned as `data_type` without conversion."""
    wire = wire_of(data_type)
    if wire == "BYTES":
        return dtype.kind in ("O", "U", "S")
    return np.dtype(dtype).newbyteorder("=") == WIRE_TO_NUMPY[wire].newbyteorder("=")
