"""`triton_python_backend_utils` for naiad: the one module a user's model.py imports.

The stub installs this module as `sys.modules["triton_python_backend_utils"]` (and as
`c_python_backend_utils`) before it imports the model, so `import
triton_python_backend_utils as pb_utils` works unchanged. The API follows Triton 24.04's
(python_backend `src/resources/triton_python_backend_utils.py` plus the classes its stub
adds from C++), re-implemented in Python.

Everything that needs the parent (BLS, model control, logging, cancellation, response
senders, custom metrics) goes through the stub runtime bound with `_bind`; outside a stub
those calls raise `TritonModelException`. Custom metrics (`MetricFamily`) live in the
server, which shows them on /metrics; the stub holds handles.
"""

from __future__ import annotations

import enum
import json
import struct
import sys
import threading
import weakref
from typing import Any

import numpy as np

# ------------------------------------------------------------------------ constants --

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2

TRITON_STRING_TO_NUMPY = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}

# Triton DataType enum values (model_config.proto) <-> numpy.
_CODE_TO_NUMPY: dict[int, Any] = {
    1: np.bool_,
    2: np.uint8,
    3: np.uint16,
    4: np.uint32,
    5: np.uint64,
    6: np.int8,
    7: np.int16,
    8: np.int32,
    9: np.int64,
    10: np.float16,
    11: np.float32,
    12: np.float64,
    13: np.object_,
}
_NUMPY_TO_CODE: dict[np.dtype, int] = {
    np.dtype(t): c for c, t in _CODE_TO_NUMPY.items() if t is not np.object_
}
TYPE_BYTES = 13
TYPE_BF16 = 14

# Wire names (KServe v2) <-> DataType enum values, shared with the stub.
WIRE_TO_CODE: dict[str, int] = {
    "BOOL": 1, "UINT8": 2, "UINT16": 3, "UINT32": 4, "UINT64": 5, "INT8": 6, "INT16": 7,
    "INT32": 8, "INT64": 9, "FP16": 10, "FP32": 11, "FP64": 12, "BYTES": 13, "BF16": 14,
}
CODE_TO_WIRE: dict[int, str] = {v: k for k, v in WIRE_TO_CODE.items()}

_runtime: Any = None  # the stub's runtime, bound by `_bind`


def _bind(runtime: Any) -> None:
    global _runtime
    _runtime = runtime


def _require_runtime(what: str) -> Any:
    if _runtime is None:
        raise TritonModelException(f"{what} is only available inside a Python backend stub")
    return _runtime


def _typed(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    """An argument Triton's C++ binding (pybind11) would refuse — None, or another type —
    is a TypeError, as there; checks on the value itself are TritonModelExceptions."""
    if value is None or not isinstance(value, kind):
        raise TypeError(f"{where}: incompatible argument type {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- errors --


class _ErrorCode(enum.IntEnum):
    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7


class TritonError:
    """An error a model reports in a response (`InferenceResponse(error=...)`)."""

    UNKNOWN = _ErrorCode.UNKNOWN
    INTERNAL = _ErrorCode.INTERNAL
    NOT_FOUND = _ErrorCode.NOT_FOUND
    INVALID_ARG = _ErrorCode.INVALID_ARG
    UNAVAILABLE = _ErrorCode.UNAVAILABLE
    UNSUPPORTED = _ErrorCode.UNSUPPORTED
    ALREADY_EXISTS = _ErrorCode.ALREADY_EXISTS
    CANCELLED = _ErrorCode.CANCELLED

    __slots__ = ("_message", "_code")

    def __init__(self, message: str, code: int = _ErrorCode.INTERNAL) -> None:
        if message is None:
            raise TypeError("TritonError(): 'message' must not be None")
        self._message = str(message)
        self._code = _ErrorCode(int(code))

    def code(self) -> _ErrorCode:
        return self._code

    def message(self) -> str:
        return self._message

    def __str__(self) -> str:
        return self._message

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, {self._code.name})"


class TritonModelException(Exception):
    """Raised by pb_utils calls that fail (BLS, tensors, senders)."""

    def __init__(self, msg: str = "") -> None:
        super().__init__(msg)
        self._msg = msg

    def message(self) -> str:
        return self._msg


# ---------------------------------------------------------------- memory and trace --


class MemoryType(enum.IntEnum):
    TRITONSERVER_MEMORY_GPU = 0
    TRITONSERVER_MEMORY_CPU = 1


TRITONSERVER_MEMORY_GPU = MemoryType.TRITONSERVER_MEMORY_GPU
TRITONSERVER_MEMORY_CPU = MemoryType.TRITONSERVER_MEMORY_CPU


class PreferredMemory:
    """Where a BLS call would like its outputs (naiad delivers them on the CPU)."""

    __slots__ = ("preferred_memory_type", "preferred_device_id")

    def __init__(self, preferred_memory_type: int = MemoryType.TRITONSERVER_MEMORY_CPU, preferred_device_id: int = 0) -> None:
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class InferenceTrace:
    __slots__ = ("_context",)

    def __init__(self, context: str | None = None) -> None:
        self._context = context

    def get_context(self) -> str | None:
        return self._context or None


# --------------------------------------------------------------------------- tensor --

_DL_CPU = 1
_DL_CUDA_HOST = 3


def _code_of(dtype: np.dtype) -> int:
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return TYPE_BYTES
    code = _NUMPY_TO_CODE.get(dtype)
    if code is None and dtype.byteorder == ">":
        code = _NUMPY_TO_CODE.get(dtype.newbyteorder("="))
    if code is None:
        raise TritonModelException(f"Unsupported numpy dtype for a Triton tensor: {dtype}")
    return code


class Tensor:
    """A named tensor. Inputs are numpy views over shared memory (no copy)."""

    __slots__ = ("_name", "_array", "_dtype", "_foreign")

    def __init__(self, name: str, numpy_array: Any, triton_dtype: int | None = None) -> None:
        _typed(name, str, "Tensor(): name")
        if numpy_array is None:
            raise TypeError("Tensor(): numpy_array must not be None")
        if not name:
            raise TritonModelException("Tensor name cannot be an empty string.")
        if type(numpy_array) is not np.ndarray and not isinstance(numpy_array, np.ndarray):
            numpy_array = np.asarray(numpy_array)
        if triton_dtype is not None:
            code = int(triton_dtype)
        else:
            code = _NUMPY_TO_CODE.get(numpy_array.dtype) or _code_of(numpy_array.dtype)
        self._name = name
        self._array = numpy_array
        self._dtype = code
        self._foreign = None  # a non-CPU DLPack producer (torch/cupy tensor on a GPU)

    @classmethod
    def _wrap(cls, name: str, array: np.ndarray, code: int) -> "Tensor":
        t = cls.__new__(cls)
        t._name = name
        t._array = array
        t._dtype = code
        t._foreign = None
        return t

    def name(self) -> str:
        return self._name

    def triton_dtype(self) -> int:
        return self._dtype

    def shape(self) -> list[int]:
        src = self._array if self._array is not None else self._foreign
        return [int(d) for d in src.shape]

    def is_cpu(self) -> bool:
        return self._foreign is None

    def as_numpy(self) -> np.ndarray:
        if self._array is None:
            raise TritonModelException("Tensor is stored in GPU and cannot be converted to NumPy.")
        return self._array

    # -- DLPack -------------------------------------------------------------------------

    def to_dlpack(self) -> Any:
        if self._dtype == TYPE_BYTES:
            raise TritonModelException("DLPack does not have support for string tensors.")
        if self._foreign is not None:
            return self._foreign.__dlpack__()
        return self._array.__dlpack__()

    def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any:
        if self._dtype == TYPE_BYTES:
            raise TritonModelException("DLPack does not have support for string tensors.")
        if self._foreign is not None:
            return self._foreign.__dlpack__(stream=stream, **kwargs) if stream is not None else self._foreign.__dlpack__(**kwargs)
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        if self._foreign is not None:
            return tuple(self._foreign.__dlpack_device__())
        return (_DL_CPU, 0)

    @staticmethod
    def from_dlpack(name: str, dlpack_tensor: Any) -> "Tensor":
        if not isinstance(name, str) or not name:
            raise TritonModelException("Tensor name cannot be an empty string.")
        obj = dlpack_tensor
        if isinstance(obj, Tensor) and obj._foreign is None:
            return Tensor._wrap(name, obj._array, obj._dtype)  # keeps BF16 (numpy has none)
        if type(obj).__name__ == "PyCapsule":
            obj = _Capsule(obj)
        elif not (hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__")):
            raise TritonModelException(
                "Provided tensor is not supported. Tensor must be a DLPack capsule "
                "or have `__dlpack__` and `__dlpack_device__` attributes"
            )
        device = tuple(obj.__dlpack_device__())[0]
        if device in (_DL_CPU, _DL_CUDA_HOST):
            try:
                array = np.from_dlpack(obj)
                code = _code_of(array.dtype)
            except (TypeError, BufferError, RuntimeError, ValueError) as exc:
                array, code = _bf16_from(obj, exc)
            if not array.flags.c_contiguous:
                raise TritonModelException(
                    "DLPack tensor is not contiguous. Only contiguous DLPack tensors that "
                    "are stored in C-Order are supported."
                )
            return Tensor._wrap(name, array, code)
        # A device tensor: keep the producer; it is copied to the host when sent.
        t = Tensor.__new__(Tensor)
        t._name = name
        t._array = None
        t._foreign = dlpack_tensor if not isinstance(obj, _Capsule) else _foreign_from_capsule(obj)
        t._dtype = _foreign_code(t._foreign)
        return t

    def _host_array(self) -> np.ndarray:
        """The data on the host (copies a device tensor across)."""
        if self._array is not None:
            return self._array
        f = self._foreign
        for attempt in (
            lambda: np.from_dlpack(f, device="cpu", copy=True),
            lambda: f.cpu().numpy() if self._dtype != TYPE_BF16 else f.cpu().view(_torch_uint16(f)).numpy(),
            lambda: f.get(),
        ):
            try:
                out = attempt()
                if self._dtype == TYPE_BF16:
                    out = out.view(np.uint16)
                return out
            except Exception:
                continue
        raise TritonModelException(f"cannot copy tensor '{self._name}' from its device to the host")

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, dtype={CODE_TO_WIRE.get(self._dtype, self._dtype)}, shape={self.shape()})"


class _Capsule:
    """Gives a bare DLPack capsule the `__dlpack__` protocol numpy expects."""

    __slots__ = ("capsule",)

    def __init__(self, capsule: Any) -> None:
        self.capsule = capsule

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        return self.capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return _capsule_device(self.capsule)


def _capsule_device(capsule: Any) -> tuple[int, int]:
    """Read DLManagedTensor.dl_tensor.device from a `dltensor` capsule."""
    import ctypes

    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    ptr = get(capsule, b"dltensor")
    # struct DLTensor { void* data; DLDevice device {int32 type; int32 id}; ... }
    dev = (ctypes.c_int32 * 2).from_address(ptr + ctypes.sizeof(ctypes.c_void_p))
    return (int(dev[0]), int(dev[1]))


def _foreign_from_capsule(cap: _Capsule) -> Any:
    for modname, fn in (("torch.utils.dlpack", "from_dlpack"), ("cupy", "from_dlpack")):
        try:
            mod = __import__(modname, fromlist=[fn])
            return getattr(mod, fn)(cap.capsule)
        except Exception:
            continue
    raise TritonModelException("DLPack capsule passed pointer to memory allocated on GPU device, when GPU is not available")


def _foreign_code(obj: Any) -> int:
    text = str(getattr(obj, "dtype", ""))
    if "bfloat16" in text:
        return TYPE_BF16
    name = text.replace("torch.", "")
    aliases = {"bool": "bool", "float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32"}
    try:
        return _code_of(np.dtype(aliases.get(name, name)))
    except Exception as exc:
        raise TritonModelException(f"unsupported DLPack dtype {text}") from exc


def _torch_uint16(t: Any) -> Any:
    import torch

    return getattr(torch, "uint16", torch.int16)


def _bf16_from(obj: Any, exc: Exception) -> tuple[np.ndarray, int]:
    """numpy has no bfloat16: carry a bf16 producer's raw 16-bit patterns as uint16."""
    if "bfloat16" in str(getattr(obj, "dtype", "")) and hasattr(obj, "view"):
        return np.from_dlpack(obj.view(_torch_uint16(obj))).view(np.uint16), TYPE_BF16
    raise TritonModelException(f"cannot read DLPack tensor: {exc}") from exc


# ------------------------------------------------------------------ requests, responses --


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
    if not state.cancelled and _runtime is not None:
        state.cancelled = bool(_runtime.control("is_cancelled", state.key))
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
        runtime = _require_runtime("get_response_sender")
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
        runtime = _require_runtime("BLS")
        call = runtime.bls(self, bool(decoupled))
        if decoupled:
            return ResponseIterator(call)
        return runtime.wait_call(call)

    def async_exec(self, decoupled: bool = False) -> Any:
        """An awaitable (asyncio future) of the response, or of a ResponseIterator."""
        if decoupled is None:
            raise TypeError("async_exec(): 'decoupled' must not be None")
        import asyncio

        runtime = _require_runtime("BLS")
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
            _require_runtime("InferenceResponseSender.send").send_response(state, response, final)

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
        response, final = _runtime.next_call_item(self._call)
        return self._take(response, final)

    def __aiter__(self) -> "ResponseIterator":
        return self

    async def __anext__(self) -> InferenceResponse:
        if self._finished:
            if self._idx < len(self._seen):
                self._idx += 1
                return self._seen[self._idx - 1]
            raise StopAsyncIteration
        response, final = await _runtime.next_call_item_async(self._call)
        return self._take(response, final)

    def _take(self, response: InferenceResponse, final: bool) -> InferenceResponse:
        self._seen.append(response)
        self._idx = len(self._seen)
        if final:
            self._finished = True
        return response


# --------------------------------------------------------------------------- logging --


class Logger:
    """Log lines go to the server's log (logger `naiad.backends.python`)."""

    class LogLevel(enum.IntEnum):
        INFO = 0
        WARNING = 1
        ERROR = 2
        VERBOSE = 3

    INFO = LogLevel.INFO
    WARNING = LogLevel.WARNING
    ERROR = LogLevel.ERROR
    VERBOSE = LogLevel.VERBOSE

    @staticmethod
    def log(message: str, level: LogLevel = LogLevel.INFO) -> None:
        _log(message, _typed(level, Logger.LogLevel, "Logger.log(): level"), 2)

    @staticmethod
    def log_info(message: str) -> None:
        _log(message, Logger.LogLevel.INFO, 2)

    @staticmethod
    def log_warn(message: str) -> None:
        _log(message, Logger.LogLevel.WARNING, 2)

    @staticmethod
    def log_error(message: str) -> None:
        _log(message, Logger.LogLevel.ERROR, 2)

    @staticmethod
    def log_verbose(message: str) -> None:
        _log(message, Logger.LogLevel.VERBOSE, 2)


def _log(message: str, level: int, depth: int) -> None:
    _typed(message, str, "Logger: message")
    try:
        frame = sys._getframe(depth)
        filename, lineno = frame.f_code.co_filename, frame.f_lineno
    except ValueError:
        filename, lineno = "", 0
    if _runtime is None:
        print(f"{'IWEV'[int(level)]} {filename}:{lineno}] {message}", file=sys.stderr)
        return
    _runtime.log(int(level), str(message), filename, lineno)


# --------------------------------------------------------------------------- metrics --


class MetricKind(enum.IntEnum):
    COUNTER = 0
    GAUGE = 1


_KIND_NAMES = {MetricKind.COUNTER: "counter", MetricKind.GAUGE: "gauge"}
_FAMILY_GONE = (
    "Invalid metric operation as the corresponding 'MetricFamily' has been deleted. The 'MetricFamily' "
    "object should be deleted AFTER its corresponding 'Metric' objects have been deleted."
)


def _metric_call(op: str, args: tuple, failure: str) -> Any:
    """A metric call answered by the server (series live there, shown on /metrics)."""
    try:
        return _require_runtime("MetricFamily").control(op, args)
    except TritonModelException as exc:
        raise TritonModelException(failure + exc.message()) from None


class Metric:
    """One labelled series of a MetricFamily; Metrics with the same labels share it."""

    __slots__ = ("_handle", "_cleared", "__weakref__")

    def __init__(self, handle: int) -> None:
        self._handle = handle
        self._cleared = False

    def increment(self, value: float) -> None:
        self._op("metric_increment", "Failed to increment metric value: ", float(value))

    def set(self, value: float) -> None:
        self._op("metric_set", "Failed to set metric value: ", float(value))

    def value(self) -> float:
        return float(self._op("metric_value", "Failed to get metric value: "))

    def _op(self, op: str, failure: str, *args: Any) -> Any:
        if self._cleared:
            raise TritonModelException(failure + _FAMILY_GONE)
        return _metric_call(op, (self._handle, *args), failure)

    def _clear(self) -> None:
        if not self._cleared:
            self._cleared = True
            if _runtime is not None:
                _runtime.notify("metric_delete", (self._handle,))

    def __del__(self) -> None:
        self._clear()


class MetricFamily:
    """A metric family on the server's /metrics. Deleting it invalidates its Metrics."""

    COUNTER = MetricKind.COUNTER
    GAUGE = MetricKind.GAUGE

    def __init__(self, name: str, description: str, kind: MetricKind) -> None:
        if name is None or description is None or kind is None:
            raise TypeError("MetricFamily(): name, description and kind are required")
        if kind not in _KIND_NAMES:
            raise TritonModelException("Error when creating MetricFamily: Unknown metric kind")
        self._metrics: weakref.WeakSet[Metric] = weakref.WeakSet()
        self._handle = _metric_call(
            "metric_family_new", (str(name), str(description), _KIND_NAMES[MetricKind(kind)]),
            "Error when creating MetricFamily: ")

    def Metric(self, labels: dict[str, str] | None = None) -> Metric:  # noqa: N802 (Triton's name)
        if labels is not None and not isinstance(labels, dict):
            raise TritonModelException("Failed to create metric. Labels must be a dictionary.")
        labels = {str(k): str(v) for k, v in (labels or {}).items()}
        metric = Metric(_metric_call("metric_new", (self._handle, labels), "Error when creating Metric: "))
        self._metrics.add(metric)
        return metric

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is None:
            return
        for metric in list(self._metrics):
            metric._clear()
        if _runtime is not None:
            _runtime.notify("metric_family_delete", (handle,))


# --------------------------------------------------------------------- model control --


def load_model(model_name: str, config: str = "", files: dict[str, bytes] | None = None) -> None:
    if model_name is None or config is None:
        raise TypeError("load_model(): model_name and config must not be None")
    _require_runtime("load_model").control("load_model", (model_name, config, dict(files or {})))


def unload_model(model_name: str, unload_dependents: bool = False) -> None:
    if model_name is None or unload_dependents is None:
        raise TypeError("unload_model(): arguments must not be None")
    _require_runtime("unload_model").control("unload_model", (model_name, bool(unload_dependents)))


def is_model_ready(model_name: str, model_version: str = "") -> bool:
    if model_name is None or model_version is None:
        raise TypeError("is_model_ready(): arguments must not be None")
    return bool(_require_runtime("is_model_ready").control("is_model_ready", (model_name, str(model_version))))


def get_model_dir() -> str:
    return _require_runtime("get_model_dir").model_dir


# --------------------------------------------------------------------------- helpers --


def serialize_byte_tensor(input_tensor: np.ndarray) -> bytes | None:
    """Flatten a BYTES tensor into Triton's layout (per element: uint32 length, bytes)."""
    if input_tensor.size == 0:
        return b""
    if input_tensor.dtype.kind not in "OSU":
        return None
    pack = struct.Struct("<I").pack
    parts: list[bytes] = []
    for item in np.ravel(input_tensor, order="C"):
        if isinstance(item, bytes):
            b = item
        elif isinstance(item, (bytearray, memoryview)):
            b = bytes(item)
        elif isinstance(item, np.bytes_):
            b = bytes(item)
        else:
            b = str(item).encode("utf-8")
        parts.append(pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def deserialize_bytes_tensor(encoded_tensor: bytes | memoryview) -> np.ndarray:
    """Triton's BYTES layout back into a 1-D numpy object array of `bytes`."""
    view = memoryview(encoded_tensor).cast("B")
    unpack = struct.Struct("<I").unpack_from
    items: list[bytes] = []
    offset, total = 0, len(view)
    while offset < total:
        (length,) = unpack(view, offset)
        offset += 4
        items.append(bytes(view[offset : offset + length]))
        offset += length
    out = np.empty(len(items), dtype=np.object_)
    out[:] = items
    return out


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


def get_input_config_by_name(model_config: dict, name: str) -> dict | None:
    for entry in model_config.get("input", ()):
        if entry.get("name") == name:
            return entry
    return None


def get_output_config_by_name(model_config: dict, name: str) -> dict | None:
    for entry in model_config.get("output", ()):
        if entry.get("name") == name:
            return entry
    return None


def using_decoupled_model_transaction_policy(model_config: dict) -> bool:
    policy = model_config.get("model_transaction_policy")
    return bool(policy.get("decoupled", False)) if policy else False


def triton_to_numpy_type(data_type: int) -> Any:
    return _CODE_TO_NUMPY.get(data_type)


def numpy_to_triton_type(data_type: Any) -> int | None:
    try:
        dtype = np.dtype(data_type)
    except TypeError:
        return None
    if dtype.kind in "OS":
        return TYPE_BYTES
    return _NUMPY_TO_CODE.get(dtype)


def triton_string_to_numpy(triton_type_string: str) -> Any:
    return TRITON_STRING_TO_NUMPY[triton_type_string]


# ---------------------------------------------------------------------- auto-complete --


class ModelConfig:
    """The model configuration handed to `auto_complete_config`, with its setters.

    Only max_batch_size, dynamic batching, inputs, outputs and the transaction policy
    can be changed; `as_dict()` gives read access to everything.
    """

    def __init__(self, model_config: str | dict) -> None:
        self._model_config = json.loads(model_config) if isinstance(model_config, str) else model_config
        self._model_config.setdefault("input", [])
        self._model_config.setdefault("output", [])
        self._model_config.setdefault("max_batch_size", 0)

    @property
    def _name(self) -> str:
        return str(self._model_config.get("name", ""))

    def as_dict(self) -> dict:
        return self._model_config

    def set_max_batch_size(self, max_batch_size: int) -> None:
        current = int(self._model_config.get("max_batch_size", 0) or 0)
        if current > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {current}, but in auto-complete-config "
                f"function for model '{self._name}' specified max_batch_size {max_batch_size}"
            )
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self) -> None:
        for other in ("sequence_batching", "ensemble_scheduling"):
            if other in self._model_config:
                raise ValueError(
                    f"Configuration specified scheduling_choice as '{other}', but auto-complete-config "
                    f"function for model '{self._name}' tries to set scheduling_choice as 'dynamic_batching'"
                )
        self._model_config.setdefault("dynamic_batching", {})

    def add_input(self, input: dict) -> None:  # noqa: A002 (Triton's parameter name)
        self._add_tensor("input", input, ("name", "data_type", "dims", "optional"))

    def add_output(self, output: dict) -> None:
        self._add_tensor("output", output, ("name", "data_type", "dims"))

    def _add_tensor(self, kind: str, spec: dict, allowed: tuple[str, ...]) -> None:
        name = spec.get("name", "")
        for key in spec:
            if key not in allowed:
                listed = ", ".join(f"'{a}'" for a in allowed[:-1]) + f" and '{allowed[-1]}'"
                raise ValueError(
                    f"{kind} '{name}' in auto-complete-config function for model '{self._name}' "
                    f"contains property other than {listed}."
                )
        if "name" not in spec:
            raise ValueError(f"{kind} in auto-complete-config function for model '{self._name}' is missing 'name' property.")
        for required in ("data_type", "dims"):
            if required not in spec:
                raise ValueError(
                    f"{kind} '{name}' in auto-complete-config function for model '{self._name}' "
                    f"is missing '{required}' property."
                )
        dims = [int(d) for d in spec["dims"]]
        for existing in self._model_config.setdefault(kind, []):
            if existing.get("name") != name:
                continue
            have_type = existing.get("data_type", "TYPE_INVALID")
            have_dims = [int(d) for d in existing.get("dims", [])]
            if have_type != "TYPE_INVALID" and have_type != spec["data_type"]:
                raise ValueError(
                    f"unable to load model '{self._name}', configuration expects datatype {have_type} "
                    f"for {kind} '{name}', model provides {spec['data_type']}"
                )
            if have_dims and have_dims != dims:
                raise ValueError(
                    f"model '{self._name}', tensor '{name}': the model expects dims {dims} "
                    f"but the model configuration specifies dims {have_dims}"
                )
            if "optional" in spec and "optional" in existing and existing["optional"] != spec["optional"]:
                raise ValueError(
                    f"model '{self._name}', tensor '{name}': the model expects optional {spec['optional']} "
                    f"but the model configuration specifies optional {existing['optional']}"
                )
            existing["data_type"] = spec["data_type"]
            existing["dims"] = dims
            if "optional" in spec:
                existing["optional"] = spec["optional"]
            return
        entry = dict(spec)
        entry["dims"] = dims
        self._model_config[kind].append(entry)

    def set_model_transaction_policy(self, transaction_policy_dict: dict) -> None:
        for key in transaction_policy_dict:
            if key != "decoupled":
                raise ValueError(
                    f"model transaction property in auto-complete-config function for model "
                    f"'{self._name}' contains property other than 'decoupled'."
                )
        policy = self._model_config.setdefault("model_transaction_policy", {})
        if "decoupled" in transaction_policy_dict:
            want = transaction_policy_dict["decoupled"]
            if "decoupled" in policy and policy["decoupled"] != want:
                raise ValueError(
                    f"trying to change decoupled property in auto-complete-config for model "
                    f"'{self._name}', which is already set to '{policy['decoupled']}'."
                )
            policy["decoupled"] = want

