"""The CUDA path (its pieces live in `naiad.ext.cuda`, one module a job): device probing, per-instance streams and events, host<->device copies
through pinned staging buffers, CUDA shared-memory regions (Triton's cudasharedmemory
extension), and DLPack views of device memory.

Everything goes through cuda-python's runtime bindings (`pip install 'naiad[gpu]'`),
imported on first use: importing this module never touches CUDA (a process that
initialises CUDA and then forks breaks its children), and without cuda-python or a GPU
every entry point fails with one clear InferenceError instead of an ImportError.

Pieces, one job each:

  has_gpu() / device_count()   whether CUDA is usable here (cached)
  Stream, Event                one non-blocking stream per model instance; events mark
                               where work ends so a thread can wait for just that work
  DeviceBuffer                 a cudaMalloc'd allocation that grows on demand
  copy_to_device/copy_to_host  cudaMemcpyAsync on a stream; host memory should come from
  gather_to_device             `naiad.ext.host_buffers.default_pool()`, whose slabs are
                               page-locked where a GPU exists, so the copies are async.
                               They run in the native `_cuda_copy` module (GIL released)
                               where it is built, else in its cuda-python twin
  CudaShmRegion                a client's device allocation opened with
                               cudaIpcOpenMemHandle: inputs are read from it, outputs
                               written to it, and a GPU model can take a zero-copy view
  DLPackTensor                 device (or host) memory as a DLPack producer
                               (`__dlpack__` / `__dlpack_device__`): torch.from_dlpack,
                               cupy, jax and numpy (host memory) take it without a copy
"""

from __future__ import annotations

from .cuda.copies import (
    PYTHON_COPIES,
    copies,
    copy_on_device,
    copy_to_device,
    copy_to_host,
    gather_to_device,
    host_address,
    native_copies,
)
from .cuda.dlpack import DLPackTensor, live_dlpack_count
from .cuda.runtime import (
    CUDA_IPC_HANDLE_SIZE,
    CudaError,
    check,
    cudart,
    device_count,
    has_gpu,
    require,
    set_device,
    why_not,
)
from .cuda.shm import CudaShmRegion, ipc_handle
from .cuda.streams import DeviceBuffer, Event, Stream

__all__ = [
    "CUDA_IPC_HANDLE_SIZE",
    "CudaError",
    "CudaShmRegion",
    "DLPackTensor",
    "DeviceBuffer",
    "Event",
    "Stream",
    "copies",
    "copy_to_device",
    "copy_to_host",
    "gather_to_device",
    "native_copies",
    "cudart",
    "device_count",
    "has_gpu",
    "host_address",
    "require",
    # also used by tests, backends and the stub
    "PYTHON_COPIES",
    "check",
    "copy_on_device",
    "ipc_handle",
    "live_dlpack_count",
    "set_device",
    "why_not",
]
