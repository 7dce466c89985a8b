"""Requests and responses: what `execute` receives and returns, response senders of decoupled models,
and BLS (`InferenceRequest.exec`, `async_exec`, `ResponseIterator`)."""

from __future__ import annotations

import json
import threading
from typing import Any

from . import runtime as _rt
from .errors import TritonError, TritonModelException, _typed
from .tensor import PreferredMemory, Tensor

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2


class InferenceTrace:
    __slots__ = ("_context",)

    def __init__(self, context: str | None = None) -> None:
        self._context = context

    def get_context(self) -> str | None:
        return self._context or None


class _RequestState:
    """What a request and its response sender share with the stub (cancel, closing)."""

    __slots__ = ("key", "requested", "cancelled", "closed", "sender")

    def __init__(self, key: tuple[int, int], requested: tuple | None) -> None:
        self.key = key
        self.requested = requested  # output names to keep (None: all)
        self.cancelled = False
        self.closed = False
        self.sender: InferenceResponseSender | None = None


def _ask_cancelled(state: _RequestState | None) -> bool:
    """Whether the server has cancelled a request. Until it has, each query asks the parent, as
    Triton's stub does: the answer is the server's state at that moment, not the last push."""
    if state is None:
        return False
    if not state.cancelled and _rt.current is not None:
        state.cancelled = bool(_rt.current.control("is_cancelled", state.key))
    return state.cancelled


class InferenceRequest:
    """A request to this model (from `execute`'s list) or, built by the model, a BLS request."""

    __slots__ = (
        "_id",
        "_corr",
        "_inputs",
        "_requested",
        "_model_name",
        "_model_version",
        "_flags",
        "_timeout",
        "_params",
        "_params_json",
        "_preferred_memory",
        "_trace",
        "_state",
        "_release_flags",
    )

    def __init__(
        self,
        request_id: str = "",
        correlation_id: int | str = 0,
        inputs: list[Tensor] | None = None,
        requested_output_names: list[str] | None = None,
        model_name: str | None = None,
        model_version: int = -1,
        flags: int = 0,
        timeout: int = 0,
        preferred_memory: PreferredMemory | None = None,
        trace: InferenceTrace | None = None,
        parameters: dict | None = None,
    ) -> None:
        _typed(request_id, str, "InferenceRequest(): request_id")
        _typed(correlation_id, object, "InferenceRequest(): correlation_id")
        _typed(inputs, (list, tuple), "InferenceRequest(): inputs")
        for name in _typed(requested_output_names, (list, tuple), "InferenceRequest(): requested_output_names"):
            _typed(name, str, "InferenceRequest(): requested_output_names")
        _typed(model_name, str, "InferenceRequest(): model_name")
        for value, what in ((model_version, "model_version"), (flags, "flags"), (timeout, "timeout")):
            _typed(value, int, f"InferenceRequest(): {what}")
        if isinstance(correlation_id, bool) or not isinstance(correlation_id, (int, str)):
            raise TritonModelException("Correlation ID must be integer or string")
        params = {} if parameters is None else parameters
        if isinstance(params, str):
            params = json.loads(params) if params else {}
        for key, value in params.items():
            if not isinstance(key, str):
                raise TritonModelException(f"Expect parameters keys to have type str, found type {type(key)}")
            if not isinstance(value, (bool, int, str)):
                raise TritonModelException(
                    f"Expect parameters values to have type bool/int/str, found type {type(value)}"
                )
        for t in inputs:
            if not isinstance(t, Tensor):
                raise TritonModelException(
                    f"Input tensor for request with id '{request_id}' and model name '{model_name}' should not be empty."
                )
        for name in requested_output_names:
            if not name:
                raise TritonModelException(
                    f"Requested output name for request with id '{request_id}' and model name '{model_name}' should not be empty."
                )
        self._id = str(request_id)
        self._corr = correlation_id
        self._inputs = list(inputs)
        self._requested = tuple(requested_output_names)
        self._model_name = str(model_name)
        self._model_version = int(model_version)
        self._flags = int(flags)
        self._timeout = int(timeout)
        self._params = dict(params)
        self._params_json = None
        self._preferred_memory = preferred_memory or PreferredMemory()
        self._trace = trace or InferenceTrace()
        self._state = None
        self._release_flags = TRITONSERVER_REQUEST_RELEASE_ALL

    @classmethod
    def _incoming(
        cls,
        request_id: str,
        correlation_id: int | str,
        flags: int,
        timeout: int,
        parameters: dict,
        requested: tuple,
        inputs: list[Tensor],
        model_name: str,
        state: _RequestState,
    ) -> "InferenceRequest":
        r = cls.__new__(cls)
        r._id = request_id
        r._corr = correlation_id
        r._inputs = inputs
        r._requested = requested
        r._model_name = model_name
        r._model_version = -1
        r._flags = flags
        r._timeout = timeout
        r._params = parameters
        r._params_json = None
        r._preferred_memory = None
        r._trace = None
        r._state = state
        r._release_flags = TRITONSERVER_REQUEST_RELEASE_ALL
        return r

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def request_id(self) -> str:
        return self._id

    def correlation_id(self) -> int | str:
        return self._corr

    def flags(self) -> int:
        return self._flags

    def set_flags(self, flags: int) -> None:
        self._flags = int(flags)

    def timeout(self) -> int:
        return self._timeout

    def parameters(self) -> str:
        if self._params_json is None:
            self._params_json = json.dumps(self._params)
        return self._params_json

    def trace(self) -> InferenceTrace:
        if self._trace is None:
            self._trace = InferenceTrace()
        return self._trace

    def requested_output_names(self) -> list[str]:
        return list(self._requested)

    def get_response_sender(self) -> "InferenceResponseSender":
        runtime = _rt.require("get_response_sender")
        if not runtime.decoupled:
            raise TritonModelException(
                "'get_response_sender' function must be called only when the model is "
                "using the decoupled transaction policy."
            )
        state = self._state
        if state is None:
            raise TritonModelException("a response sender exists only for requests given to execute")
        if state.sender is None:
            state.sender = InferenceResponseSender(state)
        return state.sender

    def is_cancelled(self) -> bool:
        return _ask_cancelled(self._state)

    def set_release_flags(self, flags: int) -> None:
        self._release_flags = int(flags)

    # -- BLS ------------------------------------------------------------------------------

    def exec(self, decoupled: bool = False) -> "InferenceResponse | ResponseIterator":
        if decoupled is None:
            raise TypeError("exec(): 'decoupled' must not be None")
        runtime = _rt.require("BLS")
        call = runtime.bls(self, bool(decoupled))
        if decoupled:
            return ResponseIterator(call)
        return runtime.wait_call(call)

    def async_exec(self, decoupled: bool = False) -> Any:
        """An awaitable (asyncio future) of the response, or of a ResponseIterator."""
        if decoupled is None:
            raise TypeError("async_exec(): 'decoupled' must not be None")
        import asyncio

        runtime = _rt.require("BLS")
        loop = asyncio.get_running_loop()
        call = runtime.bls(self, bool(decoupled), loop=loop)
        if not decoupled:
            return call.future
        # Resolved with the iterator once the first response has arrived (`call.future`).
        iterator = ResponseIterator(call)
        fut = loop.create_future()
        call.future.add_done_callback(lambda _: fut.done() or fut.set_result(iterator))
        return fut

    def __repr__(self) -> str:
        return f"InferenceRequest(id={self._id!r}, inputs={[t.name() for t in self._inputs]})"


class InferenceResponse:
    """The model's answer to one request: output tensors, or an error."""

    __slots__ = ("_outputs", "_error", "_params")

    def __init__(
        self,
        output_tensors: list[Tensor] | tuple = (),
        error: TritonError | None = None,
        parameters: dict | str | None = None,
    ) -> None:
        _typed(output_tensors, (list, tuple), "InferenceResponse(): output_tensors")
        for t in output_tensors:
            if not isinstance(t, Tensor):
                raise TritonModelException(f"Expected a pb_utils.Tensor in output_tensors, found type '{type(t)}'.")
        if error is not None and not isinstance(error, TritonError):
            if isinstance(error, str):
                error = TritonError(error)
            else:
                raise TritonModelException(f"'error' must be a TritonError, found type '{type(error)}'.")
        if isinstance(parameters, str):
            parameters = json.loads(parameters) if parameters else {}
        self._outputs = list(output_tensors)
        self._error = error
        self._params = dict(parameters) if parameters else {}

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return json.dumps(self._params)

    def __repr__(self) -> str:
        if self._error is not None:
            return f"InferenceResponse(error={self._error!r})"
        return f"InferenceResponse({[t.name() for t in self._outputs]})"


class InferenceResponseSender:
    """Sends a decoupled request's responses, in order, from any thread."""

    __slots__ = ("_state", "_lock")

    def __init__(self, state: _RequestState) -> None:
        self._state = state
        self._lock = threading.Lock()

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        with self._lock:
            state = self._state
            if state.closed:
                raise TritonModelException("Unable to send response. Response sender has been closed.")
            if flags != TRITONSERVER_RESPONSE_COMPLETE_FINAL and flags != 0:
                raise TritonModelException("Unable to send response. Unsupported flag provided.")
            if flags == 0 and response is None:
                raise TritonModelException(
                    "Inference Response object must be provided when the response flags is set to zero."
                )
            if response is not None and not isinstance(response, InferenceResponse):
                raise TritonModelException(f"Expected an InferenceResponse, found type '{type(response)}'.")
            final = flags == TRITONSERVER_RESPONSE_COMPLETE_FINAL
            if final:
                state.closed = True
            _rt.require("InferenceResponseSender.send").send_response(state, response, final)

    def is_cancelled(self) -> bool:
        return _ask_cancelled(self._state)


class ResponseIterator:
    """The responses of a decoupled BLS call, in order; the last carries the FINAL flag
    (it may have no outputs). Iterate with `for` (blocks) or `async for`."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._seen: list[InferenceResponse] = []
        self._idx = 0
        self._finished = False

    def __iter__(self) -> "ResponseIterator":
        if self._finished and self._idx >= len(self._seen):
            self._idx = 0
        return self

    def __next__(self) -> InferenceResponse:
        if self._finished:
            if self._idx < len(self._seen):
                self._idx += 1
                return self._seen[self._idx - 1]
            raise StopIteration
        response, final = _rt.current.next_call_item(self._call)
        return self._take(response, final)

    def __aiter__(self) -> "ResponseIterator":
        return self

    async def __anext__(self) -> InferenceResponse:
        if self._finished:
            if self._idx < len(self._seen):
                self._idx += 1
                return self._seen[self._idx - 1]
            raise StopAsyncIteration
        response, final = await _rt.current.next_call_item_async(self._call)
        return self._take(response, final)

    def _take(self, response: InferenceResponse, final: bool) -> InferenceResponse:
        self._seen.append(response)
        self._idx = len(self._seen)
        if final:
            self._finished = True
        return response


def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Tensor | None:
    for t in inference_request.inputs():
        if t.name() == name:
            return t
    return None


def get_output_tensor_by_name(inference_response: InferenceResponse, name: str) -> Tensor | None:
    for t in inference_response.output_tensors():
        if t.name() == name:
            return t
    return None
