"""The `/infer` wire format, bytes in and bytes out (KServe v2 JSON plus Triton's binary
tensor extension, `server:docs/protocol/extension_binary_data.md`).

Request: the first `Inference-Header-Content-Length` bytes of the body are the JSON
header (the whole body without that header); the rest are the binary inputs in `inputs`
order. The header is parsed once with `json.loads`; every binary input becomes a Tensor
whose `raw` is a memoryview slice of the received body — no copy. JSON `data` arrays go
through one `np.asarray` each. A header value of 0 makes the whole body one raw input.

Response: one JSON header, then every binary output's bytes as the backend produced them;
the reply body is built with a single join (or streamed into the compressor).

Errors use Triton's codes and words (`server:src/http_server.cc`): a malformed or
mistyped JSON member is INTERNAL (HTTP 500, TritonJson's status), explicit checks are
INVALID_ARG (400).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from naiad.kernel.inference.datatypes import WIRE_TO_NUMPY, element_count
from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.types import (
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    SharedMemoryRef,
    Tensor,
)

from . import compression

HEADER_LENGTH = "Inference-Header-Content-Length"
RAW_INPUT = "raw_input"

_internal = InferenceError.internal
_invalid = InferenceError.invalid

# JSON `data` -> numpy: which kinds np.asarray may infer for each wire type.
_INT_KINDS = frozenset("iu")
_FLOAT_KINDS = frozenset("iuf")
_BOOL_KINDS = frozenset("b")
_ACCEPT: dict[str, frozenset[str]] = {
    "BOOL": _BOOL_KINDS,
    "UINT8": _INT_KINDS, "UINT16": _INT_KINDS, "UINT32": _INT_KINDS, "UINT64": _INT_KINDS,
    "INT8": _INT_KINDS, "INT16": _INT_KINDS, "INT32": _INT_KINDS, "INT64": _INT_KINDS,
    "FP32": _FLOAT_KINDS, "FP64": _FLOAT_KINDS,
}
_SHAPE_MISMATCH = "Unable to parse 'data': Shape does not match true shape of 'data' field"


class ResponsePlan:
    """How the response to one request is encoded: the requested outputs by name and
    the default for outputs the request did not list (`binary_data_output`)."""

    __slots__ = ("requested", "default_binary")

    def __init__(self, requested: dict[str, RequestedOutput] | None, default_binary: bool) -> None:
        self.requested = requested
        self.default_binary = default_binary

    def binary(self, name: str) -> bool:
        requested = self.requested
        if requested is not None:
            out = requested.get(name)
            if out is not None and out.binary is not None:
                return out.binary
        return self.default_binary


# ------------------------------------------------------------------ small JSON helpers --


def _is_uint(v: Any) -> bool:
    return type(v) is int and v >= 0


def parse_json(body: bytes | bytearray | memoryview, what: str = "request") -> Any:
    """`json.loads` with TritonJson's failure code (INTERNAL) and a readable message."""
    try:
        return json.loads(body if not isinstance(body, memoryview) else bytes(body))
    except json.JSONDecodeError as exc:
        raise _internal(f"failed to parse the {what} JSON buffer: {exc.msg} at {exc.pos}") from None
    except UnicodeDecodeError as exc:
        raise _internal(f"failed to parse the {what} JSON buffer: invalid UTF-8 at {exc.start}") from None


def parameter_value(key: str, value: Any) -> bool | int | float | str:
    """A request parameter as Triton takes it from JSON: string, int, bool or double."""
    if isinstance(value, (str, bool, int, float)):
        return value
    raise _invalid(f"parameter '{key}' has invalid type. It should be either 'int', 'bool', or 'string'.")


def header_length(value: str | None, content_length: int) -> int:
    """The JSON header size named by `Inference-Header-Content-Length` (the whole body
    when the header is absent)."""
    if value is None:
        return content_length
    try:
        n = int(value.strip())
    except ValueError:
        raise _invalid(f"Unable to parse {HEADER_LENGTH}, got: {value}") from None
    if n < 0 or n > content_length:
        raise _invalid(f"inference header size should be in range (0, {content_length}), got: {value}")
    return n


# ------------------------------------------------------------------ tensors from JSON --


def _flatten_strings(data: list, out: list[bytes]) -> None:
    for item in data:
        if type(item) is str:
            out.append(item.encode("utf-8", "surrogateescape"))
        elif type(item) is list:
            _flatten_strings(item, out)
        else:
            raise _internal("Unable to parse 'data': attempt to access JSON non-string as string")


def tensor_from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> Tensor:
    """A tensor from a JSON `data` array (nested or flat; only the element count must
    match the shape)."""
    if datatype == "FP16" or datatype == "BF16":
        raise _invalid(f"receiving {datatype} data via JSON is not supported. Please use the binary "
                       f"data format for input {name}")
    count = element_count(shape)
    if datatype == "BYTES":
        if type(data) is not list:
            raise _internal("Unable to parse 'data'")
        items: list[bytes] = []
        _flatten_strings(data, items)
        if len(items) != count:
            raise _internal(_SHAPE_MISMATCH)
        arr = np.empty(count, dtype=object)
        arr[:] = items
        return Tensor(name, datatype, shape, array=arr.reshape(shape))
    accept = _ACCEPT.get(datatype)
    if accept is None:
        raise _invalid(f"invalid datatype for input {name}")
    if count == 0:
        return Tensor(name, datatype, shape, array=np.empty(shape, dtype=WIRE_TO_NUMPY[datatype]))
    if type(data) is not list:
        raise _internal("Unable to parse 'data'")
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        raise _internal(_SHAPE_MISMATCH) from None
    if arr.size != count:
        raise _internal(_SHAPE_MISMATCH)
    target = WIRE_TO_NUMPY[datatype]
    if arr.dtype.kind not in accept:
        # Integers beyond int64 next to small ones come out as float64: convert again
        # with the target dtype and keep the result only if it is exact.
        exact = None
        if arr.dtype.kind == "f" and accept is _INT_KINDS:
            try:
                exact = np.asarray(data, dtype=target)
            except (ValueError, TypeError, OverflowError):
                exact = None
            if exact is not None and not np.array_equal(exact.astype(np.float64), arr):
                exact = None
        if exact is None:
            raise _internal(f"Unable to parse 'data': expected {datatype} values, got {_json_kind(arr)}")
        arr = exact
    arr = arr.astype(target, copy=False).reshape(shape)
    return Tensor(name, datatype, shape, array=arr)


def _json_kind(arr: np.ndarray) -> str:
    kind = arr.dtype.kind
    return {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers", "U": "strings"}.get(kind, "mixed values")


def _shm_ref(params: dict) -> SharedMemoryRef | None:
    region = params.get("shared_memory_region")
    if region is None:
        return None
    if type(region) is not str:
        raise _internal("Unable to parse 'shared_memory_region'")
    offset = params.get("shared_memory_offset", 0)
    if not _is_uint(offset):
        raise _internal("Unable to parse 'shared_memory_offset'")
    size = params.get("shared_memory_byte_size", 0)
    if not _is_uint(size):
        raise _internal("Unable to parse 'shared_memory_byte_size'")
    return SharedMemoryRef(region, size, offset)


def _content_error(has_data: bool, has_binary: bool, has_shm: bool) -> InferenceError:
    text = ("Input must set only one of the following fields: 'data', 'binary_data_size' in "
            "'parameters', 'shared_memory_region' in 'parameters'. But")
    if not (has_data or has_binary or has_shm):
        text += " no field is set"
    else:
        text += " set"
        if has_data:
            text += " 'data'"
        if has_binary:
            text += " 'binary_data_size'"
        if has_shm:
            text += " 'shared_memory_region'"
    return _invalid(text)


# ------------------------------------------------------------------ request --


def decode_infer(
    body: bytes | bytearray | memoryview,
    header_value: str | None,
    model_name: str,
    model_version: str = "",
    forward: Sequence[tuple[str, str]] = (),
) -> tuple[InferenceRequest, ResponsePlan]:
    """Decode one `/infer` body (already decompressed) into the request and the plan
    for encoding its response. Tensors point into `body`; keep it alive with them."""
    size = len(body)
    hlen = header_length(header_value, size)
    if hlen == 0:
        # Raw binary request: the whole body is the model's one input; the model manager
        # gives it the input's name, datatype and shape from the config.
        raw = memoryview(body)
        request = InferenceRequest(model_name, [Tensor(RAW_INPUT, "", (), raw=raw)],
                                   model_version=model_version, protocol="http")
        if forward:
            request.parameters.update(forward)
        return request, ResponsePlan(None, True)

    doc = parse_json(body if hlen == size else body[:hlen])
    if type(doc) is not dict:
        raise _internal("Unable to parse 'inputs'")

    request_id = doc.get("id", "")
    if type(request_id) is not str:
        raise _internal("Unable to parse 'id'")

    # ---- request parameters (ParseJsonTritonParams)
    parameters: dict[str, Any] = {}
    default_binary = False
    sequence_id: int | str = 0
    start = end = False
    priority = timeout = 0
    params = doc.get("parameters")
    if params is not None:
        if type(params) is not dict:
            raise _internal("failed to get request params.")
        for key, value in params.items():
            if key == "sequence_id":
                if _is_uint(value) or type(value) is str:
                    sequence_id = value
                else:
                    raise _internal("Unable to parse 'sequence_id'")
            elif key == "sequence_start":
                if type(value) is not bool:
                    raise _internal("Unable to parse 'sequence_start'")
                start = value
            elif key == "sequence_end":
                if type(value) is not bool:
                    raise _internal("Unable to parse 'sequence_end'")
                end = value
            elif key == "priority":
                if not _is_uint(value):
                    raise _internal("Unable to parse 'priority'")
                priority = value
            elif key == "timeout":
                if not _is_uint(value):
                    raise _internal("Unable to parse 'timeout'")
                timeout = value
            elif key == "binary_data_output":
                if type(value) is not bool:
                    raise _internal("Unable to parse 'binary_data_output'")
                default_binary = value
            elif key.startswith("triton_"):
                raise _invalid("parameter keys starting with 'triton_' are reserved for Triton usage "
                               "and should not be specified.")
            else:
                parameters[key] = parameter_value(key, value)

    # ---- inputs (ParseJsonTritonIO)
    inputs_json = doc.get("inputs")
    if type(inputs_json) is not list:
        raise _internal("Unable to parse 'inputs'")
    view: memoryview | None = None
    offset = hlen
    inputs: list[Tensor] = []
    append = inputs.append
    for item in inputs_json:
        if type(item) is not dict:
            raise _internal("Unable to parse 'inputs'")
        p = item.get("parameters")
        if p is not None and type(p) is not dict:
            raise _internal("Unable to parse 'parameters'")
        has_data = "data" in item
        has_binary = p is not None and "binary_data_size" in p
        has_shm = p is not None and "shared_memory_region" in p
        if has_data + has_binary + has_shm != 1:
            raise _content_error(has_data, has_binary, has_shm)
        name = item.get("name")
        if type(name) is not str:
            raise _internal("Unable to parse 'name'")
        datatype = item.get("datatype")
        if type(datatype) is not str:
            raise _internal("Unable to parse 'datatype'")
        shape_json = item.get("shape")
        if type(shape_json) is not list:
            raise _internal("Unable to parse 'shape'")
        for d in shape_json:
            if not _is_uint(d):
                raise _internal("Unable to parse 'shape'")
        shape = tuple(shape_json)
        if has_binary:
            nbytes = p["binary_data_size"]  # type: ignore[index]
            if not _is_uint(nbytes):
                raise _internal("Unable to parse 'binary_data_size'")
            if nbytes and header_value is None:
                raise _invalid("must specify valid 'Infer-Header-Content-Length' in request header and "
                               "'binary_data_size' when passing inputs in binary data format")
            if view is None:
                view = memoryview(body)
            stop = offset + nbytes
            if stop > size:
                raise _invalid(f"unexpected size for input '{name}', expecting {stop - size} additional "
                               f"bytes for model '{model_name}'")
            append(Tensor(name, datatype, shape, raw=view[offset:stop]))
            offset = stop
        elif has_shm:
            append(Tensor(name, datatype, shape, shm=_shm_ref(p)))  # type: ignore[arg-type]
        else:
            append(tensor_from_json(name, datatype, shape, item["data"]))
    if offset != size:
        raise _invalid(f"unexpected additional input data for model '{model_name}'")

    # ---- requested outputs
    requested: dict[str, RequestedOutput] | None = None
    outputs: list[RequestedOutput] | None = None
    if "outputs" in doc:
        outputs_json = doc["outputs"]
        if type(outputs_json) is not list:
            raise _internal("Unable to parse 'outputs'")
        outputs = []
        requested = {}
        for item in outputs_json:
            if type(item) is not dict:
                raise _internal("Unable to parse 'outputs'")
            p = item.get("parameters")
            if p is None:
                p = {}
            elif type(p) is not dict:
                raise _internal("Unable to parse 'parameters'")
            shm_requested = "shared_memory_region" in p
            if shm_requested:
                if "classification" in p:
                    raise _invalid("Output can't set both 'shared_memory_region' and 'classification'")
                if "binary_data" in p:
                    if type(p["binary_data"]) is not bool:
                        raise _internal("Unable to set 'binary_data'")
                    if p["binary_data"]:
                        raise _invalid("Output can't set both 'shared_memory_region' and 'binary_data'")
            name = item.get("name")
            if type(name) is not str:
                raise _internal("Unable to parse 'name'")
            classes = p.get("classification", 0)
            if not _is_uint(classes):
                raise _internal("Unable to set 'classification'")
            binary = p.get("binary_data", False)
            if type(binary) is not bool:
                raise _internal("Unable to parse 'binary_data'")
            out = RequestedOutput(name, binary=binary, classification=classes,
                                  shm=_shm_ref(p) if shm_requested else None)
            outputs.append(out)
            requested[name] = out

    if forward:
        parameters.update(forward)
    request = InferenceRequest(
        model_name,
        inputs,
        model_version=model_version,
        id=request_id,
        outputs=outputs,
        parameters=parameters,
        priority=priority,
        timeout_us=timeout,
        sequence_id=sequence_id,
        sequence_start=start,
        sequence_end=end,
        protocol="http",
    )
    return request, ResponsePlan(requested, default_binary)


# ------------------------------------------------------------------ response --


def response_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    for value in parameters.values():
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise InferenceError("Response parameter of type 'TRITONSERVER_PARAMETER_BYTES' is not currently "
                                 "supported", ErrorCode.UNSUPPORTED)
    return parameters


def json_data(tensor: Tensor) -> list:
    """A tensor's elements as one flat JSON-ready list (Triton writes `data` flat)."""
    datatype = tensor.datatype
    if datatype == "FP16" or datatype == "BF16":
        raise _invalid(f"sending {datatype} data via JSON is not supported. Please use the binary data "
                       f"format for output")
    arr = tensor.array
    if datatype == "BYTES":
        return [
            b.decode("utf-8", "surrogateescape") if isinstance(b, (bytes, bytearray))
            else (bytes(b).decode("utf-8", "surrogateescape") if isinstance(b, memoryview) else str(b))
            for b in arr.reshape(-1)
        ]
    return arr.reshape(-1).tolist()


def _nbytes(buf: Any) -> int:
    return buf.nbytes if isinstance(buf, memoryview) else len(buf)


def json_payload_bytes(response: InferenceResponse, plan: ResponsePlan) -> int:
    """Roughly how much of the response is rendered as JSON text (to decide whether
    encoding it should leave the event loop)."""
    total = 0
    for t in response.outputs:
        if t.shm is None and not plan.binary(t.name):
            total += t.byte_size
    return total


def payload_bytes(response: InferenceResponse) -> int:
    """Bytes of output data the response carries in its body."""
    return sum(t.byte_size for t in response.outputs if t.shm is None)


def encode_infer(response: InferenceResponse, plan: ResponsePlan, encoding: str = "identity",
                 ) -> tuple[int, dict[str, str], bytes | bytearray | memoryview]:
    """(status, headers, body) of a successful `/infer` reply."""
    doc: dict[str, Any] = {}
    if response.id:
        doc["id"] = response.id
    doc["model_name"] = response.model_name
    doc["model_version"] = response.model_version
    if response.parameters:
        doc["parameters"] = response_parameters(response.parameters)
    outputs: list[dict[str, Any]] = []
    blobs: list[Any] = []
    for t in response.outputs:
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": [int(d) for d in t.shape]}
        if t.shm is None:  # an output written to shared memory carries no data
            if plan.binary(t.name):
                raw = t.raw
                n = _nbytes(raw)
                entry["parameters"] = {"binary_data_size": n}
                if n:
                    blobs.append(raw)
            else:
                entry["data"] = json_data(t)
        outputs.append(entry)
    doc["outputs"] = outputs
    header = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogateescape")
    if blobs:
        headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
        parts: list[Any] = [header, *blobs]
    else:
        headers = {"Content-Type": "application/json"}
        parts = [header]
    if encoding != compression.IDENTITY:
        headers["Content-Encoding"] = encoding
        return 200, headers, compression.compress(parts, encoding)
    if len(parts) == 1:
        return 200, headers, header
    return 200, headers, b"".join(parts)
