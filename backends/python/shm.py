"""Shared memory for tensor data: memfd regions, passed by fd, carved by a bump arena.

Each side of a parent/stub pair owns one `Arena` and writes only into its own regions;
the other side maps them read-write (`attach`) when the owner announces them (the fd
rides on the control socket with SCM_RIGHTS). Nothing is ever created in /dev/shm: a
memfd has no path, and its memory goes away when the last fd and mapping close, so a
SIGKILL of either process can leak nothing. Region names (visible in /proc/<pid>/maps as
`/memfd:<name> (deleted)`) carry the server's run id and a uuid so servers never collide.

Allocation is a bump pointer per region plus a count of live allocations; a region whose
count drops to zero starts again at offset 0 (so steady request/response traffic keeps
reusing the same, cache-warm pages). When the current region is full, an idle region is
reused or a new one is added. An allocation is identified by its region id only: freeing
is "one fewer live allocation in region r", which is all the bump scheme needs.
"""

from __future__ import annotations

import mmap
import os
import uuid
from typing import Callable

ALIGN = 64  # every tensor starts on a cache line (and satisfies any dtype's alignment)
DEFAULT_REGION_SIZE = 8 << 20
_BIG_GRANULE = 2 << 20  # regions for oversized allocations are rounded up to this
# An idle region this large gives its pages back (smaller ones keep them: re-faulting a
# region on every request would cost more than the memory it holds).
_DROP_PAGES_ABOVE = 64 << 20


def align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


class Region:
    """One memfd mapping. The owner allocates in it; the peer only reads and writes slices."""

    __slots__ = ("id", "size", "fd", "mm", "view", "top", "live")

    def __init__(self, rid: int, size: int, fd: int, mm: mmap.mmap) -> None:
        self.id = rid
        self.size = size
        self.fd = fd  # -1 once closed (the peer closes it right after mapping)
        self.mm = mm
        self.view = memoryview(mm)
        self.top = 0
        self.live = 0

    @classmethod
    def create(cls, rid: int, size: int, name: str) -> "Region":
        fd = os.memfd_create(name[:240], os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        return cls(rid, size, fd, mm)

    @classmethod
    def attach(cls, rid: int, size: int, fd: int) -> "Region":
        """Map a region the peer announced; the fd is closed (the mapping keeps it alive)."""
        try:
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        return cls(rid, size, -1, mm)

    def drop_pages(self) -> None:
        """Give an idle region's memory back to the system (it stays mapped)."""
        try:
            self.mm.madvise(mmap.MADV_REMOVE)
        except (AttributeError, OSError, ValueError):
            pass

    def close(self) -> None:
        try:
            self.view.release()
            self.mm.close()
        except BufferError:
            # Someone still holds a view of it (a numpy array in the stub): the mapping
            # is unmapped when that last view is collected.
            pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Arena:
    """The owner's side: allocate, free, announce new regions (`on_new_region`)."""

    def __init__(
        self,
        prefix: str,
        *,
        region_size: int = DEFAULT_REGION_SIZE,
        first_region_size: int | None = None,
        on_new_region: Callable[[Region], None] | None = None,
    ) -> None:
        self.prefix = prefix
        self.region_size = max(align(region_size), ALIGN)
        self.first_region_size = align(first_region_size or self.region_size)
        self.on_new_region = on_new_region
        self.regions: dict[int, Region] = {}
        self.current: Region | None = None
        self._next_id = 0
        self._uid = uuid.uuid4().hex[:12]

    # -- allocation -----------------------------------------------------------------

    def try_alloc(self, nbytes: int) -> tuple[Region, int] | None:
        """Allocate from the current region or an idle one; None if that needs a new region."""
        n = align(nbytes) if nbytes > 0 else ALIGN
        cur = self.current
        if cur is not None and cur.top + n <= cur.size:
            off = cur.top
            cur.top = off + n
            cur.live += 1
            return cur, off
        big = n > self.region_size
        for region in self.regions.values():
            if (
                region.live == 0
                and region is not cur
                and region.size >= n
                and (big or region.size <= self.region_size)
            ):
                region.top = n
                region.live = 1
                self.current = region
                return region, 0
        return None

    def alloc(self, nbytes: int) -> tuple[Region, int]:
        """Allocate `nbytes` (aligned); grows the arena by a region when needed."""
        got = self.try_alloc(nbytes)
        if got is not None:
            return got
        n = align(nbytes) if nbytes > 0 else ALIGN
        size = self.first_region_size if not self.regions else self.region_size
        if n > size:
            size = (n + _BIG_GRANULE - 1) // _BIG_GRANULE * _BIG_GRANULE
        region = self._new_region(size)
        region.top = n
        region.live = 1
        if size <= self.region_size or self.current is None:
            self.current = region
        return region, 0

    def free(self, rid: int) -> None:
        region = self.regions.get(rid)
        if region is None or region.live <= 0:
            return
        region.live -= 1
        if region.live == 0:
            region.top = 0
            if region.size >= _DROP_PAGES_ABOVE:
                region.drop_pages()

    # -- lifecycle --------------------------------------------------------------------

    def _new_region(self, size: int) -> Region:
        rid = self._next_id
        self._next_id += 1
        region = Region.create(rid, size, f"{self.prefix}-{self._uid}-{rid}")
        self.regions[rid] = region
        if self.on_new_region is not None:
            self.on_new_region(region)
        return region

    @property
    def live(self) -> int:
        """Allocations not yet freed (for tests and diagnostics)."""
        return sum(r.live for r in self.regions.values())

    def close(self) -> None:
        for region in self.regions.values():
            region.close()
        self.regions.clear()
        self.current = None


class PeerRegions:
    """The regions the other side announced, mapped here by id."""

    def __init__(self) -> None:
        self.regions: dict[int, Region] = {}

    def attach(self, rid: int, size: int, fd: int) -> Region:
        old = self.regions.pop(rid, None)
        if old is not None:
            old.close()
        region = Region.attach(rid, size, fd)
        self.regions[rid] = region
        return region

    def __getitem__(self, rid: int) -> Region:
        return self.regions[rid]

    def close(self) -> None:
        for region in self.regions.values():
            region.close()
        self.regions.clear()


def safe_name(text: str, limit: int = 48) -> str:
    """A memfd-name-friendly version of a model or instance name."""
    out = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in text)
    return out[:limit]
