"""Triton's `ModelConfig`: parse config.pbtxt / JSON, fill Triton's defaults, render JSON.

Parsing goes through protobuf's `text_format` and `json_format` against naiad's own
protos; an error names the file, the line and the field as protobuf reports them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from google.protobuf import descriptor as _descriptor
from google.protobuf import json_format, text_format

from naiad.protos import model_config_pb2 as mc

from .errors import InferenceError

ModelConfig = mc.ModelConfig

_INT64_TYPES = {
    _descriptor.FieldDescriptor.TYPE_INT64,
    _descriptor.FieldDescriptor.TYPE_UINT64,
    _descriptor.FieldDescriptor.TYPE_SINT64,
    _descriptor.FieldDescriptor.TYPE_FIXED64,
    _descriptor.FieldDescriptor.TYPE_SFIXED64,
}

# Triton's default for sequence_batching.max_sequence_idle_microseconds (core constants.h).
SEQUENCE_IDLE_DEFAULT_MICROSECONDS = 1_000_000


def parse_text(text: str, source: str = "config.pbtxt") -> Any:
    """Parse protobuf text; raises InferenceError(INVALID_ARG) naming source, line, field."""
    config = ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise InferenceError.invalid(f"failed to parse {source}: {exc}") from None
    except ValueError as exc:  # a value protobuf's parser lets through but the field refuses (enum number)
        raise InferenceError.invalid(f"failed to parse {source}: {exc}") from None
    return config


def parse_file(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InferenceError.invalid(f"failed to read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # protobuf's text format is UTF-8
        raise InferenceError.invalid(f"failed to parse {path}: invalid UTF-8 at byte {exc.start}") from None
    return parse_text(text, str(path))


def parse_json(text: str | bytes, source: str = "config") -> Any:
    """A ModelConfig from JSON (the load API's `config` parameter, auto-complete output)."""
    config = ModelConfig()
    try:
        json_format.Parse(text, config, ignore_unknown_fields=False)
    except SystemError:  # upb looking up a field name that holds a lone surrogate ("\ud800")
        raise InferenceError.invalid(f"failed to parse {source} as a model config: a field name is not "
                                     "valid UTF-8") from None
    except UnicodeDecodeError as exc:
        raise InferenceError.invalid(f"failed to parse {source} as a model config: invalid UTF-8 at byte "
                                     f"{exc.start}") from None
    except (json_format.ParseError, ValueError) as exc:  # ValueError: a value a field refuses
        raise InferenceError.invalid(f"failed to parse {source} as a model config: {exc}") from None
    except (TypeError, AttributeError):  # protobuf's parser on JSON that is not an object ("0", "[]")
        raise InferenceError.invalid(f"failed to parse {source} as a model config: expected a JSON object") from None
    return config


def _fix_ints(message_descriptor: Any, data: Any) -> Any:
    """protobuf's JSON prints 64-bit integers as strings; Triton prints them as numbers."""
    if not isinstance(data, dict):
        return data
    for field in message_descriptor.fields:
        name = field.name
        if name not in data:
            continue
        value = data[name]
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.message_type is not None:
                    for k in value:
                        value[k] = _fix_ints(value_field.message_type, value[k])
                elif value_field.type in _INT64_TYPES:
                    for k in value:
                        value[k] = int(value[k])
            elif field.label == field.LABEL_REPEATED:
                data[name] = [_fix_ints(field.message_type, v) for v in value]
            else:
                data[name] = _fix_ints(field.message_type, value)
        elif field.type in _INT64_TYPES:
            data[name] = [int(v) for v in value] if isinstance(value, list) else int(value)
    return data


def to_dict(config: Any) -> dict[str, Any]:
    """Triton's JSON rendering: original field names, every field printed, enums as
    names, 64-bit integers as numbers."""
    try:
        data = json_format.MessageToDict(
            config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    except TypeError:  # protobuf < 5 names the option differently
        data = json_format.MessageToDict(
            config, preserving_proto_field_name=True, including_default_value_fields=True
        )
    return _fix_ints(config.DESCRIPTOR, data)


def config_to_json(config: Any) -> str:
    return json.dumps(to_dict(config))


# ------------------------------------------------------------------ normalisation --


def is_decoupled(config: Any) -> bool:
    return config.HasField("model_transaction_policy") and config.model_transaction_policy.decoupled


def normalize(config: Any, model_name: str, has_gpu: bool = False) -> Any:
    """Fill Triton's defaults in place (and return it): name, version policy, backend from
    platform, sequence idle time, and (except for ensembles) instance groups with names and
    kinds and pinned-memory optimization."""
    if not config.name:
        config.name = model_name
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    elif config.version_policy.HasField("latest") and config.version_policy.latest.num_versions == 0:
        config.version_policy.latest.num_versions = 1
    if not config.backend and config.platform:
        config.backend = PLATFORM_BACKENDS.get(config.platform, "")
    if config.HasField("sequence_batching") and config.sequence_batching.max_sequence_idle_microseconds == 0:
        config.sequence_batching.max_sequence_idle_microseconds = SEQUENCE_IDLE_DEFAULT_MICROSECONDS
    if config.HasField("ensemble_scheduling") or config.platform == "ensemble":
        return config  # as Triton: an ensemble gets no instance groups and no optimization
    if not config.instance_group:
        config.instance_group.add()
    for idx, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{config.name}_{idx}"
        if group.count < 1:
            group.count = 1
        if group.kind == mc.ModelInstanceGroup.KIND_AUTO:
            group.kind = mc.ModelInstanceGroup.KIND_GPU if has_gpu else mc.ModelInstanceGroup.KIND_CPU
        if group.kind == mc.ModelInstanceGroup.KIND_GPU and not group.gpus and has_gpu:
            group.gpus.append(0)
    if not config.HasField("optimization"):
        config.optimization.input_pinned_memory.enable = True
        config.optimization.output_pinned_memory.enable = True
    return config


# `platform` names and the backend that serves them (Triton's mapping).
PLATFORM_BACKENDS = {
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
    "tensorrt_plan": "tensorrt",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow",
    "ensemble": "",
}


def kind_name(kind: int) -> str:
    """KIND_CPU -> "CPU" (the Python backend's model_instance_kind)."""
    return mc.ModelInstanceGroup.Kind.Name(kind).replace("KIND_", "")
