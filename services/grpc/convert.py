"""Protobuf <-> naiad converters, one per message of `inference.GRPCInferenceService`.

Requests are read the way Triton's gRPC front end reads them (`infer_handler.cc`,
`grpc_server.cc`), with its error wording; nothing here validates a request against a
model (the model manager does). Tensor data is never copied on the way in:
`raw_input_contents[i]` becomes the tensor's `raw` as is, and typed `contents` are
converted once into one numpy buffer.

On the way out, an infer response is built as a protobuf message without its
`raw_output_contents` plus the list of output buffers (`InferReply`); the serializer
appends the buffers as field 6 in wire format, so an output leaves as one copy into the
message bytes instead of three (to `bytes`, into the protobuf arena, into the wire).
"""

from __future__ import annotations

import struct
from typing import Any, Iterable, Mapping

import numpy as np

from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.messages import (
    CudaShmRegion,
    ModelIndexEntry,
    ModelMetadata,
    SystemShmRegion,
)
from naiad.kernel.inference.request_model import (
    Wire,
    build_request,
    read_parameters,
    requested_output,
    shared_memory_ref,
)
from naiad.kernel.inference.stats import Duration, ModelStatistics
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor
from naiad.protos import grpc_service_pb2 as pb

# ------------------------------------------------------------------ status codes --

#: Triton error code -> gRPC status code name (`GrpcStatusUtil::CodeToStatus`).
GRPC_CODE_NAME: dict[ErrorCode, str] = {
    ErrorCode.UNKNOWN: "UNKNOWN",
    ErrorCode.INTERNAL: "INTERNAL",
    ErrorCode.NOT_FOUND: "NOT_FOUND",
    ErrorCode.INVALID_ARG: "INVALID_ARGUMENT",
    ErrorCode.UNAVAILABLE: "UNAVAILABLE",
    ErrorCode.UNSUPPORTED: "UNIMPLEMENTED",
    ErrorCode.ALREADY_EXISTS: "ALREADY_EXISTS",
    ErrorCode.CANCELLED: "CANCELLED",
}

# ------------------------------------------------------------------ infer request --

#: The only `triton_`-prefixed request parameter a client may set (`common.h`).
EMPTY_FINAL_RESPONSE = "triton_enable_empty_final_response"
TRITON_RESERVED_REQUEST_PARAMS = (EMPTY_FINAL_RESPONSE,)

_LEN = struct.Struct("<I")

# Typed contents field -> (wire datatype it carries, numpy dtype of the field's values).
_CONTENT_FIELDS: tuple[tuple[str, str], ...] = (
    ("bool_contents", "BOOL"),
    ("int_contents", "INT32"),
    ("int64_contents", "INT64"),
    ("uint_contents", "UINT32"),
    ("uint64_contents", "UINT64"),
    ("fp32_contents", "FP32"),
    ("fp64_contents", "FP64"),
    ("bytes_contents", "BYTES"),
)
_NUMPY = {
    "BOOL": np.dtype(np.bool_), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"), "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}


def _invalid_type(key: str, expected: str, tensor: str = "") -> InferenceError:
    where = f" for tensor '{tensor}'" if tensor else ""
    return InferenceError.invalid(f"invalid value type for '{key}' parameter{where}, expected {expected}.")


class _ProtoWire(Wire):
    """The request model's accessors for `InferParameter`s, with the gRPC front end's
    words (`infer_handler.cc`: `SetInferenceRequestMetadata`, `ParseSharedMemoryParams`,
    `ParseClassificationParams`)."""

    options = frozenset(TRITON_RESERVED_REQUEST_PARAMS)

    def sequence_id(self, p: Any) -> int | str:
        which = p.WhichOneof("parameter_choice")
        if which == "int64_param":
            return p.int64_param
        if which == "string_param":
            return p.string_param
        raise _invalid_type("sequence_id", "int64_param or string_param")

    def flag(self, key: str, p: Any) -> bool:
        if p.WhichOneof("parameter_choice") != "bool_param":
            raise _invalid_type(key, "bool_param")
        return p.bool_param

    option = flag  # triton_enable_empty_final_response

    def priority(self, p: Any) -> int:
        which = p.WhichOneof("parameter_choice")
        if which == "int64_param":
            if p.int64_param < 0:
                raise InferenceError.invalid("invalid value for 'priority', expected value >= 0.")
            return p.int64_param
        if which == "uint64_param":
            return p.uint64_param
        raise _invalid_type("priority", "int64_param or uint64_param")

    def timeout(self, p: Any) -> int:
        return _int64("timeout", p)

    def reserved(self, key: str) -> InferenceError:
        return InferenceError.invalid(
            "parameter keys starting with 'triton_' are reserved for Triton usage. Only the following keys "
            "starting with 'triton_' are allowed: " + " ".join(TRITON_RESERVED_REQUEST_PARAMS))

    def passthrough(self, key: str, p: Any) -> Any:
        which = p.WhichOneof("parameter_choice")
        if which == "int64_param" or which == "bool_param" or which == "string_param" or which == "double_param":
            return getattr(p, which)
        raise _invalid_type(key, "int64_param, bool_param, double_param or string_param")

    def shm_region(self, p: Any, tensor: str) -> str:
        if p.WhichOneof("parameter_choice") != "string_param":
            raise _invalid_type("shared_memory_region", "string_param", tensor)
        return p.string_param

    def shm_uint(self, key: str, p: Any, tensor: str) -> int:
        return _int64(key, p, tensor)

    def shm_without_region(self, key: str, tensor: str) -> InferenceError:
        return InferenceError.invalid(
            f"'{key}' can not be specified without 'shared_memory_region' parameter for tensor '{tensor}'")

    def shm_default_size(self, tensor: str) -> int:
        raise InferenceError.invalid(
            "'shared_memory_byte_size' must be specified along with 'shared_memory_region' "
            f"parameter for tensor '{tensor}'")

    def classification(self, p: Any) -> int:
        if p.WhichOneof("parameter_choice") != "int64_param":
            raise InferenceError.invalid("invalid value type for 'classification' parameter, expected int64_param")
        if p.int64_param <= 0:
            raise InferenceError.invalid("invalid value for 'classification' parameter, expected >= 0")
        return p.int64_param

    def shm_and_classification(self) -> InferenceError:
        return InferenceError.invalid("output can't set both 'shared_memory_region' and 'classification'")


PROTO_WIRE = _ProtoWire()


def _int64(key: str, p: Any, tensor: str = "") -> int:
    if p.WhichOneof("parameter_choice") != "int64_param":
        raise _invalid_type(key, "int64_param", tensor)
    return p.int64_param


def _contents_raw(t: Any, model_name: str) -> bytes | memoryview:
    """Typed `InferTensorContents` -> the tensor's bytes in wire layout (one conversion)."""
    c = t.contents
    datatype = t.datatype
    found: Any = None
    carried = ""
    for field, wire in _CONTENT_FIELDS:
        values = getattr(c, field)
        if not len(values):
            continue
        if field == "int_contents" and datatype in ("INT8", "INT16"):
            wire = datatype
        elif field == "uint_contents" and datatype in ("UINT8", "UINT16"):
            wire = datatype
        if found is not None:
            raise InferenceError.invalid(
                f"unexpected explicit tensor data for input tensor '{t.name}' for model '{model_name}', "
                "binary data was already supplied.")
        if wire != datatype:
            raise InferenceError.invalid(
                f"unexpected explicit tensor data for input tensor '{t.name}' for model '{model_name}' "
                f"of type '{wire}', expected datatype '{datatype}'")
        found, carried = values, wire
    if found is None:
        return b""
    if carried == "BYTES":
        pack = _LEN.pack
        return b"".join(b for item in found for b in (pack(len(item)), item))
    if carried in ("INT8", "INT16"):  # int32 values, low bytes kept as Triton does
        arr = np.array(found, dtype=np.int32).astype(_NUMPY[carried])
    elif carried in ("UINT8", "UINT16"):
        arr = np.array(found, dtype=np.uint32).astype(_NUMPY[carried])
    else:
        arr = np.array(found, dtype=_NUMPY[carried])
    return memoryview(arr).cast("B")


def infer_request(
    msg: Any,
    forwarded: Iterable[tuple[str, str]] = (),
    protocol: str = "grpc",
) -> tuple[InferenceRequest, bool]:
    """A `ModelInferRequest` -> (InferenceRequest, triton_enable_empty_final_response).

    `forwarded` are header (metadata) pairs to add as string parameters."""
    model_name = msg.model_name
    values = read_parameters(msg.parameters, PROTO_WIRE)

    inputs: list[Tensor] = []
    raw = msg.raw_input_contents
    nraw = len(raw)
    index = 0
    for t in msg.inputs:
        name = t.name
        shm = shared_memory_ref(t.parameters, PROTO_WIRE, name) if len(t.parameters) else None
        if shm is not None:
            if t.HasField("contents"):
                raise InferenceError.invalid(
                    f"unexpected 'content' provided when using shared memory for input tensor '{name}' "
                    f"for model '{model_name}'")
            inputs.append(Tensor(name, t.datatype, tuple(t.shape), shm=shm))
        elif t.HasField("contents"):
            if nraw:
                raise InferenceError.invalid(
                    f"contents field must not be specified when using raw_input_contents for '{name}' "
                    f"for model '{model_name}'")
            inputs.append(Tensor(name, t.datatype, tuple(t.shape), raw=_contents_raw(t, model_name)))
        elif index < nraw:
            inputs.append(Tensor(name, t.datatype, tuple(t.shape), raw=raw[index]))
            index += 1
        else:
            raise InferenceError.invalid(
                f"unable to find data for input tensor '{name}' for model '{model_name}' in request.")

    outputs: list[RequestedOutput] | None = None
    if len(msg.outputs):
        outputs = [requested_output(o.name, o.parameters, PROTO_WIRE) for o in msg.outputs]

    request = build_request(model_name, inputs, values, model_version=msg.model_version, id=msg.id,
                            outputs=outputs, forwarded=forwarded, protocol=protocol)
    return request, values.options.get(EMPTY_FINAL_RESPONSE, False)


# ------------------------------------------------------------------ infer response --

class InferReply:
    """A `ModelInferResponse` without `raw_output_contents`, plus those buffers in output
    order; `encode_infer_reply` writes both as one message."""

    __slots__ = ("head", "raws")

    def __init__(self, head: Any, raws: list) -> None:
        self.head = head
        self.raws = raws

    def to_pb(self) -> Any:
        """The equivalent protobuf message (tests, tools; the server never builds it)."""
        return pb.ModelInferResponse.FromString(encode_infer_reply(self))


class StreamReply:
    """A `ModelStreamInferResponse`: an error message or an `InferReply`."""

    __slots__ = ("error_message", "reply")

    def __init__(self, error_message: str = "", reply: InferReply | None = None) -> None:
        self.error_message = error_message
        self.reply = reply

    def to_pb(self) -> Any:
        return pb.ModelStreamInferResponse.FromString(encode_stream_reply(self))


def _set_param(p: Any, key: str, value: Any) -> None:
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, str):
        p.string_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        raise InferenceError.unsupported(
            "Response parameter of type 'TRITONSERVER_PARAMETER_BYTES' is not currently supported")


def infer_reply(response: InferenceResponse, final: bool | None = None) -> InferReply:
    """An InferenceResponse -> InferReply (Triton's `InferResponseCompleteCommon`).

    With `final` given, the response carries `triton_final_response` (streams)."""
    head = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id)
    if response.parameters:
        params = head.parameters
        for key, value in response.parameters.items():
            _set_param(params[key], key, value)
    if final is not None:
        head.parameters["triton_final_response"].bool_param = final
    raws = []
    add = head.outputs.add
    for t in response.outputs:
        add(name=t.name, datatype=t.datatype, shape=t.shape)
        if t.shm is not None and not t.has_data:
            raws.append(b"")  # written to the client's region; an empty entry keeps the order
        else:
            raws.append(t.raw)
    return InferReply(head, raws)


def empty_reply(request: InferenceRequest, final: bool = True) -> InferReply:
    """The body Triton sends for an empty final response or beside a stream error."""
    head = pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version,
                                 id=request.id)
    head.parameters["triton_final_response"].bool_param = final
    return InferReply(head, [])


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _reply_parts(reply: InferReply) -> tuple[list, int]:
    head = reply.head.SerializeToString()
    parts: list = [head]
    size = len(head)
    for buf in reply.raws:
        n = buf.nbytes if isinstance(buf, memoryview) else len(buf)
        hdr = b"\x32" + _varint(n)  # field 6 (raw_output_contents), length-delimited
        parts.append(hdr)
        parts.append(buf)
        size += len(hdr) + n
    return parts, size


def encode_infer_reply(reply: InferReply) -> bytes:
    """Serializer of ModelInfer responses."""
    if not reply.raws:
        return reply.head.SerializeToString()
    parts, _ = _reply_parts(reply)
    return b"".join(parts)


def encode_stream_reply(reply: StreamReply) -> bytes:
    """Serializer of ModelStreamInfer responses."""
    parts: list = []
    if reply.error_message:
        msg = reply.error_message.encode("utf-8")
        parts += (b"\x0a", _varint(len(msg)), msg)  # field 1 (error_message)
    if reply.reply is not None:
        inner, size = _reply_parts(reply.reply)
        parts += (b"\x12", _varint(size))  # field 2 (infer_response)
        parts += inner
    return b"".join(parts)


# ------------------------------------------------------------------ metadata --

def server_metadata(meta: Any) -> Any:
    return pb.ServerMetadataResponse(name=meta.name, version=meta.version, extensions=list(meta.extensions))


def model_metadata(meta: ModelMetadata) -> Any:
    TM = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=meta.name,
        versions=list(meta.versions),
        platform=meta.platform,
        inputs=[TM(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
        outputs=[TM(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
    )


def model_config(config: Any) -> Any:
    """The model manager's `inference.ModelConfig` (naiad's pool) -> ModelConfigResponse."""
    out = pb.ModelConfigResponse()
    out.config.CopyFrom(config)
    return out


# ------------------------------------------------------------------ statistics --

_U64_MAX = (1 << 64) - 1


def _u64(value: int) -> int:
    """The statistics fields are uint64: one bad figure must not fail the whole reply."""
    return min(max(int(value), 0), _U64_MAX)


def _duration(target: Any, d: Duration) -> None:
    target.count = _u64(d.count)
    target.ns = _u64(d.ns)


def model_statistics(stats: Iterable[ModelStatistics]) -> Any:
    out = pb.ModelStatisticsResponse()
    for s in stats:
        m = out.model_stats.add(name=s.name, version=s.version, last_inference=_u64(s.last_inference),
                                inference_count=_u64(s.inference_count),
                                execution_count=_u64(s.execution_count))
        i, si = m.inference_stats, s.inference_stats
        for field in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
                      "cache_hit", "cache_miss"):
            _duration(getattr(i, field), getattr(si, field))
        for key, rs in s.response_stats.items():
            r = m.response_stats[key]
            for field in ("compute_infer", "compute_output", "success", "fail", "empty_response", "cancel"):
                _duration(getattr(r, field), getattr(rs, field))
        for size in sorted(s.batch_stats):
            bs = s.batch_stats[size]
            b = m.batch_stats.add(batch_size=_u64(bs.batch_size))
            _duration(b.compute_input, bs.compute_input)
            _duration(b.compute_infer, bs.compute_infer)
            _duration(b.compute_output, bs.compute_output)
        for mu in s.memory_usage:
            m.memory_usage.add(type=mu.type, id=mu.id, byte_size=_u64(mu.byte_size))
    return out


# ------------------------------------------------------------------ repository --

def repository_index(entries: Iterable[ModelIndexEntry]) -> Any:
    out = pb.RepositoryIndexResponse()
    for e in entries:
        out.models.add(name=e.name, version=e.version, state=e.state, reason=e.reason)
    return out


def load_parameters(params: Mapping[str, Any]) -> tuple[str | None, dict[str, bytes]]:
    """RepositoryModelLoad parameters -> (config JSON or None, {"file:<path>": bytes})."""
    config: str | None = None
    files: dict[str, bytes] = {}
    for key, p in params.items():
        which = p.WhichOneof("parameter_choice")
        if key == "config":
            if which != "string_param":
                raise InferenceError.invalid(
                    f"invalid value type for load parameter '{key}', expected string_param.")
            config = p.string_param
        elif key.startswith("file:"):
            if which != "bytes_param":
                raise InferenceError.invalid(
                    f"invalid value type for load parameter '{key}', expected bytes_param.")
            files[key] = p.bytes_param
        else:
            raise InferenceError.invalid(f"unrecognized load parameter '{key}'.")
    return config, files


def unload_dependents(params: Mapping[str, Any]) -> bool:
    if "unload_dependents" not in params:
        return False
    p = params["unload_dependents"]
    if p.WhichOneof("parameter_choice") != "bool_param":
        raise InferenceError.invalid(
            "invalid value type for 'unload_dependents' parameter, expected bool_param.")
    return p.bool_param


# ------------------------------------------------------------------ shared memory --

def system_shm_status(regions: Iterable[SystemShmRegion]) -> Any:
    out = pb.SystemSharedMemoryStatusResponse()
    for r in regions:
        out.regions[r.name].CopyFrom(pb.SystemSharedMemoryStatusResponse.RegionStatus(
            name=r.name, key=r.key, offset=r.offset, byte_size=r.byte_size))
    return out


def cuda_shm_status(regions: Iterable[CudaShmRegion]) -> Any:
    out = pb.CudaSharedMemoryStatusResponse()
    for r in regions:
        out.regions[r.name].CopyFrom(pb.CudaSharedMemoryStatusResponse.RegionStatus(
            name=r.name, device_id=r.device_id, byte_size=r.byte_size))
    return out


# ------------------------------------------------------------------ trace and log settings --

def trace_updates(settings: Mapping[str, Any]) -> dict[str, Any]:
    """TraceSettingRequest settings -> updates in the HTTP JSON's shape: no value clears
    (None), `trace_level` stays a list, one value of another setting is its string and
    several stay a list (the tracing service refuses them in Triton's order of keys)."""
    updates: dict[str, Any] = {}
    for key, sv in settings.items():
        values = list(sv.value)
        if not values:
            updates[key] = None
        elif key == "trace_level" or len(values) > 1:
            updates[key] = values
        else:
            updates[key] = values[0]
    return updates


def trace_settings(reply: Mapping[str, Any]) -> Any:
    out = pb.TraceSettingResponse()
    for key, value in reply.items():
        sv = out.settings[key]
        if isinstance(value, (list, tuple)):
            sv.value.extend(str(v) for v in value)
        elif value is not None:
            sv.value.append(str(value))
    return out


def log_updates(settings: Mapping[str, Any]) -> dict[str, Any]:
    """LogSettingsRequest settings -> each one's oneof value (None when none is set); the
    kernel checks them with the gRPC front end's words."""
    updates: dict[str, Any] = {}
    for key, sv in settings.items():
        which = sv.WhichOneof("parameter_choice")
        updates[key] = None if which is None else getattr(sv, which)
    return updates


def log_settings(reply: Mapping[str, Any]) -> Any:
    out = pb.LogSettingsResponse()
    for key, value in reply.items():
        sv = out.settings[key]
        if isinstance(value, bool):
            sv.bool_param = value
        elif isinstance(value, int):
            sv.uint32_param = value % 2**32  # Triton's int32 verbose level, sent as uint32
        else:
            sv.string_param = "" if value is None else str(value)
    return out
