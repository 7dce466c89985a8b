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
import math
from typing import Any, Callable, Sequence

import numpy as np
import orjson

from naiad.kernel.inference.datatypes import WIRE_TO_NUMPY, element_count
from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.request_model import (
    Wire,
    build_request,
    read_parameters,
    requested_output,
    shared_memory_ref,
)
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, ParameterValue, RequestedOutput, Tensor

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
    return type(v) is int and 0 <= v < 1 << 64


def _is_int(v: Any) -> bool:
    return type(v) is int and -(1 << 63) <= v < 1 << 63


# TritonJson's accessor errors (common `triton_json.h`), INTERNAL as Triton's server builds it.
JSON_NOT_A = {
    "string": "attempt to access JSON non-string as string",
    "bool": "attempt to access JSON non-boolean as boolean",
    "int": "attempt to access JSON non-signed-integer as signed-integer",
    "uint": "attempt to access JSON non-unsigned-integer as unsigned-integer",
    "double": "attempt to access JSON non-number as double",
    "array": "attempt to access JSON non-array as array",
    "object": "attempt to access JSON non-object as object",
}


def json_type_error(context: str, kind: str) -> InferenceError:
    """`<context>: attempt to access JSON non-<kind> as <kind>` (Triton's RETURN_MSG_IF_ERR)."""
    return _internal(f"{context}: {JSON_NOT_A[kind]}")


def _bad(key: str, kind: str) -> InferenceError:
    return json_type_error(f"Unable to parse '{key}'", kind)


def _missing(key: str, member: str | None = None) -> InferenceError:
    return _internal(f"Unable to parse '{key}': attempt to access non-existing object member '{member or key}'")


def parse_json(body: bytes | bytearray | memoryview, what: str = "request",
               object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """`json.loads` with TritonJson's failure code (INTERNAL) and a readable message.

    orjson parses first (10x faster on tensor data); whatever it refuses (NaN literals,
    integers past 64 bits, invalid UTF-8, lone surrogates) goes to `json`, which keeps
    today's answer for those bodies: accepted, or refused with its words."""
    refused: orjson.JSONDecodeError | None = None
    if object_pairs_hook is None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            refused = exc
    try:
        return json.loads(body if not isinstance(body, memoryview) else bytes(body),
                          object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as exc:
        raise _internal(f"failed to parse the {what} JSON buffer: {exc.msg} at {exc.pos}") from None
    except RecursionError:
        # Nested deeper than Python's stack: refused with orjson's words (it stops at 1024).
        where = f"{refused.msg} at {refused.pos}" if refused is not None else "nesting too deep"
        raise _internal(f"failed to parse the {what} JSON buffer: {where}") from None
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
    n = _atoi(value)
    if n < 0 or n > content_length:
        raise _invalid(f"inference header size should be in range (0, {content_length}), got: {value}")
    return n


def _atoi(text: str) -> int:
    """C's atoi, as Triton reads the header: leading digits after optional blanks and
    sign; anything else is 0 (so an unreadable value makes a raw binary request)."""
    text = text.lstrip(" \t\n\v\f\r")
    sign = 1
    if text[:1] in ("+", "-"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    digits = 0
    while digits < len(text) and "0" <= text[digits] <= "9":
        digits += 1
    return sign * int(text[:digits]) if digits else 0


# ------------------------------------------------------------------ tensors from JSON --


def flatten_json_strings(data: Any, out: list[bytes]) -> None:
    """Triton's `JsonBytesArrayByteSize`: every leaf of the nested arrays is a string."""
    if type(data) is str:
        out.append(data.encode("utf-8", "surrogateescape"))
    elif type(data) is list:
        for item in data:
            flatten_json_strings(item, out)
    else:
        raise json_type_error("Unable to parse JSON bytes array", "string")


# Which JSON leaves each wire type reads (`ReadDataFromJsonHelper`) and the TritonJson
# accessor it reads them with.
_LEAF_KIND: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint", "UINT16": "uint", "UINT32": "uint", "UINT64": "uint",
    "INT8": "int", "INT16": "int", "INT32": "int", "INT64": "int",
    "FP32": "double", "FP64": "double",
}
# The widest numpy type for each accessor: a narrower target then wraps as Triton's casts do.
_LEAF_DTYPE = {"bool": np.bool_, "uint": np.uint64, "int": np.int64, "double": np.float64}
_LEAF_OK = {
    "bool": lambda v: type(v) is bool,
    "uint": _is_uint,
    "int": _is_int,
    "double": lambda v: type(v) is int or type(v) is float,
}


def _read_leaves(data: list, datatype: str, count: int) -> list:
    """The leaves of nested `data` in order, checked one by one as Triton reads them:
    a leaf past `count`, or of the wrong JSON type, is refused at that leaf."""
    kind = _LEAF_KIND[datatype]
    ok = _LEAF_OK[kind]
    leaves: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                stack.append(iter(item))
                break
            if len(leaves) >= count:
                raise _internal(_SHAPE_MISMATCH)
            if not ok(item):
                raise json_type_error("Unable to parse 'data'", kind)
            leaves.append(item)
        else:
            stack.pop()
    if len(leaves) != count:
        raise _internal(_SHAPE_MISMATCH)
    return leaves


def tensor_from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any, may_hold_bools: bool = True,
                     ) -> Tensor:
    """A tensor from a JSON `data` array (nested or flat; only the element count must
    match the shape), with the checks and words of Triton's `ReadDataFromJson`.
    `may_hold_bools=False` says the JSON text has no `true`/`false` at all, which spares
    numeric data the look for booleans that numpy would silently take as numbers."""
    count = element_count(shape)
    if count == 0:  # Triton reads no data at all for an empty tensor
        target = object if datatype == "BYTES" else WIRE_TO_NUMPY.get(datatype)
        try:
            array = np.empty(shape, dtype=target) if target else None
        except ValueError:  # a 0 beside a dimension past what numpy can index ([0, 2**62])
            raise _invalid(f"input '{name}' has a shape no tensor can take: {list(shape)}") from None
        return Tensor(name, datatype, shape, array=array, raw=None if target else b"")
    if type(data) is not list:
        raise _bad("data", "array")
    if datatype == "BYTES":
        items: list[bytes] = []
        flatten_json_strings(data, items)
        if len(items) != count:
            raise _internal(_SHAPE_MISMATCH)
        arr = np.empty(count, dtype=object)
        arr[:] = items
        return Tensor(name, datatype, shape, array=arr.reshape(shape))
    if datatype == "FP16" or datatype == "BF16":
        raise _invalid(f"receiving {datatype} data via JSON is not supported. Please use the binary "
                       f"data format for input {name}")
    accept = _ACCEPT.get(datatype)
    if accept is None:
        raise _invalid(f"invalid datatype for input {name}")
    target = WIRE_TO_NUMPY[datatype]
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        arr = None  # ragged nesting: Triton only counts the leaves
    if (arr is None or arr.dtype.kind not in accept or arr.size != count or _out_of_range(arr, datatype)
            or (may_hold_bools and datatype != "BOOL" and _holds_bool(data))):
        # The slow, exact path: find the leaf Triton would stop at, else take the leaves.
        leaves = _read_leaves(data, datatype, count)
        arr = np.asarray(leaves, dtype=_LEAF_DTYPE[_LEAF_KIND[datatype]])
    arr = arr.astype(target, copy=False).reshape(shape)
    return Tensor(name, datatype, shape, array=arr)


def _holds_bool(data: list) -> bool:
    if data and type(data[0]) is list:
        return True  # nested: let the exact path look
    return any(type(v) is bool for v in data)


def _out_of_range(arr: np.ndarray, datatype: str) -> bool:
    """Values numpy took but TritonJson's accessor refuses: negatives read as unsigned,
    integers past int64 read as signed."""
    kind = arr.dtype.kind
    if datatype[0] == "U":
        return kind == "i" and arr.size > 0 and bool(arr.min() < 0)
    if datatype[0] == "I":
        return kind == "u"
    return False


def _member(obj: Any, key: str, typ: type, kind: str) -> Any:
    """`MemberAsString`/`MemberAsArray` of a request member, with TritonJson's errors."""
    if type(obj) is not dict or key not in obj:
        raise _missing(key)
    value = obj[key]
    if type(value) is not typ:
        raise _bad(key, kind)
    return value


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


# ------------------------------------------------------------------ request values --


class _JsonWire(Wire):
    """The request model's accessors for JSON values, with TritonJson's words
    (`ParseJsonTritonParams`, `ParseJsonTritonIO`, `ParseJsonTritonRequestedOutputs`)."""

    options = frozenset(("binary_data_output",))

    def sequence_id(self, value: Any) -> int | str:
        if _is_uint(value) or type(value) is str:
            return value
        raise _bad("sequence_id", "string")

    def flag(self, key: str, value: Any) -> bool:
        if type(value) is not bool:
            raise _bad(key, "bool")
        return value

    def priority(self, value: Any) -> int:
        return _uint("priority", value)

    def timeout(self, value: Any) -> int:
        return _uint("timeout", value)

    option = flag  # binary_data_output

    def reserved(self, key: str) -> InferenceError:
        return _invalid("parameter keys starting with 'triton_' are reserved for Triton usage "
                        "and should not be specified.")

    def passthrough(self, key: str, value: Any) -> ParameterValue:
        return parameter_value(key, value)

    def shm_region(self, value: Any, tensor: str) -> str:
        if type(value) is not str:
            raise _bad("shared_memory_region", "string")
        return value

    def shm_uint(self, key: str, value: Any, tensor: str) -> int:
        return _uint(key, value)

    def shm_without_region(self, key: str, tensor: str) -> None:
        return None  # TritonJson reads offset and size only beside a region

    def shm_default_size(self, tensor: str) -> int:
        return 0

    def classification(self, value: Any) -> int:
        if not _is_uint(value):
            raise json_type_error("Unable to set 'classification'", "uint")
        return value

    def shm_and_classification(self) -> InferenceError:
        return _invalid("Output can't set both 'shared_memory_region' and 'classification'")

    def binary(self, params: Any) -> bool:
        binary = params.get("binary_data", False)
        if type(binary) is not bool:
            raise _bad("binary_data", "bool")
        return binary


JSON_WIRE = _JsonWire()


def _uint(key: str, value: Any) -> int:
    if not _is_uint(value):
        raise _bad(key, "uint")
    return value


def _validate_shm_output(params: dict) -> None:
    """Triton's `ValidateOutputParameter`: an output written to shared memory is neither
    classified nor sent as binary data."""
    if "classification" in params:
        raise JSON_WIRE.shm_and_classification()
    if "binary_data" in params:
        if type(params["binary_data"]) is not bool:
            raise json_type_error("Unable to set 'binary_data'", "bool")
        if params["binary_data"]:
            raise _invalid("Output can't set both 'shared_memory_region' and 'binary_data'")


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
        request = build_request(model_name, [Tensor(RAW_INPUT, "", (), raw=memoryview(body))],
                                model_version=model_version, forwarded=forward, protocol="http")
        return request, ResponsePlan(None, True)

    header = body if hlen == size else body[:hlen]
    if isinstance(header, memoryview):
        header = header.tobytes()  # the one copy json.loads needs anyway
    doc = parse_json(header)
    may_hold_bools = b"true" in header or b"false" in header  # a C-speed scan, spares most requests a slow one
    if type(doc) is not dict:
        raise _missing("inputs")

    request_id = doc.get("id", "")
    if type(request_id) is not str:
        raise _bad("id", "string")

    # ---- request parameters (ParseJsonTritonParams)
    params = doc.get("parameters")
    if params is not None and type(params) is not dict:
        raise _internal("failed to get request params.: attempt to get members for non-object")
    values = read_parameters(params, JSON_WIRE)

    # ---- inputs (ParseJsonTritonIO)
    if "inputs" not in doc:
        raise _missing("inputs")
    inputs_json = doc["inputs"]
    if type(inputs_json) is not list:
        raise _bad("inputs", "array")
    view: memoryview | None = None
    offset = hlen
    inputs: list[Tensor] = []
    append = inputs.append
    for item in inputs_json:
        if type(item) is not dict:
            raise _content_error(False, False, False)
        p = item.get("parameters")
        if type(p) is not dict:
            p = None  # TritonJson finds no member in a non-object
        has_data = "data" in item
        has_binary = p is not None and "binary_data_size" in p
        has_shm = p is not None and "shared_memory_region" in p
        if has_data + has_binary + has_shm != 1:
            raise _content_error(has_data, has_binary, has_shm)
        name = _member(item, "name", str, "string")
        datatype = _member(item, "datatype", str, "string")
        shape_json = _member(item, "shape", list, "array")
        for d in shape_json:
            if not _is_uint(d):
                raise _bad("shape", "uint")
        shape = tuple(shape_json)
        if has_binary:
            nbytes = p["binary_data_size"]  # type: ignore[index]
            if not _is_uint(nbytes):
                raise _bad("binary_data_size", "uint")
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
            append(Tensor(name, datatype, shape, shm=shared_memory_ref(p, JSON_WIRE, name)))  # type: ignore[arg-type]
        else:
            append(tensor_from_json(name, datatype, shape, item["data"], may_hold_bools))
    if offset != size:
        raise _invalid(f"unexpected additional input data for model '{model_name}'")

    # ---- requested outputs
    requested: dict[str, RequestedOutput] | None = None
    outputs: list[RequestedOutput] | None = None
    if "outputs" in doc:
        outputs_json = doc["outputs"]
        if type(outputs_json) is not list:
            raise _bad("outputs", "array")
        outputs = []
        requested = {}
        for item in outputs_json:
            p = item.get("parameters") if type(item) is dict else None
            if type(p) is not dict:
                p = None  # TritonJson finds no member in a non-object
            elif "shared_memory_region" in p:
                _validate_shm_output(p)  # Triton's ValidateOutputParameter: before the name
            out = requested_output(_member(item, "name", str, "string"), p, JSON_WIRE)
            outputs.append(out)
            requested[out.name] = out

    request = build_request(model_name, inputs, values, model_version=model_version, id=request_id,
                            outputs=outputs, forwarded=forward, protocol="http")
    return request, ResponsePlan(requested, values.options.get("binary_data_output", False))


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


def dumps(doc: Any, floats_finite: bool = True) -> bytes:
    """UTF-8 JSON text of `doc`, compact, as `json.dumps(ensure_ascii=False)` writes it.
    orjson writes it where it can (same text for str, int, float and bool; 20x faster);
    lone surrogates (BYTES decoded with surrogateescape), integers past 64 bits and
    non-finite floats (`floats_finite=False`) take `json`."""
    if floats_finite:
        try:
            return orjson.dumps(doc)
        except TypeError:  # orjson.JSONEncodeError
            pass
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogateescape")


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
    finite = not any(type(v) is float and not math.isfinite(v) for v in doc.get("parameters", {}).values())
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
                if finite and t.datatype in ("FP32", "FP64"):
                    finite = bool(np.isfinite(t.array).all())
        outputs.append(entry)
    doc["outputs"] = outputs
    header = dumps(doc, finite)
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
