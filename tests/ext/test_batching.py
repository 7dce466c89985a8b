"""gather/scatter: the native module and its numpy twin, each checked against numpy."""

from __future__ import annotations

import gc
import importlib
import os
import zlib

import numpy as np
import pytest

from naiad.ext import batching_py, host_buffers_py

try:
    from naiad.ext import _batching as native_batching
except ImportError:  # not built: the twin is still tested
    native_batching = None

try:
    from naiad.ext import _host_buffers as native_host_buffers
except ImportError:
    native_host_buffers = None

needs_native = pytest.mark.skipif(native_batching is None, reason="naiad.ext._batching is not built")

IMPLS = [
    pytest.param(native_batching, id="native", marks=needs_native),
    pytest.param(batching_py, id="python"),
]
POOLS = [
    pytest.param(native_host_buffers, id="native-pool",
                 marks=pytest.mark.skipif(native_host_buffers is None, reason="not built")),
    pytest.param(host_buffers_py, id="python-pool"),
]

NUMERIC_DTYPES = [
    np.bool_, np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64,
]
ALL_DTYPES = NUMERIC_DTYPES + [object]


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


@pytest.fixture(params=POOLS)
def pool_module(request):
    return request.param


def random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    if dtype.kind == "f":
        return rng.standard_normal(size=shape).astype(dtype)
    # BYTES tensors: object arrays of bytes, lengths varying.
    flat = [bytes(rng.integers(0, 256, size=int(rng.integers(0, 6)), dtype=np.uint8)) for _ in range(int(np.prod(shape)))]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(shape)


def random_parts(rng: np.random.Generator, dtype, n_parts: int | None = None) -> list[np.ndarray]:
    trailing = tuple(int(d) for d in rng.integers(0, 5, size=int(rng.integers(0, 3))))
    n_parts = n_parts or int(rng.integers(1, 9))
    return [random_array(rng, (int(rng.integers(0, 5)),) + trailing, dtype) for _ in range(n_parts)]


def assert_same(result: np.ndarray, expected: np.ndarray) -> None:
    assert result.dtype == expected.dtype
    assert result.shape == expected.shape
    assert np.array_equal(result, expected)


class TestGatherMatchesNumpy:
    @pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
    def test_random_shapes(self, impl, dtype):
        rng = np.random.default_rng(zlib.crc32(np.dtype(dtype).name.encode()))
        for _ in range(20):
            parts = random_parts(rng, dtype)
            result = impl.gather(parts)
            assert_same(result, np.concatenate(parts, axis=0))
            assert result.flags.c_contiguous

    def test_result_is_a_copy(self, impl):
        part = np.arange(12, dtype=np.int32).reshape(3, 4)
        result = impl.gather([part])
        assert not np.shares_memory(result, part)
        result[0, 0] = 99
        assert part[0, 0] == 0

    def test_accepts_any_sequence(self, impl):
        parts = [np.full((2, 3), i, dtype=np.float32) for i in range(3)]
        assert_same(impl.gather(tuple(parts)), np.concatenate(parts))
        assert_same(impl.gather(p for p in parts), np.concatenate(parts))

    def test_all_parts_empty(self, impl):
        parts = [np.empty((0, 7), dtype=np.float64)] * 3
        assert_same(impl.gather(parts), np.empty((0, 7), dtype=np.float64))

    def test_many_parts(self, impl):
        # More parts than the native copy list keeps on the stack.
        parts = [np.full((1, 5), i, dtype=np.int64) for i in range(300)]
        assert_same(impl.gather(parts), np.concatenate(parts))

    def test_equivalent_dtype_spellings(self, impl):
        parts = [np.arange(4, dtype="=i4"), np.arange(4, dtype="<i4" if np.little_endian else ">i4")]
        assert_same(impl.gather(parts), np.concatenate(parts))

    def test_large_batch(self, impl):
        # 64 MiB: the GIL-free memcpy path.
        rng = np.random.default_rng(7)
        parts = [rng.standard_normal((256, 8192), dtype=np.float32) for _ in range(8)]
        result = impl.gather(parts)
        assert result.nbytes == 64 << 20
        assert_same(result, np.concatenate(parts))


class TestGatherNonContiguous:
    @pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
    def test_strided_and_fortran_parts(self, impl, dtype):
        rng = np.random.default_rng(3)
        base = random_array(rng, (12, 6, 4), dtype)
        parts = [
            base[::3],                              # row stride
            base[1:4, :, :],                        # contiguous slice
            base[4:7][:, :, ::-1],                  # reversed inner axis
            np.asfortranarray(base[7:10]),          # Fortran order
            base[10:12, :, :].transpose(0, 1, 2),   # trivial transpose, still C
        ]
        assert not parts[0].flags.c_contiguous and not parts[2].flags.c_contiguous
        assert_same(impl.gather(parts), np.concatenate(parts))

    def test_mixed_contiguous_and_strided(self, impl):
        base = np.arange(200, dtype=np.int16).reshape(20, 10)
        parts = [base[:3], base[3:9:2], base[10:12], base[12:20:4]]
        assert_same(impl.gather(parts), np.concatenate(parts))


class TestGatherOut:
    @pytest.mark.parametrize("dtype", NUMERIC_DTYPES, ids=lambda d: np.dtype(d).name)
    def test_into_pooled_buffer(self, impl, pool_module, dtype):
        rng = np.random.default_rng(11)
        parts = random_parts(rng, dtype, n_parts=5)
        expected = np.concatenate(parts)
        pool = pool_module.HostBufferPool()
        buf = pool.acquire(expected.nbytes + 13)
        result = impl.gather(parts, out=buf)
        assert_same(result, expected)
        view = np.frombuffer(buf, dtype=np.uint8)
        if expected.nbytes:
            assert np.shares_memory(result, view)
            assert result.__array_interface__["data"][0] == buf.address
        del result, view
        buf.release()

    def test_result_keeps_buffer_alive(self, impl, pool_module):
        pool = pool_module.HostBufferPool()
        buf = pool.acquire(64)
        result = impl.gather([np.arange(8, dtype=np.float64)], out=buf)
        del buf
        assert pool.stats()["releases"] == 0
        assert_same(result, np.arange(8, dtype=np.float64))
        del result
        gc.collect()
        assert pool.stats()["releases"] == 1

    @pytest.mark.parametrize("make_out", [
        lambda n: bytearray(n),
        lambda n: np.zeros(n, dtype=np.uint8),
        lambda n: np.zeros((n // 4, 2, 2), dtype=np.float32).reshape(n // 4, 4),  # multi-dim, other dtype
        lambda n: memoryview(bytearray(n + 100)),
    ], ids=["bytearray", "uint8-array", "float32-2d", "memoryview"])
    def test_any_writable_buffer(self, impl, make_out):
        parts = [np.arange(6, dtype=np.int32).reshape(2, 3), np.ones((2, 3), dtype=np.int32)]
        out = make_out(48)
        result = impl.gather(parts, out=out)
        assert_same(result, np.concatenate(parts))
        assert np.shares_memory(result, np.frombuffer(out, dtype=np.uint8))

    def test_noncontiguous_parts_into_out(self, impl):
        base = np.arange(60, dtype=np.float32).reshape(10, 6)
        parts = [base[::2, ::2], base[1:3, 1:4]]
        out = np.empty(100, dtype=np.uint8)
        assert_same(impl.gather(parts, out=out), np.concatenate(parts))

    def test_zero_rows_into_empty_out(self, impl):
        result = impl.gather([np.empty((0, 3), dtype=np.int8)], out=bytearray(0))
        assert result.shape == (0, 3)


class TestGatherErrors:
    def test_no_parts(self, impl):
        with pytest.raises(ValueError, match="at least one part"):
            impl.gather([])

    def test_not_an_array(self, impl):
        with pytest.raises(TypeError, match=r"parts\[1\] is list"):
            impl.gather([np.zeros(2), [1.0, 2.0]])

    def test_dtype_mismatch(self, impl):
        with pytest.raises(TypeError, match="dtype"):
            impl.gather([np.zeros(2, np.float32), np.zeros(2, np.float64)])
        with pytest.raises(TypeError, match="dtype"):
            impl.gather([np.zeros(2, np.uint8), np.zeros(2, np.bool_)])

    def test_trailing_shape_mismatch(self, impl):
        with pytest.raises(ValueError, match="trailing dims"):
            impl.gather([np.zeros((2, 3)), np.zeros((2, 4))])
        with pytest.raises(ValueError, match="trailing dims"):
            impl.gather([np.zeros((2, 3)), np.zeros((2, 3, 1))])

    def test_zero_dim_part(self, impl):
        with pytest.raises(ValueError, match="0-d"):
            impl.gather([np.zeros((), np.float32)])

    def test_out_too_small(self, impl):
        with pytest.raises(ValueError, match="needs 48"):
            impl.gather([np.zeros((3, 4), np.float32)], out=bytearray(47))

    @pytest.mark.parametrize("out", [b"\0" * 64, object(), np.zeros((8, 8), np.uint8)[:, ::2]],
                             ids=["readonly", "not-a-buffer", "strided"])
    def test_bad_out(self, impl, out):
        with pytest.raises(TypeError):
            impl.gather([np.zeros(4, np.uint8)], out=out)

    def test_object_into_out(self, impl):
        with pytest.raises(TypeError, match="BYTES"):
            impl.gather([np.array([b"a"], dtype=object)], out=bytearray(64))

    @needs_native
    @pytest.mark.parametrize("call", [
        lambda m: m.gather([]),
        lambda m: m.gather([np.zeros(2), "x"]),
        lambda m: m.gather([np.zeros(2, np.int8), np.zeros(2, np.int16)]),
        lambda m: m.gather([np.zeros((1, 2)), np.zeros((1, 3))]),
        lambda m: m.gather([np.zeros(())]),
        lambda m: m.gather([np.zeros(4)], out=bytearray(3)),
        lambda m: m.gather([np.zeros(4)], out=b"x" * 64),
        lambda m: m.gather([np.zeros(4)], out=3),
        lambda m: m.scatter([1, 2], [2]),
        lambda m: m.scatter(np.zeros(()), []),
        lambda m: m.scatter(np.zeros(3), [1, -1, 3]),
        lambda m: m.scatter(np.zeros(3), [1, 1]),
        lambda m: m.scatter(np.zeros(3), [1.5, 1.5]),
    ])
    def test_native_and_twin_raise_alike(self, call):
        with pytest.raises(Exception) as native_exc:
            call(native_batching)
        with pytest.raises(Exception) as twin_exc:
            call(batching_py)
        assert type(native_exc.value) is type(twin_exc.value)
        assert str(native_exc.value) == str(twin_exc.value)


class TestScatter:
    @pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
    def test_views(self, impl, dtype):
        rng = np.random.default_rng(5)
        batch = random_array(rng, (10, 3, 2), dtype)
        counts = [3, 0, 4, 2, 1]
        pieces = impl.scatter(batch, counts)
        start = 0
        for piece, c in zip(pieces, counts):
            assert_same(piece, batch[start:start + c])
            if c:
                assert np.shares_memory(piece, batch)
            start += c

    def test_view_mutation_reaches_batch(self, impl):
        batch = np.zeros((4, 2), dtype=np.int32)
        pieces = impl.scatter(batch, [1, 3])
        pieces[1][0, 0] = 7
        assert batch[1, 0] == 7

    @pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
    def test_copies(self, impl, dtype):
        rng = np.random.default_rng(6)
        batch = random_array(rng, (9, 4), dtype)
        before = batch.copy()
        pieces = impl.scatter(batch, [2, 0, 5, 2], copy=True)
        assert [p.shape for p in pieces] == [(2, 4), (0, 4), (5, 4), (2, 4)]
        for piece, expected in zip(pieces, np.split(before, [2, 2, 7])):
            assert_same(piece, expected)
            assert piece.flags.c_contiguous and piece.flags.owndata
            assert not np.shares_memory(piece, batch)
        pieces[0][...] = pieces[2][0, 0]
        assert np.array_equal(batch, before)

    def test_copies_of_noncontiguous_batch(self, impl):
        base = np.arange(120, dtype=np.float64).reshape(10, 12)
        for batch in (base[:, ::3], np.asfortranarray(base), base[::-1]):
            pieces = impl.scatter(batch, [4, 6], copy=True)
            assert_same(pieces[0], batch[:4])
            assert_same(pieces[1], batch[4:])
            assert all(p.flags.c_contiguous and not np.shares_memory(p, base) for p in pieces)

    def test_large_copy(self, impl):
        batch = np.arange(16 << 20, dtype=np.float32).reshape(4096, -1)  # 64 MiB
        pieces = impl.scatter(batch, [1000, 3000, 96], copy=True)
        assert_same(pieces[1], batch[1000:4000])

    def test_counts_forms(self, impl):
        batch = np.arange(6)
        for counts in ([1, 2, 3], (1, 2, 3), np.array([1, 2, 3]), iter([1, 2, 3])):
            assert [p.tolist() for p in impl.scatter(batch, counts)] == [[0], [1, 2], [3, 4, 5]]

    def test_empty(self, impl):
        assert impl.scatter(np.empty((0, 2)), []) == []
        assert [p.shape for p in impl.scatter(np.empty((0, 2)), [0, 0], copy=True)] == [(0, 2), (0, 2)]

    def test_roundtrip_with_gather(self, impl):
        rng = np.random.default_rng(9)
        for dtype in ALL_DTYPES:
            parts = random_parts(rng, dtype)
            pieces = impl.scatter(impl.gather(parts), [len(p) for p in parts], copy=True)
            for piece, part in zip(pieces, parts):
                assert_same(piece, part)


class TestScatterErrors:
    def test_sum_mismatch(self, impl):
        with pytest.raises(ValueError, match="sum to 2, batch has 3 rows"):
            impl.scatter(np.zeros(3), [1, 1])

    def test_negative_count(self, impl):
        with pytest.raises(ValueError, match=">= 0"):
            impl.scatter(np.zeros(3), [4, -1])

    def test_non_integer_count(self, impl):
        with pytest.raises(TypeError):
            impl.scatter(np.zeros(3), [1.0, 2.0])

    def test_not_an_array(self, impl):
        with pytest.raises(TypeError, match="expected numpy.ndarray"):
            impl.scatter([1, 2, 3], [3])

    def test_zero_dim(self, impl):
        with pytest.raises(ValueError, match="0-d"):
            impl.scatter(np.zeros(()), [])


class TestSelection:
    def test_native_when_built(self):
        from naiad.ext import batching

        assert batching.NATIVE is (native_batching is not None and os.environ.get("NAIAD_PURE_PYTHON") != "1")
        expected = native_batching if batching.NATIVE else batching_py
        assert batching.gather is expected.gather and batching.scatter is expected.scatter

    def test_pure_python_override(self, monkeypatch):
        from naiad.ext import batching

        monkeypatch.setenv("NAIAD_PURE_PYTHON", "1")
        try:
            importlib.reload(batching)
            assert batching.NATIVE is False
            assert batching.gather is batching_py.gather
        finally:
            monkeypatch.delenv("NAIAD_PURE_PYTHON")
            importlib.reload(batching)
