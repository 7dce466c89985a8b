"""Pure-numpy twin of `_batching`: same signatures, same results, same errors.

Used when the native module is not built or NAIAD_PURE_PYTHON=1, and as the
reference the native module is tested against.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def _as_array(obj: object, where: str, index: int) -> np.ndarray:
    if not isinstance(obj, np.ndarray):
        raise TypeError(f"{where}: parts[{index}] is {type(obj).__name__}, expected numpy.ndarray")
    return obj


def _view_over(out: Any, dtype: np.dtype, shape: tuple[int, ...], nbytes: int) -> np.ndarray:
    """An ndarray of `dtype`/`shape` over the first `nbytes` bytes of `out`."""
    try:
        view = memoryview(out)
    except TypeError:
        raise TypeError(
            f"gather: out must support the buffer protocol, got {type(out).__name__}"
        ) from None
    if view.readonly:
        raise TypeError("gather: out must be a writable buffer")
    if not view.c_contiguous:
        raise TypeError("gather: out must be C-contiguous")
    if view.nbytes < nbytes:
        raise ValueError(f"gather: out holds {view.nbytes} bytes, the batch needs {nbytes}")
    flat = np.frombuffer(view.cast("B"), dtype=np.uint8, count=nbytes)
    return flat.view(dtype).reshape(shape)


def gather(parts: Sequence[np.ndarray], out: Any = None) -> np.ndarray:
    """Concatenate `parts` along axis 0 into a new array, or into `out`.

    See batching.pyi for the contract.
    """
    seq = parts if type(parts) is list else list(parts)
    if not seq:
        raise ValueError("gather: needs at least one part")
    first = _as_array(seq[0], "gather", 0)
    if first.ndim == 0:
        raise ValueError("gather: parts[0] is 0-d; parts need a batch axis")
    dtype = first.dtype
    trailing = first.shape[1:]
    rows = 0
    for i, obj in enumerate(seq):
        part = _as_array(obj, "gather", i)
        if part.dtype is not dtype and part.dtype != dtype:
            raise TypeError(f"gather: parts[{i}] has dtype {part.dtype}, parts[0] has {first.dtype}")
        if part.ndim != first.ndim or part.shape[1:] != trailing:
            raise ValueError(
                f"gather: parts[{i}] has shape {part.shape}, "
                f"trailing dims must match parts[0] {first.shape}"
            )
        rows += part.shape[0]

    shape = (rows,) + trailing
    if dtype.hasobject:
        if out is not None:
            raise TypeError("gather: object (BYTES) parts cannot be gathered into a raw out buffer")
        return np.concatenate(seq, axis=0)
    if out is None:
        result = np.empty(shape, dtype=dtype)
    else:
        result = _view_over(out, dtype, shape, rows * dtype.itemsize * _prod(trailing))
    np.concatenate(seq, axis=0, out=result)
    return result


def _prod(dims: tuple[int, ...]) -> int:
    size = 1
    for d in dims:
        size *= d
    return size


def scatter(batch: np.ndarray, counts: Iterable[int], copy: bool = False) -> list[np.ndarray]:
    """Split `batch` along axis 0 into pieces of `counts[i]` rows.

    See batching.pyi for the contract.
    """
    if not isinstance(batch, np.ndarray):
        raise TypeError(f"scatter: batch is {type(batch).__name__}, expected numpy.ndarray")
    if batch.ndim == 0:
        raise ValueError("scatter: batch is 0-d; it needs a batch axis")
    sizes = []
    for count in counts:
        c = operator.index(count)
        if c < 0:
            raise ValueError(f"scatter: counts must be >= 0, got {c}")
        sizes.append(c)
    total = sum(sizes)
    if total != batch.shape[0]:
        raise ValueError(f"scatter: counts sum to {total}, batch has {batch.shape[0]} rows")

    pieces = []
    start = 0
    for c in sizes:
        piece = batch[start : start + c]
        pieces.append(piece.copy() if copy else piece)
        start += c
    return pieces
