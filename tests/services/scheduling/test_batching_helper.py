"""services.models.batching: request tensors gathered into pooled batch buffers and
outputs scattered back, checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from naiad.ext.host_buffers import HostBufferPool
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, Tensor
from naiad.services.models.batching import gather_inputs, output_tensors, scatter_outputs


def _requests(rows=(1, 3, 2), cols=5):
    rng = np.random.default_rng(0)
    out = []
    for i, r in enumerate(rows):
        a = rng.standard_normal((r, cols)).astype(np.float32)
        b = rng.integers(0, 100, (r, 2)).astype(np.int64)
        out.append(InferenceRequest("m", [Tensor.from_numpy("A", a), Tensor.from_numpy("B", b)], id=str(i)))
    return out


def test_gather_matches_numpy_and_uses_pooled_buffers():
    reqs = _requests()
    pool = HostBufferPool()
    with gather_inputs(reqs, pool=pool) as batch:
        assert batch.counts == [1, 3, 2] and batch.batch_size == 6
        for name in ("A", "B"):
            expected = np.concatenate([r.input(name).array for r in reqs])
            assert np.array_equal(batch[name], expected) and batch[name].dtype == expected.dtype
        assert pool.stats()["bytes_in_use"] > 0
    assert pool.stats()["bytes_in_use"] == 0  # back in the pool


def test_gather_one_request_is_zero_copy_and_bytes_need_no_buffer():
    reqs = _requests(rows=(2,))
    with gather_inputs(reqs) as batch:
        assert batch["A"] is reqs[0].input("A").array
    texts = [InferenceRequest("m", [Tensor.from_numpy("T", np.array([[b"a"], [b"bc"]], dtype=object), "BYTES")]),
             InferenceRequest("m", [Tensor.from_numpy("T", np.array([[b"d"]], dtype=object), "BYTES")])]
    with gather_inputs(texts) as batch:
        assert batch["T"].reshape(-1).tolist() == [b"a", b"bc", b"d"]


def test_gather_refuses_mismatched_shapes():
    reqs = [InferenceRequest("m", [Tensor.from_numpy("A", np.zeros((1, 3), np.float32))]),
            InferenceRequest("m", [Tensor.from_numpy("A", np.zeros((1, 4), np.float32))])]
    with pytest.raises(InferenceError, match="cannot batch input 'A'"):
        gather_inputs(reqs)


def test_scatter_splits_per_request_views_or_copies():
    out = np.arange(12, dtype=np.float32).reshape(6, 2)
    views = scatter_outputs({"OUT": out}, [1, 3, 2])
    assert [v["OUT"].shape[0] for v in views] == [1, 3, 2]
    assert np.array_equal(np.concatenate([v["OUT"] for v in views]), out)
    assert np.shares_memory(views[1]["OUT"], out)
    copies = scatter_outputs({"OUT": out}, [1, 3, 2], copy=True)
    assert not np.shares_memory(copies[1]["OUT"], out)
    tensors = output_tensors(copies[2], {"OUT": "FP32"})
    assert tensors[0].name == "OUT" and tensors[0].datatype == "FP32" and tensors[0].shape == (2, 2)
    with pytest.raises(InferenceError, match="first dimension must be the batch size 6"):
        scatter_outputs({"OUT": out[:5]}, [1, 3, 2])


def test_round_trip_through_a_model():
    reqs = _requests(rows=(2, 1, 4))
    with gather_inputs(reqs) as batch:
        outputs = {"SUM": batch["A"].sum(axis=1, keepdims=True), "ECHO": batch["B"]}
        pieces = scatter_outputs(outputs, batch.counts, copy=True)
    for r, piece in zip(reqs, pieces):
        assert np.allclose(piece["SUM"], r.input("A").array.sum(axis=1, keepdims=True))
        assert np.array_equal(piece["ECHO"], r.input("B").array)
