"""Aligned, reusable host staging buffers, page-locked for CUDA when possible."""

from collections.abc import Callable
from types import TracebackType

NATIVE: bool
"""True when the pybind11 module is in use, False for the Python twin."""

PINNED: bool
"""Whether default_pool() page-locks its slabs (cuda-python importable, a CUDA
device present, NAIAD_PIN_HOST_BUFFERS != "0", no registration failure yet).
Computed on access; the first access creates the default pool."""

DEFAULT_ALIGNMENT: int  # 64
PINNED_ALIGNMENT: int  # 4096: pinned slabs never share a page
DEFAULT_MAX_CACHED_BYTES: int  # 256 MiB

SlabHook = Callable[[int, int], object]

def size_class(nbytes: int) -> int:
    """The capacity a request of `nbytes` is rounded up to: powers of two from
    4 KiB up to 1 MiB, then quarter steps (1.25x, 1.5x, 1.75x, 2x a power of two)."""

class HostBuffer:
    """A leased, aligned host buffer from HostBufferPool.acquire().

    Exposes the buffer protocol as a writable, C-contiguous 1-D uint8 buffer of
    `nbytes` bytes (memoryview(buf), numpy.frombuffer(buf, dtype), gather(out=buf)).
    Contents are uninitialised, like numpy.empty.

    Lifetime: release() (or leaving a `with` block) returns the slab to the pool;
    a buffer never released returns when garbage collected, which happens only
    after every memoryview/array over it is gone (each export references it).
    release() raises BufferError while such exports are alive, and the buffer
    stays usable; drop them first, or drop the buffer and let GC return it.
    Leaving a `with` block because of an exception never raises BufferError: the
    slab then returns when the last export dies.

    After release: `address` and new exports raise ValueError; `nbytes`,
    `capacity` and `released` stay readable; release() again is a no-op.

    The Python twin (NATIVE False) cannot count exports before Python 3.12: its
    release() does not refuse, and a released twin buffer turns read-only rather
    than refusing exports.  Code correct against the native pool is correct there.
    """

    @property
    def nbytes(self) -> int: ...
    @property
    def capacity(self) -> int:
        """Size of the backing slab: size_class(nbytes)."""
    @property
    def address(self) -> int:
        """Start of the memory; address % pool.alignment == 0."""
    @property
    def released(self) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> HostBuffer: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...

class HostBufferPool:
    """Thread-safe pool of aligned host buffers, reused by size class.

    Each buffer is backed by its own slab of size_class(nbytes) bytes from
    posix_memalign.  Released slabs are cached for reuse while the cache holds
    at most `max_cached_bytes`; beyond that they are freed.

    on_new_slab(address, nbytes) runs when a slab is first allocated (if it
    raises, the slab is freed and acquire() re-raises); on_free_slab(address,
    nbytes) runs just before a slab is finally freed (exceptions go to
    sys.unraisablehook).  Hooks run without the pool's lock held.
    """

    def __init__(
        self,
        alignment: int = 64,
        max_cached_bytes: int = 256 << 20,
        *,
        on_new_slab: SlabHook | None = None,
        on_free_slab: SlabHook | None = None,
    ) -> None:
        """alignment: a power of two in [1, 1 MiB].  ValueError otherwise."""
    @property
    def alignment(self) -> int: ...
    @property
    def max_cached_bytes(self) -> int: ...
    def acquire(self, nbytes: int) -> HostBuffer:
        """A buffer of `nbytes` bytes (>= 0), reusing a cached slab when one fits."""
    def stats(self) -> dict[str, int]:
        """bytes_in_use / bytes_cached (in slab capacity bytes), and counters:
        allocations (new slabs), reuses (acquires served from the cache),
        releases (buffers returned, explicitly or by GC), frees (slabs freed)."""
    def trim(self) -> int:
        """Frees every cached slab; returns the bytes freed."""

def default_pool() -> HostBufferPool:
    """The process-wide pool (alignment 64, or 4096 and pinned when PINNED)."""
