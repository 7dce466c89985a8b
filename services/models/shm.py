"""Registered shared-memory regions (Triton's system and CUDA shared-memory extensions).

A system region is a POSIX shared-memory object (`/dev/shm/<key>`) mapped once at
registration; inputs are read as views over the mapping (no copy) and outputs written
into it. Every offset and size is checked against the registered window, and, at each use,
against the object's current size: a client may truncate it after registering, and touching
a page past its end would kill the server with SIGBUS.
"""

from __future__ import annotations

import errno
import mmap
import os
from typing import Any

from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.messages import CudaShmRegion, SystemShmRegion
from naiad.kernel.inference.types import SharedMemoryRef, Tensor

_SHM_ROOT = "/dev/shm"


class _Region:
    __slots__ = ("info", "mapping", "view", "fd")

    def __init__(self, info: SystemShmRegion, mapping: mmap.mmap, fd: int) -> None:
        self.info = info
        self.mapping = mapping
        self.view = memoryview(mapping)[info.offset: info.offset + info.byte_size]
        self.fd = fd  # kept open to fstat the object at each use

    def current_size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        os.close(self.fd)
        self.view.release()
        try:
            self.mapping.close()
        except BufferError:
            # A request still reads a view of it; the mapping goes when that view does.
            pass


class SharedMemoryRegistry:
    def __init__(self) -> None:
        self._system: dict[str, _Region] = {}
        self._cuda: dict[str, Any] = {}  # name -> naiad.ext.cuda_path.CudaShmRegion

    # ------------------------------------------------------------------ system --

    def register_system(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map `byte_size` bytes at `offset` of the POSIX object `key`, with the checks and
        words of Triton's `SharedMemoryManager::RegisterSystemSharedMemory`."""
        if name in self._system or name in self._cuda:
            raise InferenceError(f"shared memory region '{name}' already in manager", ErrorCode.ALREADY_EXISTS)
        # shm_open's rules: leading slashes are dropped; nothing else may be a slash.
        shm_name = key.lstrip("/")
        fd = -1
        if shm_name and "/" not in shm_name and shm_name not in (".", ".."):
            try:
                fd = os.open(os.path.join(_SHM_ROOT, shm_name), os.O_RDWR)
            except OSError:
                fd = -1
        if fd == -1:
            raise InferenceError.internal(f"Unable to open shared memory region: '{key}'")
        try:
            size = os.fstat(fd).st_size
            if offset + byte_size > size:
                raise InferenceError.invalid(f"failed to register shared memory region '{name}': invalid args")
            if byte_size == 0 or offset % mmap.ALLOCATIONGRANULARITY:
                # Triton maps exactly [offset, offset + byte_size), which mmap(2) refuses.
                raise InferenceError.invalid(
                    f"failed to register shared memory region '{name}': unable to process address space"
                    f"{os.strerror(errno.EINVAL)}")
            mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self._system[name] = _Region(SystemShmRegion(name, key, offset, byte_size), mapping, fd)

    def unregister_system(self, name: str = "") -> None:
        names = [name] if name else list(self._system)
        for n in names:
            region = self._system.pop(n, None)
            if region is not None:
                region.close()

    def system_status(self, name: str = "") -> list[SystemShmRegion]:
        if name:
            region = self._system.get(name)
            if region is None:
                self._status_miss(name, cuda=False)
            return [region.info]  # type: ignore[union-attr]
        return [r.info for r in self._system.values()]

    def _status_miss(self, name: str, cuda: bool) -> None:
        """Triton's status errors for a name that is not a region of the kind asked for
        (its not-found text says "system" for both kinds)."""
        if not cuda and name in self._cuda:
            raise InferenceError.not_found(
                f"The region named '{name}' is registered as CUDA shared memory, not system shared memory")
        if cuda and name in self._system:
            raise InferenceError.not_found(
                f"The region named '{name}' is registered as system shared memory, not CUDA shared memory")
        raise InferenceError.not_found(f"Unable to find system shared memory region: '{name}'")

    # ------------------------------------------------------------------ CUDA --

    def register_cuda(self, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        if name in self._system or name in self._cuda:
            raise InferenceError(f"shared memory region '{name}' already in manager", ErrorCode.ALREADY_EXISTS)
        from naiad.ext.cuda_path import CudaShmRegion as CudaRegion  # cuda-python on first use only

        # Opens the client's cudaIpcMemHandle_t; without CUDA it refuses with Triton's
        # "failed to register CUDA shared memory region: '<name>', GPUs not supported".
        self._cuda[name] = CudaRegion.open(name, raw_handle, device_id, byte_size)

    def unregister_cuda(self, name: str = "") -> None:
        for n in [name] if name else list(self._cuda):
            region = self._cuda.pop(n, None)
            if region is not None:
                region.close()

    def cuda_status(self, name: str = "") -> list[CudaShmRegion]:
        if name:
            region = self._cuda.get(name)
            if region is None:
                self._status_miss(name, cuda=True)
            return [region.info]
        return [r.info for r in self._cuda.values()]

    # ------------------------------------------------------------------ use in inference --

    def _window(self, ref: SharedMemoryRef) -> memoryview:
        region = self._system.get(ref.region)
        if region is None:
            if ref.region in self._cuda:
                raise InferenceError.invalid(f"CUDA shared memory region '{ref.region}' is not supported here")
            raise InferenceError.not_found(f"Unable to find shared memory region: '{ref.region}'")
        # Triton's `GetMemoryInfo` bounds, against the registered window: the offset must
        # fall inside it, then its last byte (offset + byte_size - 1, unsigned) too.
        last = region.info.byte_size - 1
        if ref.offset < 0 or ref.offset > last:
            raise InferenceError.invalid(f"Invalid offset for shared memory region: '{ref.region}'")
        if ref.byte_size < 0 or (ref.offset + ref.byte_size - 1) % (1 << 64) > last:
            raise InferenceError.invalid(
                f"Invalid offset + byte size for shared memory region: '{ref.region}'")
        # The object may have shrunk since registration: a window past its current end is
        # out of bounds too (same words), checked before the mapping is touched.
        if region.info.offset + ref.offset + ref.byte_size > region.current_size():
            raise InferenceError.invalid(
                f"Invalid offset + byte size for shared memory region: '{ref.region}'")
        return region.view[ref.offset: ref.offset + ref.byte_size]

    def resolve_input(self, tensor: Tensor) -> None:
        """Give an shm-backed input its data: a view over a system region (no copy), or a
        CUDA region's bytes copied into a pooled, pinned host buffer."""
        ref = tensor.shm
        cuda = self._cuda.get(ref.region)  # type: ignore[union-attr]
        if cuda is not None:
            tensor._raw = cuda.read(ref.offset, ref.byte_size)  # type: ignore[union-attr]
            return
        tensor._raw = self._window(ref)  # type: ignore[arg-type]

    def check_output(self, ref: SharedMemoryRef) -> None:
        cuda = self._cuda.get(ref.region)
        if cuda is not None:
            cuda.device_pointer(ref.offset, ref.byte_size)  # Triton's "Invalid offset + byte size ..."
            return
        self._window(ref)

    def write_output(self, tensor: Tensor, ref: SharedMemoryRef) -> Tensor:
        """Copy an output into its region; returns the tensor as it is reported back."""
        cuda = self._cuda.get(ref.region)
        if cuda is not None:
            raw = memoryview(tensor.raw).cast("B")
            if raw.nbytes > ref.byte_size:
                raise InferenceError.internal(
                    f"shared memory size specified with the request for output '{tensor.name}' "
                    f"({ref.byte_size} bytes) should be at least {raw.nbytes} bytes to hold the results")
            cuda.write(ref.offset, raw)  # H2D from a pinned staging buffer on the region's stream
            return Tensor(tensor.name, tensor.datatype, tensor.shape,
                          shm=SharedMemoryRef(ref.region, raw.nbytes, ref.offset))
        window = self._window(ref)
        raw = memoryview(tensor.raw).cast("B")
        if raw.nbytes > window.nbytes:
            raise InferenceError.internal(
                f"shared memory size specified with the request for output '{tensor.name}' "
                f"({window.nbytes} bytes) should be at least {raw.nbytes} bytes to hold the results")
        window[: raw.nbytes] = raw
        return Tensor(tensor.name, tensor.datatype, tensor.shape,
                      shm=SharedMemoryRef(ref.region, raw.nbytes, ref.offset))

    def close(self) -> None:
        self.unregister_system()
        self.unregister_cuda()
