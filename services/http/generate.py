"""The generate extension (`server:docs/protocol/extension_generate.md`): a flat JSON
object in, a flat JSON object out (or one Server-Sent Event per response).

Request: a top-level key naming a model input becomes that tensor (a scalar or a 1-D
array, shaped from the model metadata: fixed dimensions first, the innermost variable
one takes the rest, other variable ones 1); any other key is a request parameter; the
`parameters` object is read the same way one level down.
Response: `id` (when set), `model_name`, `model_version`, the response parameters and
every output by name (a one-element tensor as a scalar), keys in sorted order as
Triton's std::map writes them.
"""

from __future__ import annotations

import json
from typing import Any

from naiad.kernel.inference.errors import ErrorCode, InferenceError, log_request
from naiad.kernel.inference.messages import ModelMetadata, TensorMetadata
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, Tensor

from .codec import flatten_json_strings, json_data, json_type_error, parameter_value, parse_json, tensor_from_json

SSE_TYPE = "text/event-stream; charset=utf-8"
ONE_RESPONSE = ("generate expects model to produce exactly 1 response, use generate stream for model "
                "that generates various number of responses")


def _shape_for(name: str, meta: TensorMetadata, count: int) -> tuple[int, ...]:
    dims = list(meta.shape)
    for i in range(len(dims) - 1, -1, -1):
        d = dims[i]
        if d != -1:
            if d == 0 or count % d:
                raise InferenceError.invalid(f"The schema can not convert input '{name}' to tensor with proper shape")
            count //= d
    for i in range(len(dims) - 1, -1, -1):
        if dims[i] == -1:
            dims[i] = count
            count = 1
    if count != 1:
        raise InferenceError.invalid(f"The schema can not convert input '{name}' to tensor with proper shape")
    return tuple(dims)


class _JsonObject(dict):
    """A JSON object that keeps every key as written, repeats included (rapidjson's
    `Members`), while lookups see the first value of a key (its `FindMember`)."""

    __slots__ = ("members",)


def _json_object(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject()
    obj.members = [k for k, _ in pairs]
    for k, v in pairs:
        obj.setdefault(k, v)
    return obj


def _tensor(name: str, meta: TensorMetadata, value: Any) -> Tensor:
    data = value if type(value) is list else [value]
    if meta.datatype == "BYTES":
        flatten_json_strings(data, [])  # Triton sizes BYTES data before it shapes it
    return tensor_from_json(name, meta.datatype, _shape_for(name, meta, len(data)), data)


def _convert(doc: _JsonObject, inputs: dict[str, TensorMetadata], tensors: list[Tensor],
             parameters: dict[str, Any], top: bool) -> None:
    for key in doc.members:
        value = doc[key]
        if top and key == "parameters":
            if key in inputs:
                raise InferenceError.invalid(
                    "Keyword 'parameters' for nested schema also given as input tensor name")
            if type(value) is not _JsonObject:
                raise json_type_error("Expected JSON object for keyword: 'parameters'", "object")
            try:
                _convert(value, inputs, tensors, parameters, top=False)
            except InferenceError as exc:
                raise InferenceError(f"Converting keyword: 'parameters': {exc.message}", exc.code) from None
        elif key in inputs:
            if any(t.name == key for t in tensors):
                # The generate request has no id, so Triton's core names it <id_unknown>.
                raise InferenceError.invalid(f"{log_request('')}input '{key}' already exists in request")
            tensors.append(_tensor(key, inputs[key], value))
        elif key not in parameters:
            parameters[key] = parameter_value(key, value)


def decode_generate(body: bytes | bytearray | memoryview, metadata: ModelMetadata,
                    model_name: str, model_version: str = "") -> InferenceRequest:
    doc = parse_json(body, object_pairs_hook=_json_object)
    if type(doc) is not _JsonObject:
        raise InferenceError.internal("attempt to get members for non-object")
    tensors: list[Tensor] = []
    parameters: dict[str, Any] = {}
    _convert(doc, {t.name: t for t in metadata.inputs}, tensors, parameters, top=True)
    return InferenceRequest(model_name, tensors, model_version=model_version, parameters=parameters,
                            protocol="http")


def encode_generate(response: InferenceResponse) -> bytes:
    """One response as the generate JSON object (raises the response's error)."""
    if response.error is not None:
        raise response.error
    out: dict[str, Any] = {}
    if response.id:
        out["id"] = response.id
    out["model_name"] = response.model_name
    out["model_version"] = response.model_version
    for key, value in response.parameters.items():
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise InferenceError(f"Response parameter '{key}' has type 'TRITONSERVER_PARAMETER_BYTES' which is "
                                 f"not currently supported", ErrorCode.UNSUPPORTED)
        out.setdefault(key, value)
    for t in response.outputs:
        if t.name in out:
            continue
        data = json_data(t)
        out[t.name] = data[0] if len(data) == 1 else data
    return json.dumps(out, ensure_ascii=False, sort_keys=True,
                      separators=(",", ":")).encode("utf-8", "surrogateescape")


def error_json(message: str) -> bytes:
    return json.dumps({"error": message}, separators=(",", ":")).encode()


def sse_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"
