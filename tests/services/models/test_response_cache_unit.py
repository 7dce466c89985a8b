"""The response cache's pure logic: keys, LRU eviction within the byte budget, what is
stored and what a hit hands back."""

from __future__ import annotations

import numpy as np
import pytest

from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.model_config import parse_text
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, Tensor
from naiad.services.models.cache import ResponseCache, check_config


def _request(*tensors: Tensor) -> InferenceRequest:
    return InferenceRequest("m", list(tensors))


def _t(name: str, values, datatype: str | None = None) -> Tensor:
    return Tensor.from_numpy(name, np.asarray(values), datatype)


def test_key_covers_model_version_names_datatypes_shapes_and_bytes():
    base = ResponseCache.key("m", "1", _request(_t("A", np.arange(4, dtype=np.float32))))
    assert base == ResponseCache.key("m", "1", _request(_t("A", np.arange(4, dtype=np.float32))))
    different = [
        ResponseCache.key("n", "1", _request(_t("A", np.arange(4, dtype=np.float32)))),
        ResponseCache.key("m", "2", _request(_t("A", np.arange(4, dtype=np.float32)))),
        ResponseCache.key("m", "1", _request(_t("B", np.arange(4, dtype=np.float32)))),
        ResponseCache.key("m", "1", _request(_t("A", np.arange(4, dtype=np.int32).view(np.float32)))),
        ResponseCache.key("m", "1", _request(_t("A", np.arange(4, dtype=np.float32).view(np.int32)))),
        ResponseCache.key("m", "1", _request(_t("A", np.arange(4, dtype=np.float32).reshape(2, 2)))),
        ResponseCache.key("m", "1", _request(_t("A", np.arange(1, 5, dtype=np.float32)))),
    ]
    assert base not in different and len(set(different)) == len(different)


def test_key_ignores_input_order_and_takes_bytes_tensors():
    a, b = _t("A", [1, 2]), _t("B", np.array([b"x", b"yz"], dtype=object), "BYTES")
    assert ResponseCache.key("m", "1", _request(a, b)) == ResponseCache.key("m", "1", _request(b, a))
    c = _t("B", np.array([b"xy", b"z"], dtype=object), "BYTES")
    assert ResponseCache.key("m", "1", _request(a, b)) != ResponseCache.key("m", "1", _request(a, c))


def _response(nbytes: int, fill: int = 1) -> InferenceResponse:
    return InferenceResponse("m", "1", [Tensor.from_numpy("OUT", np.full(nbytes, fill, np.uint8))])


def test_hit_returns_a_fresh_copy_of_the_stored_outputs():
    cache = ResponseCache(10_000)
    assert cache.insert(b"k", _response(100, fill=7))
    entry = cache.lookup(b"k")
    first = cache.response(entry, "m", "1", "id-1")
    first.outputs.clear()  # the service filters outputs in place: the entry must not change
    second = cache.response(cache.lookup(b"k"), "m", "1", "id-2")
    assert second.id == "id-2" and second.outputs[0].name == "OUT"
    assert np.array_equal(second.outputs[0].array, np.full(100, 7, np.uint8))
    assert (cache.hits, cache.misses) == (2, 0)
    assert cache.lookup(b"other") is None and cache.misses == 1


def test_least_recently_used_entries_make_room_and_oversized_ones_are_not_kept():
    cache = ResponseCache(1000)
    for key in (b"a", b"b", b"c"):
        assert cache.insert(key, _response(250))
    cache.lookup(b"a")  # a is now the most recently used
    assert cache.insert(b"d", _response(250))
    assert cache.lookup(b"b") is None  # b was the least recently used
    assert cache.lookup(b"a") is not None and cache.lookup(b"c") is not None
    assert cache.used <= cache.capacity
    assert not cache.insert(b"huge", _response(5000))
    assert cache.lookup(b"huge") is None and cache.evictions == 1


def test_errors_are_not_stored():
    cache = ResponseCache(1000)
    assert not cache.insert(b"k", InferenceResponse("m", "1", error=InferenceError.internal("no")))
    assert len(cache) == 0


def test_config_check_refuses_decoupled_models():
    assert not check_config(parse_text('name: "m" backend: "python"'))
    assert check_config(parse_text('name: "m" backend: "python" response_cache { enable: true }'))
    with pytest.raises(InferenceError, match="does not currently support model m with 'decoupled'"):
        check_config(parse_text('name: "m" backend: "python" response_cache { enable: true } '
                                'model_transaction_policy { decoupled: true }'))
