"""HostBufferPool/HostBuffer: the native module and its Python twin, same behaviour."""

from __future__ import annotations

import gc
import importlib
import os
import logging
import random
import threading

import numpy as np
import pytest

from naiad.ext import host_buffers, host_buffers_py

try:
    from naiad.ext import _host_buffers as native_host_buffers
except ImportError:  # not built: the twin is still tested
    native_host_buffers = None

needs_native = pytest.mark.skipif(native_host_buffers is None, reason="naiad.ext._host_buffers is not built")

IMPLS = [
    pytest.param(native_host_buffers, id="native", marks=needs_native),
    pytest.param(host_buffers_py, id="python"),
]
KiB, MiB = 1 << 10, 1 << 20


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


def is_native(impl) -> bool:
    return impl is native_host_buffers


class TestAcquire:
    @pytest.mark.parametrize("nbytes", [0, 1, 100, 4096, 4097, 70_000, 3 * MiB + 5])
    def test_buffer_protocol(self, impl, nbytes):
        pool = impl.HostBufferPool()
        buf = pool.acquire(nbytes)
        assert buf.nbytes == nbytes
        assert buf.capacity == impl.size_class(nbytes) >= nbytes
        view = memoryview(buf)
        assert (view.format, view.ndim, view.itemsize, len(view)) == ("B", 1, 1, nbytes)
        assert not view.readonly and view.c_contiguous
        if nbytes:
            array = np.frombuffer(buf, dtype=np.uint8)
            array[:] = np.arange(nbytes) % 251
            assert bytes(view[:5]) == bytes(range(min(5, nbytes)))
            assert array.__array_interface__["data"][0] == buf.address
            del array
        view.release()
        buf.release()

    @pytest.mark.parametrize("alignment", [1, 8, 64, 256, 4096, 64 * KiB])
    def test_alignment(self, impl, alignment):
        pool = impl.HostBufferPool(alignment=alignment)
        assert pool.alignment == alignment
        buffers = [pool.acquire(n) for n in (1, 333, 5000, 9000, 2 * MiB + 1)]
        assert all(b.address % alignment == 0 for b in buffers)
        assert len({b.address for b in buffers}) == len(buffers)

    def test_repr(self, impl):
        buf = impl.HostBufferPool().acquire(10)
        assert "HostBuffer nbytes=10 capacity=4096" in repr(buf)
        buf.release()
        assert repr(buf) == "<HostBuffer released>"

    def test_cannot_construct_directly(self, impl):
        with pytest.raises(TypeError):
            impl.HostBuffer()


class TestSizeClasses:
    def test_table(self, impl):
        expected = {
            0: 4 * KiB, 1: 4 * KiB, 4 * KiB: 4 * KiB, 4 * KiB + 1: 8 * KiB, 100 * KiB: 128 * KiB,
            MiB: MiB, MiB + 1: MiB + MiB // 4, 3 * MiB: 3 * MiB, 3 * MiB + 1: 3 * MiB + MiB // 2,
            64 * MiB + 1: 80 * MiB,
        }
        assert {n: impl.size_class(n) for n in expected} == expected

    @needs_native
    def test_twin_matches_native(self):
        rng = random.Random(1)
        sizes = [rng.randrange(0, 1 << 34) >> rng.randrange(0, 34) for _ in range(2000)]
        assert [native_host_buffers.size_class(n) for n in sizes] == [host_buffers_py.size_class(n) for n in sizes]

    def test_classes_are_page_multiples(self, impl):
        for n in range(0, 40 * MiB, 123_457):
            c = impl.size_class(n)
            assert c >= n and c % 4096 == 0 and c - n <= max(4096, n // 4 if n > MiB else n)


class TestArguments:
    @pytest.mark.parametrize("alignment", [0, 3, 48, 2 * MiB, -64])
    def test_bad_alignment(self, impl, alignment):
        with pytest.raises(ValueError, match="power of two"):
            impl.HostBufferPool(alignment=alignment)

    def test_bad_max_cached(self, impl):
        with pytest.raises(ValueError, match="max_cached_bytes"):
            impl.HostBufferPool(max_cached_bytes=-1)

    def test_hooks_must_be_callable(self, impl):
        with pytest.raises(TypeError, match="on_new_slab"):
            impl.HostBufferPool(on_new_slab=3)

    def test_bad_nbytes(self, impl):
        pool = impl.HostBufferPool()
        with pytest.raises(ValueError, match=">= 0"):
            pool.acquire(-1)
        with pytest.raises(ValueError, match="too large"):
            pool.acquire(1 << 60)
        with pytest.raises(TypeError):
            pool.acquire(1.5)
        assert pool.stats()["allocations"] == 0


class TestReuseAndStats:
    def test_reuse_same_class(self, impl):
        pool = impl.HostBufferPool()
        first = pool.acquire(5000)
        address = first.address
        first.release()
        second = pool.acquire(8000)  # same 8 KiB class
        assert second.address == address
        assert pool.stats() == {
            "bytes_in_use": 8 * KiB, "bytes_cached": 0, "allocations": 1,
            "reuses": 1, "releases": 1, "frees": 0,
        }
        other = pool.acquire(9000)  # 16 KiB class: a new slab
        assert other.address != address
        assert pool.stats()["allocations"] == 2
        second.release()
        other.release()
        assert pool.stats()["bytes_in_use"] == 0
        assert pool.stats()["bytes_cached"] == 24 * KiB

    def test_max_cached_bytes(self, impl):
        pool = impl.HostBufferPool(max_cached_bytes=8 * KiB)
        buffers = [pool.acquire(4 * KiB) for _ in range(3)]
        for b in buffers:
            b.release()
        stats = pool.stats()
        assert stats["bytes_cached"] == 8 * KiB
        assert stats["frees"] == 1 and stats["releases"] == 3

    def test_no_cache(self, impl):
        pool = impl.HostBufferPool(max_cached_bytes=0)
        pool.acquire(10).release()
        pool.acquire(10).release()
        stats = pool.stats()
        assert stats["allocations"] == 2 and stats["reuses"] == 0 and stats["frees"] == 2
        assert pool.max_cached_bytes == 0

    def test_trim(self, impl):
        pool = impl.HostBufferPool()
        for n in (10, 5000, 2 * MiB):
            pool.acquire(n).release()
        kept = pool.acquire(10)
        assert pool.trim() == 8 * KiB + 2 * MiB
        stats = pool.stats()
        assert stats["bytes_cached"] == 0 and stats["frees"] == 2 and stats["bytes_in_use"] == 4 * KiB
        kept.release()
        assert pool.trim() == 4 * KiB


class TestLifetime:
    def test_release_is_idempotent(self, impl):
        pool = impl.HostBufferPool()
        buf = pool.acquire(100)
        assert not buf.released
        buf.release()
        buf.release()
        assert buf.released
        assert pool.stats()["releases"] == 1

    def test_use_after_release_raises(self, impl):
        pool = impl.HostBufferPool()
        buf = pool.acquire(100)
        buf.release()
        with pytest.raises(ValueError, match="released"):
            buf.address
        with pytest.raises((ValueError, TypeError)):
            memoryview(buf)[0] = 1
        if is_native(impl):
            with pytest.raises(ValueError, match="released"):
                memoryview(buf)
        assert (buf.nbytes, buf.capacity) == (100, 4096)  # metadata stays readable

    def test_gc_returns_buffer(self, impl):
        pool = impl.HostBufferPool()
        buf = pool.acquire(100)
        del buf
        gc.collect()
        assert pool.stats()["releases"] == 1 and pool.stats()["bytes_in_use"] == 0
        pool.acquire(200)  # and it is reused (then collected again)
        assert pool.stats()["reuses"] == 1

    def test_context_manager(self, impl):
        pool = impl.HostBufferPool()
        with pool.acquire(10) as buf:
            memoryview(buf)[0] = 42
            assert not buf.released
        assert buf.released and pool.stats()["releases"] == 1

    def test_exports_keep_buffer_alive(self, impl):
        pool = impl.HostBufferPool()
        buf = pool.acquire(64)
        array = np.frombuffer(buf, dtype=np.float32)
        view = np.asarray(buf)  # no copy: a view over the same memory
        array[:] = 1.5
        del buf
        gc.collect()
        assert pool.stats()["releases"] == 0
        assert np.all(array == 1.5) and np.shares_memory(view, array)
        del array
        gc.collect()
        assert pool.stats()["releases"] == 0
        del view
        gc.collect()
        assert pool.stats()["releases"] == 1

    @needs_native
    def test_release_refused_while_exported(self):
        pool = native_host_buffers.HostBufferPool()
        buf = pool.acquire(64)
        view = memoryview(buf)
        array = np.frombuffer(buf, dtype=np.uint8)
        with pytest.raises(BufferError, match="2 export"):
            buf.release()
        assert not buf.released and buf.address  # still fully usable
        view.release()
        with pytest.raises(BufferError, match="1 export"):
            buf.release()
        del array
        buf.release()
        assert pool.stats()["releases"] == 1

    def test_exit_during_exception_does_not_mask_it(self, impl):
        pool = impl.HostBufferPool()
        with pytest.raises(RuntimeError, match="model failed"):
            with pool.acquire(10) as buf:
                view = memoryview(buf)
                raise RuntimeError("model failed")
        del view, buf
        gc.collect()
        assert pool.stats()["releases"] == 1

    @needs_native
    def test_exit_refuses_with_live_exports(self):
        pool = native_host_buffers.HostBufferPool()
        with pytest.raises(BufferError):
            with pool.acquire(10) as buf:
                view = memoryview(buf)
        view.release()
        buf.release()
        assert pool.stats()["releases"] == 1

    def test_buffers_outlive_pool(self, impl):
        freed = []
        pool = impl.HostBufferPool(on_free_slab=lambda a, n: freed.append(a))
        buf = pool.acquire(10)
        address = buf.address
        del pool
        gc.collect()
        memoryview(buf)[:3] = b"abc"
        assert freed == []
        buf.release()
        del buf
        gc.collect()
        assert freed == [address]  # the last owner gone: cached slab freed


class TestHooks:
    def test_called_per_slab(self, impl):
        events = []
        pool = impl.HostBufferPool(
            max_cached_bytes=4 * KiB,
            on_new_slab=lambda a, n: events.append(("new", a, n)),
            on_free_slab=lambda a, n: events.append(("free", a, n)),
        )
        a, b = pool.acquire(10), pool.acquire(5000)
        a_address, b_address = a.address, b.address
        a.release()
        pool.acquire(20).release()  # reuse: no hook
        b.release()  # cache full: freed
        pool.trim()
        assert events == [
            ("new", a_address, 4 * KiB), ("new", b_address, 8 * KiB),
            ("free", b_address, 8 * KiB), ("free", a_address, 4 * KiB),
        ]

    def test_failing_new_hook_fails_acquire(self, impl):
        def refuse(address, nbytes):
            raise OSError("cannot pin")

        pool = impl.HostBufferPool(on_new_slab=refuse)
        with pytest.raises(OSError, match="cannot pin"):
            pool.acquire(10)
        assert pool.stats() == {
            "bytes_in_use": 0, "bytes_cached": 0, "allocations": 0,
            "reuses": 0, "releases": 0, "frees": 0,
        }

    def test_failing_free_hook_is_unraisable(self, impl, monkeypatch):
        seen = []
        monkeypatch.setattr("sys.unraisablehook", lambda info: seen.append(info.exc_value))

        def explode(address, nbytes):
            raise RuntimeError("cannot unpin")

        pool = impl.HostBufferPool(max_cached_bytes=0, on_free_slab=explode)
        pool.acquire(10).release()
        assert [str(e) for e in seen] == ["cannot unpin"]
        assert pool.stats()["frees"] == 1


class TestThreads:
    def test_concurrent_acquire_release(self, impl):
        pool = impl.HostBufferPool(max_cached_bytes=1 * MiB)
        errors = []

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for i in range(300):
                    buf = pool.acquire(rng.choice((100, 5000, 20_000, 70_000)))
                    array = np.frombuffer(buf, dtype=np.uint8)
                    array[:] = seed
                    if array.min() != seed or array.max() != seed:
                        errors.append(f"thread {seed}: buffer shared with another thread")
                    del array
                    buf.release()
            except Exception as exc:  # surfaced below
                errors.append(repr(exc))

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(1, 7)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert errors == []
        stats = pool.stats()
        assert stats["releases"] == stats["allocations"] + stats["reuses"] == 6 * 300
        assert stats["bytes_in_use"] == 0
        assert stats["bytes_cached"] <= 1 * MiB


class FakeCudart:
    """Just enough of cuda-python's runtime module for the pinning hooks."""

    class cudaError_t:
        cudaSuccess = 0
        cudaErrorHostMemoryAlreadyRegistered = 712

    cudaHostRegisterDefault = 0

    def __init__(self, devices: int = 1, fail_register: bool = False) -> None:
        self.devices = devices
        self.fail_register = fail_register
        self.registered: dict[int, int] = {}

    def cudaGetDeviceCount(self):
        return (self.cudaError_t.cudaSuccess, self.devices)

    def cudaHostRegister(self, ptr, size, flags):
        if self.fail_register:
            return (self.cudaError_t.cudaErrorHostMemoryAlreadyRegistered,)
        self.registered[ptr] = size
        return (self.cudaError_t.cudaSuccess,)

    def cudaHostUnregister(self, ptr):
        del self.registered[ptr]
        return (self.cudaError_t.cudaSuccess,)


class TestPinning:
    def test_slabs_registered_and_unregistered(self, impl):
        cudart = FakeCudart()
        pinner = host_buffers._CudaPinner(cudart)
        pool = impl.HostBufferPool(4096, on_new_slab=pinner.on_new_slab, on_free_slab=pinner.on_free_slab)
        buf = pool.acquire(10_000)
        assert cudart.registered == {buf.address: 16 * KiB}
        buf.release()
        pool.trim()
        assert cudart.registered == {} and pinner.active

    def test_failure_logged_once_then_pageable(self, impl, caplog):
        cudart = FakeCudart(fail_register=True)
        pinner = host_buffers._CudaPinner(cudart)
        pool = impl.HostBufferPool(4096, on_new_slab=pinner.on_new_slab, on_free_slab=pinner.on_free_slab)
        with caplog.at_level(logging.WARNING, logger=host_buffers.__name__):
            buffers = [pool.acquire(n) for n in (10, 10_000, 100_000)]
        assert not pinner.active
        assert len(caplog.records) == 1 and "pageable" in caplog.records[0].getMessage()
        memoryview(buffers[2])[:2] = b"ok"
        for b in buffers:
            b.release()
        pool.trim()  # never registered: nothing to unregister

    @pytest.mark.parametrize("cudart, env, pinned", [
        (None, None, False),
        (FakeCudart(devices=0), None, False),
        (FakeCudart(devices=2), None, True),
        (FakeCudart(devices=2), "0", False),
    ], ids=["no-cuda-python", "no-device", "device", "disabled-by-env"])
    def test_default_pool(self, monkeypatch, cudart, env, pinned):
        monkeypatch.setattr(host_buffers, "_import_cudart", lambda: cudart)
        monkeypatch.setattr(host_buffers, "_default", None)
        if env is None:
            monkeypatch.delenv("NAIAD_PIN_HOST_BUFFERS", raising=False)
        else:
            monkeypatch.setenv("NAIAD_PIN_HOST_BUFFERS", env)
        pool = host_buffers.default_pool()
        assert host_buffers.default_pool() is pool
        assert host_buffers.PINNED is pinned
        assert pool.alignment == (host_buffers.PINNED_ALIGNMENT if pinned else host_buffers.DEFAULT_ALIGNMENT)
        buf = pool.acquire(100)
        assert (buf.address in cudart.registered) is pinned if cudart else True
        buf.release()

    def test_probe_survives_broken_binding(self, monkeypatch):
        class Broken(FakeCudart):
            def cudaGetDeviceCount(self):
                raise RuntimeError("driver too old")

        monkeypatch.setattr(host_buffers, "_import_cudart", lambda: Broken())
        monkeypatch.delenv("NAIAD_PIN_HOST_BUFFERS", raising=False)
        assert host_buffers._probe_pinner() is None


class TestSelection:
    def test_native_when_built(self):
        assert host_buffers.NATIVE is (native_host_buffers is not None and os.environ.get("NAIAD_PURE_PYTHON") != "1")
        expected = native_host_buffers if host_buffers.NATIVE else host_buffers_py
        assert host_buffers.HostBufferPool is expected.HostBufferPool

    def test_pure_python_override(self, monkeypatch):
        monkeypatch.setenv("NAIAD_PURE_PYTHON", "1")
        try:
            importlib.reload(host_buffers)
            assert host_buffers.NATIVE is False
            assert host_buffers.HostBufferPool is host_buffers_py.HostBufferPool
        finally:
            monkeypatch.delenv("NAIAD_PURE_PYTHON")
            importlib.reload(host_buffers)
