"""Tensors in the stub's wire layout: what a response or a BLS request writes into the arena."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import pb_utils
from ..pb_utils import CODE_TO_WIRE, TYPE_BYTES, InferenceResponse, Tensor, TritonModelException
from ..shm import align
from naiad.kernel.inference.datatypes import WIRE_TO_NUMPY

# Wire name -> numpy dtype for fixed-size types (BYTES is handled apart).
NUMPY = {name: dtype for name, dtype in WIRE_TO_NUMPY.items() if name != "BYTES"}
# (region, offset, size) of a message that carries no tensor data.
EMPTY_BLOCK = (-1, 0, 0)


def payload(t: Tensor) -> tuple[Any, str, tuple]:
    """(bytes-like data in wire layout, wire datatype, shape) of an output tensor."""
    arr = t._array if t._foreign is None else t._host_array()
    code = t._dtype
    if code == TYPE_BYTES:
        data = pb_utils.serialize_byte_tensor(arr) if arr.size else b""
        if data is None:
            raise TritonModelException(f"tensor '{t._name}' is BYTES but holds {arr.dtype} data")
        return data, "BYTES", tuple(arr.shape)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr.reshape(-1).view(np.uint8), CODE_TO_WIRE[code], tuple(arr.shape)


def stage(resp: InferenceResponse, requested: tuple | None, total: int, staged: list) -> tuple[tuple, int]:
    """Describe one response and queue its tensors for copying at `total` onwards."""
    err = resp._error
    if err is not None:
        return ((int(err.code()), err.message()), resp._params, ()), total
    outs = []
    for t in resp._outputs:
        if requested is not None and t._name not in requested:
            continue
        data, wire, shape = payload(t)
        n = len(data) if isinstance(data, (bytes, bytearray)) else data.nbytes
        outs.append((t._name, wire, shape, total, n))
        staged.append((total, n, data))
        total += align(n)
    return (None, resp._params, tuple(outs)), total
