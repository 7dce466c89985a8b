"""The CUDA copy path, native (`naiad.ext._cuda_copy`) and its cuda-python twin, through one
test class. The batch gather runs on any machine; the device copies need a GPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from naiad.ext import cuda_path

HEADER = any((Path(p) / "include" / "cuda_runtime_api.h").exists() for p in ("/usr/local/cuda", "/usr"))

try:
    from naiad.ext import _cuda_copy as native
except ImportError:  # built only where the CUDA toolkit's header is found
    native = None

IMPLEMENTATIONS = [pytest.param(cuda_path.PYTHON_COPIES, id="python"),
                   pytest.param(native, id="native", marks=pytest.mark.skipif(native is None, reason="_cuda_copy not built"))]
needs_gpu = pytest.mark.skipif(not cuda_path.has_gpu(), reason=f"needs an NVIDIA GPU ({cuda_path.why_not()})")


@pytest.mark.skipif(not HEADER, reason="no CUDA toolkit header on this machine")
def test_native_module_is_built_where_the_toolkit_header_is() -> None:
    assert native is not None, "setup.py should build _cuda_copy when cuda_runtime_api.h exists"
    assert importlib.util.find_spec("naiad.ext._cuda_copy") is not None


@pytest.mark.skipif(native is None, reason="_cuda_copy not built")
def test_native_probe_never_raises_and_says_why() -> None:
    count, why, _library = native.probe()
    assert count >= 0
    assert (count > 0) == (why == "")
    if count == 0:
        with pytest.raises(RuntimeError, match="needs CUDA, which is not available"):
            native.Stream(0)
        with pytest.raises(RuntimeError, match="needs CUDA, which is not available"):
            native.copy_h2d(0, bytearray(8), 0)
        assert cuda_path.native_copies() is None
        assert cuda_path.copies() is cuda_path.PYTHON_COPIES


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
class TestCopies:
    def test_gather_packs_a_batch_back_to_back(self, impl) -> None:
        sources = [np.arange(n, dtype=np.float32) + n for n in (3, 1, 0, 5)]
        staging = bytearray(64)
        offsets = impl.gather(staging, sources)
        assert offsets == [0, 12, 16, 16]
        packed = np.frombuffer(staging, dtype=np.float32)[:9]
        np.testing.assert_array_equal(packed, np.concatenate(sources))

    def test_gather_takes_any_contiguous_buffer(self, impl) -> None:
        sources = [b"abc", bytearray(b"de"), memoryview(b"fgh"), np.frombuffer(b"ij", dtype=np.uint8)]
        staging = np.zeros(16, dtype=np.uint8)
        assert impl.gather(staging, sources) == [0, 3, 5, 8]
        assert staging[:10].tobytes() == b"abcdefghij"

    def test_gather_refuses_a_batch_larger_than_the_staging_buffer(self, impl) -> None:
        with pytest.raises(ValueError, match="does not fit the staging buffer"):
            impl.gather(bytearray(7), [b"1234", b"5678"])

    @pytest.mark.gpu
    @needs_gpu
    def test_round_trip_through_the_device(self, impl) -> None:
        from naiad.ext.host_buffers import default_pool

        stream, device = cuda_path.Stream(0), cuda_path.DeviceBuffer(0, 1 << 20)
        try:
            pool = default_pool()
            src = np.frombuffer(pool.acquire(1 << 20), dtype=np.uint8)
            src[:] = np.arange(1 << 20, dtype=np.uint64).astype(np.uint8)
            out = np.frombuffer(pool.acquire(1 << 20), dtype=np.uint8)
            impl.copy_h2d(device.ptr, src, stream.handle)
            impl.copy_d2h(out, device.ptr, stream.handle)
            stream.synchronize()
            np.testing.assert_array_equal(src, out)
        finally:
            device.close()
            stream.close()

    @pytest.mark.gpu
    @needs_gpu
    def test_gather_to_device_copies_the_whole_batch(self, impl) -> None:
        from naiad.ext.host_buffers import default_pool

        stream, device = cuda_path.Stream(0), cuda_path.DeviceBuffer(0, 4096)
        try:
            sources = [np.full(100, i, dtype=np.int32) for i in range(5)]
            staging = default_pool().acquire(4096)
            offsets = impl.gather_to_device(device.ptr, staging, sources, stream.handle)
            assert offsets == [i * 400 for i in range(5)]
            out = np.zeros(500, dtype=np.int32)
            impl.copy_d2h(out, device.ptr, stream.handle)
            stream.synchronize()
            np.testing.assert_array_equal(out, np.concatenate(sources))
        finally:
            device.close()
            stream.close()


@pytest.mark.gpu
@needs_gpu
@pytest.mark.skipif(native is None, reason="_cuda_copy not built")
def test_native_bandwidth_reports_both_paths() -> None:
    figures = native.bandwidth(8 << 20, 4)
    for key in ("h2d_naiad_gbps", "h2d_cudamemcpy_gbps", "d2h_naiad_gbps", "d2h_cudamemcpy_gbps"):
        assert figures[key] > 0
