"""Staging tensors into one block of a shared-memory arena: the parent's half of the
IPC wire for tensor data, used for a batch's inputs (EXECUTE) and a BLS call's outputs
(BLS_RESULT) alike."""

from __future__ import annotations

from typing import Any, Iterable

from naiad.kernel.inference.types import Tensor


def stage(tensors: Iterable[Tensor], descs: list, staged: list, total: int) -> int:
    """Lay `tensors` out from offset `total` of one block (64-byte aligned): appends a
    (name, datatype, shape, offset, size) to `descs` per tensor and an (offset, size, raw)
    to `staged` per non-empty one; returns the block's new size."""
    for t in tensors:
        if 0 in t.shape:  # empty (Tensor.raw cannot view a zero-size array)
            descs.append((t.name, t.datatype, t.shape, total, 0))
            continue
        raw = t.raw
        if type(raw) is memoryview:
            if raw.format != "B" or raw.ndim != 1:
                raw = raw.cast("B") if raw.c_contiguous else memoryview(raw.tobytes())
            n = raw.nbytes
        else:
            n = len(raw)
        descs.append((t.name, t.datatype, t.shape, total, n))
        if n:
            staged.append((total, n, raw))
        total += (n + 63) & ~63
    return total


def copy_in(arena: Any, staged: list, total: int) -> tuple[int, int]:
    """One arena block of `total` bytes holding `staged`: (region id, base offset)."""
    region, base = arena.alloc(total)
    view = region.view
    for off, n, raw in staged:
        view[base + off : base + off + n] = raw
    return region.id, base


def plain(v: Any) -> Any:
    """A parameter value marshal can carry: itself, its numpy `.item()`, else its str."""
    if isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "item"):
        try:
            return v.item()
        except (TypeError, ValueError):
            pass
    return str(v)
