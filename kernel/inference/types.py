"""Wire-neutral inference types: tensors, requests, responses and response sinks.

These objects are built once by a protocol decoder and travel untouched to a backend:
tensor data stays a view over the bytes the transport received (`raw`) until something
needs an ndarray. Everything here is `__slots__`-only and cheap to construct, because one
of each is made per request on the hot path.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np

from .datatypes import (
    WIRE_ITEMSIZE,
    deserialize_bytes,
    element_count,
    numpy_from_wire,
    serialize_bytes,
    wire_from_numpy,
)
from .errors import InferenceError

Buffer = Union[bytes, bytearray, memoryview]
ParameterValue = Union[bool, int, float, str]


class SharedMemoryRef:
    """A tensor's bytes in a registered shared-memory region (Triton's shm extension)."""

    __slots__ = ("region", "byte_size", "offset")

    def __init__(self, region: str, byte_size: int, offset: int = 0) -> None:
        self.region = region
        self.byte_size = byte_size
        self.offset = offset

    def __repr__(self) -> str:
        return f"SharedMemoryRef({self.region!r}, size={self.byte_size}, offset={self.offset})"


class Tensor:
    """A named tensor: wire datatype, shape, and its data as an ndarray or raw bytes.

    `raw` holds numeric data in row-major little-endian order, or BYTES in Triton's
    length-prefixed framing. Either form converts lazily to the other; neither copies
    when it can avoid it. `shm` is set instead of data for inputs that reference a
    shared-memory region, until the model manager resolves it.
    """

    __slots__ = ("name", "datatype", "shape", "_array", "_raw", "shm")

    def __init__(
        self,
        name: str,
        datatype: str,
        shape: Sequence[int],
        *,
        array: np.ndarray | None = None,
        raw: Buffer | None = None,
        shm: SharedMemoryRef | None = None,
    ) -> None:
        self.name = name
        self.datatype = datatype
        self.shape = shape if isinstance(shape, tuple) else tuple(shape)
        self._array = array
        self._raw = raw
        self.shm = shm

    @classmethod
    def from_numpy(cls, name: str, array: np.ndarray, datatype: str | None = None) -> "Tensor":
        if datatype is None:
            datatype = wire_from_numpy(array.dtype)
        return cls(name, datatype, array.shape, array=array)

    @property
    def has_data(self) -> bool:
        return self._array is not None or self._raw is not None

    @property
    def array(self) -> np.ndarray:
        """The data as an ndarray (BYTES: object array of `bytes`), decoded on first use."""
        if self._array is None:
            raw = self._raw
            if raw is None:
                raise InferenceError.internal(f"tensor '{self.name}' has no data")
            if self.datatype == "BYTES":
                arr = deserialize_bytes(raw, element_count(self.shape))
            else:
                arr = np.frombuffer(raw, dtype=numpy_from_wire(self.datatype))
            self._array = arr.reshape(self.shape)
        return self._array

    @property
    def raw(self) -> Buffer:
        """The data in wire layout (bytes-like), encoded on first use."""
        if self._raw is None:
            arr = self._array
            if arr is None:
                raise InferenceError.internal(f"tensor '{self.name}' has no data")
            if self.datatype == "BYTES":
                self._raw = serialize_bytes(arr)
            else:
                if arr.dtype.byteorder == ">":
                    arr = arr.astype(arr.dtype.newbyteorder("<"))
                if not arr.flags.c_contiguous:
                    arr = np.ascontiguousarray(arr)
                # memoryview cannot cast a view with a zero in its shape.
                self._raw = memoryview(arr).cast("B") if arr.size else b""
        return self._raw

    @property
    def byte_size(self) -> int:
        """Bytes of the wire layout (for BYTES this needs the framed form)."""
        itemsize = WIRE_ITEMSIZE.get(self.datatype)
        if itemsize is not None:
            return itemsize * element_count(self.shape)
        return len(self.raw) if self.has_data else (self.shm.byte_size if self.shm else 0)

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, {self.datatype}, {list(self.shape)})"


class RequestedOutput:
    """An output the client asked for, with how it wants it returned."""

    __slots__ = ("name", "binary", "classification", "shm")

    def __init__(
        self,
        name: str,
        binary: bool | None = None,
        classification: int = 0,
        shm: SharedMemoryRef | None = None,
    ) -> None:
        self.name = name
        self.binary = binary  # None: protocol default
        self.classification = classification  # top-K as Triton's classification extension
        self.shm = shm


class CancelToken:
    """Set when the client cancels or disconnects; backends poll it (`is_cancelled`)."""

    __slots__ = ("cancelled", "_callbacks")

    def __init__(self) -> None:
        self.cancelled = False
        self._callbacks: list[Callable[[], None]] | None = None

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        callbacks, self._callbacks = self._callbacks, None
        for cb in callbacks or ():
            cb()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        if self.cancelled:
            callback()
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)


class InferenceRequest:
    """One inference request, as every protocol decodes it.

    `model_version` is "" for the policy's latest. `sequence_id` is 0 when the request
    is not part of a sequence, else an int or a str (Triton's string correlation ids).
    `timeout_us` 0 means no per-request timeout. `arrival_ns` is set by the decoder
    (monotonic clock) and is the start of the request's latency.
    """

    __slots__ = (
        "model_name",
        "model_version",
        "id",
        "inputs",
        "outputs",
        "parameters",
        "priority",
        "timeout_us",
        "sequence_id",
        "sequence_start",
        "sequence_end",
        "flags",
        "cancel",
        "trace",
        "arrival_ns",
        "protocol",
        "parent",
    )

    def __init__(
        self,
        model_name: str,
        inputs: list[Tensor],
        *,
        model_version: str = "",
        id: str = "",
        outputs: list[RequestedOutput] | None = None,
        parameters: dict[str, ParameterValue] | None = None,
        priority: int = 0,
        timeout_us: int = 0,
        sequence_id: int | str = 0,
        sequence_start: bool = False,
        sequence_end: bool = False,
        flags: int = 0,
        cancel: CancelToken | None = None,
        trace: Any = None,
        arrival_ns: int = 0,
        protocol: str = "",
        parent: "InferenceRequest | None" = None,
    ) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self.id = id
        self.inputs = inputs
        self.outputs = outputs
        self.parameters = parameters if parameters is not None else {}
        self.priority = priority
        self.timeout_us = timeout_us
        self.sequence_id = sequence_id
        self.sequence_start = sequence_start
        self.sequence_end = sequence_end
        self.flags = flags
        self.cancel = cancel if cancel is not None else CancelToken()
        self.trace = trace
        self.arrival_ns = arrival_ns or time.monotonic_ns()
        self.protocol = protocol  # "http", "grpc", "bls", ... for traces and stats
        self.parent = parent  # the request that spawned this one (ensemble step, BLS)

    def input(self, name: str) -> Tensor | None:
        for t in self.inputs:
            if t.name == name:
                return t
        return None

    def __repr__(self) -> str:
        return f"InferenceRequest({self.model_name!r}, v={self.model_version!r}, id={self.id!r}, inputs={self.inputs})"


class InferenceResponse:
    """One response. A request gets exactly one unless its model is decoupled.

    `final` marks the last response of a request (Triton's COMPLETE_FINAL flag). A
    decoupled model may end with an empty final response (no outputs).
    """

    __slots__ = ("model_name", "model_version", "id", "outputs", "parameters", "error", "final")

    def __init__(
        self,
        model_name: str,
        model_version: str,
        outputs: list[Tensor] | None = None,
        *,
        id: str = "",
        parameters: dict[str, ParameterValue] | None = None,
        error: InferenceError | None = None,
        final: bool = True,
    ) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self.id = id
        self.outputs = outputs if outputs is not None else []
        self.parameters = parameters if parameters is not None else {}
        self.error = error
        self.final = final

    def output(self, name: str) -> Tensor | None:
        for t in self.outputs:
            if t.name == name:
                return t
        return None

    def __repr__(self) -> str:
        state = f"error={self.error!r}" if self.error else f"outputs={self.outputs}"
        return f"InferenceResponse({self.model_name!r}, v={self.model_version!r}, {state}, final={self.final})"


# ------------------------------------------------------------------ sinks --

class ResponseSink:
    """Where a request's responses go. Called on the event loop thread only.

    `send(response)` delivers one response; the response's `final` flag says whether
    more follow. `finish(error)` ends the request without a response body (a decoupled
    model that ends with only the FINAL flag, or a failure before any response).
    """

    __slots__ = ()

    def send(self, response: InferenceResponse) -> None:
        raise NotImplementedError

    def finish(self, error: InferenceError | None = None) -> None:
        raise NotImplementedError

    def reschedule(self) -> bool:
        """The backend released the request with Triton's RELEASE_RESCHEDULE flag
        (`request.set_release_flags(TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)`): run it
        again in a later batch. Call it before `ModelInstance.execute` returns, instead
        of sending that execution's response (a decoupled model may have sent responses
        already; the request stays open). Returns False when the request's scheduler
        cannot reschedule — only `sequence_batching { iterative_sequence: true }` can —
        and the backend then fails the request, with Triton's words: "Request is
        released with TRITONSERVER_REQUEST_RELEASE_RESCHEDULE, ..."."""
        return False


class FutureSink(ResponseSink):
    """Resolves a future with the one response of a non-decoupled request."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future) -> None:
        self.future = future

    def send(self, response: InferenceResponse) -> None:
        if not self.future.done():
            self.future.set_result(response)

    def finish(self, error: InferenceError | None = None) -> None:
        if not self.future.done():
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_exception(
                    InferenceError.internal("model finished the request without a response")
                )


class QueueSink(ResponseSink):
    """Feeds a stream of responses to an async iterator; `None` marks the end. Anything
    sent after the end is ignored."""

    __slots__ = ("queue", "done")

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.done = False

    def send(self, response: InferenceResponse) -> None:
        if self.done:
            return
        self.queue.put_nowait(response)
        if response.final:
            self.done = True
            self.queue.put_nowait(None)

    def finish(self, error: InferenceError | None = None) -> None:
        if self.done:
            return
        self.done = True
        if error is not None:
            self.queue.put_nowait(error)
        self.queue.put_nowait(None)

    def __aiter__(self) -> "QueueSink":
        return self

    async def __anext__(self) -> InferenceResponse:
        item = await self.queue.get()
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, InferenceError):
            raise item
        return item


def outputs_by_name(tensors: Iterable[Tensor]) -> dict[str, Tensor]:
    return {t.name: t for t in tensors}
