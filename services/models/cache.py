"""The response cache: Triton's `local` cache, in process.

A model opts in with `response_cache { enable: true }`; the server opts in with
`--cache-config local,size=N` (`[cache] size`). One cache, bounded in bytes, is shared by
every model, as Triton's is. A request's key is a hash of the model name and version
and of every input's name, datatype, shape and bytes (inputs taken in name order, so
their order in the request does not matter). A hit answers from the cache without
running the model; a miss runs it and stores a successful response. Least recently
used entries make room for new ones; an entry larger than the whole cache is not kept.

Like Triton: only successful responses are stored, decoupled models cannot use the
cache (their load fails), and sequence models and ensembles do not use it.
Statistics: `cache_hit` counts hits with the lookup time; `cache_miss` counts misses
with lookup plus insertion time; a hit is also a successful request, but not an
execution.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from collections import OrderedDict
from typing import Any

from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, ResponseSink, Tensor

log = logging.getLogger("naiad.services.models")

# Rough bookkeeping cost of one entry beyond its tensor bytes (key, names, shapes).
_ENTRY_OVERHEAD = 64


class _Entry:
    __slots__ = ("outputs", "parameters", "nbytes")

    def __init__(self, outputs: tuple, parameters: dict, nbytes: int) -> None:
        self.outputs = outputs  # ((name, datatype, shape, bytes), ...)
        self.parameters = parameters
        self.nbytes = nbytes


class ResponseCache:
    """A byte-bounded LRU map from request hashes to stored responses."""

    def __init__(self, size_bytes: int) -> None:
        self.capacity = max(0, int(size_bytes))
        self.used = 0
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(model_name: str, model_version: str, request: InferenceRequest) -> bytes | None:
        """The request's hash, or None when an input's bytes are not at hand."""
        h = hashlib.blake2b(digest_size=16)
        h.update(model_name.encode())
        h.update(b"\0")
        h.update(model_version.encode())
        for t in sorted(request.inputs, key=lambda t: t.name):
            if not t.has_data:
                return None
            h.update(b"\0")
            h.update(t.name.encode())
            h.update(b"\0")
            h.update(t.datatype.encode())
            h.update(struct.pack(f"<{len(t.shape) + 1}q", len(t.shape), *t.shape))
            h.update(t.raw)
        return h.digest()

    def lookup(self, key: bytes) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def insert(self, key: bytes, response: InferenceResponse) -> bool:
        """Store a successful response; False when it cannot be stored (too large, error)."""
        if response.error is not None or key in self._entries:
            return False
        outputs = []
        nbytes = _ENTRY_OVERHEAD
        for t in response.outputs:
            if not t.has_data:
                return False  # e.g. written to shared memory: nothing to keep
            data = bytes(t.raw)
            nbytes += len(data) + len(t.name) + 8 * len(t.shape)
            outputs.append((t.name, t.datatype, tuple(t.shape), data))
        if nbytes > self.capacity:
            return False
        while self.used + nbytes > self.capacity and self._entries:
            _, old = self._entries.popitem(last=False)
            self.used -= old.nbytes
            self.evictions += 1
        self._entries[key] = _Entry(tuple(outputs), dict(response.parameters), nbytes)
        self.used += nbytes
        return True

    @staticmethod
    def response(entry: _Entry, model_name: str, model_version: str, request_id: str) -> InferenceResponse:
        """A fresh response from a stored entry (callers may edit its output list)."""
        tensors = [Tensor(name, datatype, shape, raw=data) for name, datatype, shape, data in entry.outputs]
        return InferenceResponse(model_name, model_version, tensors, id=request_id,
                                 parameters=dict(entry.parameters) or None)


class _FillSink(ResponseSink):
    """Passes the model's response on and stores it when it succeeded."""

    __slots__ = ("inner", "cache", "key", "recorder", "lookup_ns")

    def __init__(self, inner: ResponseSink, cache: ResponseCache, key: bytes, recorder: Any, lookup_ns: int) -> None:
        self.inner = inner
        self.cache = cache
        self.key = key
        self.recorder = recorder
        self.lookup_ns = lookup_ns

    def send(self, response: InferenceResponse) -> None:
        t0 = time.monotonic_ns()
        if response.error is None and response.final:
            self.cache.insert(self.key, response)
        self.recorder.cache(False, self.lookup_ns + time.monotonic_ns() - t0)
        self.inner.send(response)

    def finish(self, error: InferenceError | None = None) -> None:
        self.recorder.cache(False, self.lookup_ns)
        self.inner.finish(error)


class CachingScheduler:
    """Answers from the cache when it can, and otherwise hands the request to the
    model's own scheduler with a sink that fills the cache."""

    def __init__(self, inner: Any, cache: ResponseCache, model_name: str, model_version: str, recorder: Any) -> None:
        self.inner = inner
        self.cache = cache
        self.model_name = model_name
        self.model_version = model_version
        self.recorder = recorder

    def __getattr__(self, name: str) -> Any:  # size, levels, ... of the wrapped scheduler
        return getattr(self.inner, name)

    def start(self) -> None:
        self.inner.start()

    async def drain_and_stop(self, timeout: float | None = None) -> None:
        await self.inner.drain_and_stop(timeout)

    def enqueue(self, request: InferenceRequest, sink: ResponseSink, batch_size: int) -> None:
        t0 = time.monotonic_ns()
        key = self.cache.key(self.model_name, self.model_version, request)
        if key is None:
            self.inner.enqueue(request, sink, batch_size)
            return
        entry = self.cache.lookup(key)
        lookup_ns = time.monotonic_ns() - t0
        if entry is not None:
            self.recorder.cache(True, lookup_ns)
            if request.trace is not None:
                request.trace.stamp("QUEUE_START", t0)
            sink.send(self.cache.response(entry, self.model_name, self.model_version, request.id))
            return
        self.inner.enqueue(request, _FillSink(sink, self.cache, key, self.recorder, lookup_ns), batch_size)


def check_config(config: Any) -> bool:
    """Whether a model asks for the cache; raises for configs Triton refuses."""
    if not config.HasField("response_cache") or not config.response_cache.enable:
        return False
    if config.model_transaction_policy.decoupled:
        raise InferenceError.invalid(
            f"Response Cache does not currently support model {config.name} with 'decoupled' transaction policy.")
    return True
