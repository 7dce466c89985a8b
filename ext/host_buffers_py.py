"""Pure-Python twin of `_host_buffers`: same API, same size classes, same stats.

Slabs are numpy byte arrays over-allocated by `alignment` bytes and offset to an
aligned start.  A HostBuffer is an ndarray subclass over its slab, which is how
it gets the buffer protocol without C code.

One documented difference: before Python 3.12 a Python class cannot count the
exports of its buffer, so release() here cannot refuse while memoryviews or
arrays over the buffer are alive (the native pool raises BufferError).  Such a
release returns the slab at once and those views may then alias a later
buffer; a released buffer also turns read-only rather than refusing exports.
Code that is correct against the native pool is correct here too.
"""

from __future__ import annotations

import ctypes
import operator
import sys
import threading
import types
from collections.abc import Callable
from typing import Any, cast

import numpy as np

SlabHook = Callable[[int, int], object]

_MIN_CLASS = 4 << 10
_FINE_CLASSES_ABOVE = 1 << 20
_MAX_REQUEST = 1 << 48
_MAX_ALIGNMENT = 1 << 20
_RELEASED = "operation on a released HostBuffer"


def _checked_request(nbytes: int) -> int:
    n = operator.index(nbytes)
    if n < 0:
        raise ValueError(f"nbytes must be >= 0, got {n}")
    if n > _MAX_REQUEST:
        raise ValueError(f"nbytes too large: {n}")
    return n


def size_class(nbytes: int) -> int:
    """The capacity a request of `nbytes` is rounded up to."""
    n = _checked_request(nbytes)
    if n <= _MIN_CLASS:
        return _MIN_CLASS
    p = 1 << (n - 1).bit_length()
    if n <= _FINE_CLASSES_ABOVE:
        return p
    step = p // 8  # quarter steps between powers of two above 1 MiB
    return -(-n // step) * step


def _report_unraisable(exc: BaseException, what: str, obj: object) -> None:
    # The native pool reports hook failures on its free path through
    # PyErr_WriteUnraisable; sys.unraisablehook is the Python-level equivalent.
    sys.unraisablehook(
        types.SimpleNamespace(
            exc_type=type(exc), exc_value=exc, exc_traceback=exc.__traceback__, err_msg=what, object=obj
        )
    )


class _Slab:
    __slots__ = ("memory", "window", "address", "capacity")
    memory: np.ndarray
    window: ctypes.Array[ctypes.c_uint8]
    address: int
    capacity: int

    def __init__(self, capacity: int, alignment: int) -> None:
        self.memory = np.empty(capacity + alignment, dtype=np.uint8)
        start = self.memory.__array_interface__["data"][0]
        offset = -start % alignment
        # A ctypes window, not an ndarray slice: see HostBuffer._over.  Its type
        # is cached per capacity by ctypes, and capacities are few size classes.
        # (numpy's stubs declare ndarray a Buffer only for Python >= 3.12.)
        self.window = (ctypes.c_uint8 * capacity).from_buffer(self.memory, offset)  # type: ignore[arg-type, unused-ignore]
        self.address = start + offset
        self.capacity = capacity


class _Lease:
    __slots__ = ("pool", "slab", "returned")

    def __init__(self, pool: HostBufferPool, slab: _Slab) -> None:
        self.pool = pool
        self.slab = slab
        self.returned = False


class HostBuffer(np.ndarray):
    """A leased, aligned host buffer: writable 1-D uint8 (an ndarray here)."""

    _lease: _Lease | None

    def __new__(cls, *args: Any, **kwargs: Any) -> HostBuffer:
        raise TypeError("HostBuffer objects come from HostBufferPool.acquire()")

    @classmethod
    def _over(cls, lease: _Lease, nbytes: int) -> HostBuffer:
        # The base must not be an ndarray (nor a memoryview, which numpy unwraps
        # to its ndarray): numpy collapses view chains through ndarray bases, and
        # every view of this buffer must keep *it* alive, so that garbage
        # collection returns the slab only after the views are gone.
        buf = np.ndarray.__new__(cls, (nbytes,), dtype=np.uint8, buffer=cast(Any, lease.slab.window))
        buf._lease = lease
        return buf

    def __array_finalize__(self, obj: object) -> None:
        # Views and results derived from a buffer are not leases themselves.
        self._lease = None

    def _own_lease(self) -> _Lease:
        lease: _Lease | None = self.__dict__.get("_lease")
        if lease is None:
            raise TypeError("this array is derived from a HostBuffer, not a pool buffer itself")
        return lease

    @property
    def capacity(self) -> int:
        return self._own_lease().slab.capacity

    @property
    def address(self) -> int:
        lease = self._own_lease()
        if lease.returned:
            raise ValueError(_RELEASED)
        return lease.slab.address

    @property
    def released(self) -> bool:
        return self._own_lease().returned

    def release(self) -> None:
        lease = self._own_lease()
        if lease.pool._give_back(lease):
            self.flags.writeable = False

    def __enter__(self) -> HostBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __del__(self) -> None:
        lease = self.__dict__.get("_lease")
        if lease is not None:
            try:
                lease.pool._give_back(lease)
            except Exception:  # interpreter shutdown: nothing left to return to
                pass

    def __repr__(self) -> str:
        lease = self.__dict__.get("_lease")
        if lease is None:
            return super().__repr__()
        if lease.returned:
            return "<HostBuffer released>"
        return f"<HostBuffer nbytes={self.nbytes} capacity={lease.slab.capacity} address={lease.slab.address:#x}>"


class HostBufferPool:
    """Pool of aligned host buffers, reused by size class."""

    def __init__(
        self,
        alignment: int = 64,
        max_cached_bytes: int = 256 << 20,
        *,
        on_new_slab: SlabHook | None = None,
        on_free_slab: SlabHook | None = None,
    ) -> None:
        alignment = operator.index(alignment)
        max_cached_bytes = operator.index(max_cached_bytes)
        if alignment < 1 or alignment > _MAX_ALIGNMENT or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two in [1, 1 MiB], got {alignment}")
        if max_cached_bytes < 0:
            raise ValueError(f"max_cached_bytes must be >= 0, got {max_cached_bytes}")
        for name, hook in (("on_new_slab", on_new_slab), ("on_free_slab", on_free_slab)):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be callable or None")
        self._alignment = alignment
        self._max_cached_bytes = max_cached_bytes
        self._on_new_slab = on_new_slab
        self._on_free_slab = on_free_slab
        # Re-entrant: a HostBuffer collected by the cyclic GC during an allocation
        # made under the lock returns its slab from __del__ on this very thread.
        self._lock = threading.RLock()
        self._free: dict[int, list[_Slab]] = {}
        self._bytes_in_use = 0
        self._bytes_cached = 0
        self._allocations = 0
        self._reuses = 0
        self._releases = 0
        self._frees = 0

    @property
    def alignment(self) -> int:
        return self._alignment

    @property
    def max_cached_bytes(self) -> int:
        return self._max_cached_bytes

    def acquire(self, nbytes: int) -> HostBuffer:
        n = _checked_request(nbytes)
        return HostBuffer._over(_Lease(self, self._take(size_class(n))), n)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "bytes_in_use": self._bytes_in_use,
                "bytes_cached": self._bytes_cached,
                "allocations": self._allocations,
                "reuses": self._reuses,
                "releases": self._releases,
                "frees": self._frees,
            }

    def trim(self) -> int:
        with self._lock:
            doomed = [slab for slabs in self._free.values() for slab in slabs]
            self._free.clear()
            self._bytes_cached = 0
            self._frees += len(doomed)
        for slab in doomed:
            self._free_slab(slab)
        return sum(slab.capacity for slab in doomed)

    def __del__(self) -> None:
        try:
            self.trim()
        except Exception:  # interpreter shutdown
            pass

    def _take(self, capacity: int) -> _Slab:
        with self._lock:
            cached = self._free.get(capacity)
            if cached:
                self._bytes_cached -= capacity
                self._bytes_in_use += capacity
                self._reuses += 1
                return cached.pop()
        slab = _Slab(capacity, max(self._alignment, 8))
        if self._on_new_slab is not None:
            self._on_new_slab(slab.address, capacity)  # raising drops the slab, like the native pool
        with self._lock:
            self._allocations += 1
            self._bytes_in_use += capacity
        return slab

    def _give_back(self, lease: _Lease) -> bool:
        """Returns the lease's slab once; False if it was already returned."""
        slab = lease.slab
        with self._lock:
            if lease.returned:
                return False
            lease.returned = True
            self._releases += 1
            self._bytes_in_use -= slab.capacity
            if self._bytes_cached + slab.capacity <= self._max_cached_bytes:
                self._free.setdefault(slab.capacity, []).append(slab)
                self._bytes_cached += slab.capacity
                return True
            self._frees += 1
        self._free_slab(slab)
        return True

    def _free_slab(self, slab: _Slab) -> None:
        if self._on_free_slab is not None:
            try:
                self._on_free_slab(slab.address, slab.capacity)
            except Exception as exc:
                _report_unraisable(exc, "naiad.ext.host_buffers_py on_free_slab hook", self._on_free_slab)
        # The memory itself goes when the last reference to slab.memory does.
