"""naiad's protos against tritonclient 2.45 (Triton 24.04): same wire, same text format.

The oracle is the set of descriptors compiled into the tritonclient wheel
(`tritonclient.grpc.model_config_pb2`, `tritonclient.grpc.service_pb2`). Every fact that
decides how bytes or config.pbtxt text are read is flattened into a `{key: value}` map
for both sides, and the two maps are diffed; any drift, in either direction, fails with
a line per difference.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent import futures

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory, text_format

from naiad.protos import _pool
from naiad.protos import grpc_service_pb2 as ours_svc
from naiad.protos import model_config_pb2 as ours_mc

triton_svc = pytest.importorskip("tritonclient.grpc.service_pb2")
triton_mc = pytest.importorskip("tritonclient.grpc.model_config_pb2")

SERVICE = "inference.GRPCInferenceService"

# ------------------------------------------------------------ flattening --

_TYPE = descriptor_pb2.FieldDescriptorProto.Type.Name
_LABEL = descriptor_pb2.FieldDescriptorProto.Label.Name


def _field_facts(f) -> str:
    if f.message_type is not None:
        target = f.message_type.full_name
    elif f.enum_type is not None:
        target = f.enum_type.full_name
    else:
        target = "-"
    oneof = f.containing_oneof.name if f.containing_oneof is not None else "-"
    opts = f.GetOptions().SerializeToString() if f.has_options else b""
    return (
        f"number={f.number} type={_TYPE(f.type)} label={_LABEL(f.label)} "
        f"target={target} oneof={oneof} presence={f.has_presence} "
        f"json={f.json_name} options={opts.hex() or '-'}"
    )


def _flatten_enum(e, out: dict[str, str]) -> None:
    key = f"enum {e.full_name}"
    out[key] = f"values={len(e.values)}"
    for v in e.values:
        out[f"{key} value {v.name}"] = f"number={v.number}"


def _flatten_message(m, out: dict[str, str]) -> None:
    key = f"message {m.full_name}"
    is_map = m.GetOptions().map_entry if m.has_options else False
    out[key] = f"fields={len(m.fields)} oneofs={len(m.oneofs)} map_entry={is_map}"
    for f in m.fields:
        out[f"{key} field {f.name}"] = _field_facts(f)
    for o in m.oneofs:
        out[f"{key} oneof {o.name}"] = "members=" + ",".join(sorted(f.name for f in o.fields))
    for rng in getattr(m, "extension_ranges", ()):
        out[f"{key} extension_range {rng}"] = "-"
    for e in m.enum_types:
        _flatten_enum(e, out)
    for nested in m.nested_types:
        _flatten_message(nested, out)


def flatten(file_desc) -> dict[str, str]:
    """Every wire/text-relevant fact of one .proto file, keyed for a readable diff."""
    out: dict[str, str] = {}
    deps = ",".join(sorted(d.name for d in file_desc.dependencies)) or "-"
    out[f"file {file_desc.name}"] = f"package={file_desc.package} deps={deps}"
    for e in file_desc.enum_types_by_name.values():
        _flatten_enum(e, out)
    for m in file_desc.message_types_by_name.values():
        _flatten_message(m, out)
    for s in file_desc.services_by_name.values():
        skey = f"service {s.full_name}"
        out[skey] = f"methods={len(s.methods)}"
        for meth in s.methods:
            out[f"{skey} rpc {meth.name}"] = (
                f"in={meth.input_type.full_name} out={meth.output_type.full_name} "
                f"client_streaming={meth.client_streaming} server_streaming={meth.server_streaming}"
            )
    return out


def diff(ours: dict[str, str], theirs: dict[str, str]) -> list[str]:
    lines = []
    for key in sorted(ours.keys() | theirs.keys()):
        a, b = ours.get(key), theirs.get(key)
        if a == b:
            continue
        if b is None:
            lines.append(f"+ only in naiad:       {key}: {a}")
        elif a is None:
            lines.append(f"- only in tritonclient: {key}: {b}")
        else:
            lines.append(f"~ differs:             {key}\n      naiad:       {a}\n      tritonclient: {b}")
    return lines


def _assert_same(ours_file, theirs_file) -> None:
    problems = diff(flatten(ours_file), flatten(theirs_file))
    assert not problems, (
        f"{ours_file.name}: naiad's schema drifted from tritonclient's "
        f"({len(problems)} difference(s)):\n" + "\n".join(problems)
    )


# ------------------------------------------------------- descriptor tests --

# Fields naiad takes from Triton releases after 24.04, on purpose (docs/compatibility.md):
# config.pbtxt's `model_metrics` (r24.11, field 26: per-model histogram buckets). They are
# additions only, so a 24.04 config or client never sees a difference.
LATER_TRITON_MESSAGES = ("message inference.ModelMetrics",)
LATER_TRITON_FIELDS = {"message inference.ModelConfig": ("model_metrics",)}


def without_later_triton(flat: dict[str, str]) -> dict[str, str]:
    """`flat` as it would be without the later-Triton additions above."""
    out = {k: v for k, v in flat.items() if not k.startswith(LATER_TRITON_MESSAGES)}
    for message, fields in LATER_TRITON_FIELDS.items():
        for name in fields:
            out.pop(f"{message} field {name}", None)
        count = int(out[message].split()[0].removeprefix("fields="))
        out[message] = out[message].replace(f"fields={count}", f"fields={count - len(fields)}", 1)
    return out


def test_model_config_descriptors_match_tritonclient():
    problems = diff(without_later_triton(flatten(ours_mc.DESCRIPTOR)), flatten(triton_mc.DESCRIPTOR))
    assert not problems, "model_config.proto drifted from tritonclient's:\n" + "\n".join(problems)
    assert "message inference.ModelConfig field model_metrics" in flatten(ours_mc.DESCRIPTOR)


def test_grpc_service_descriptors_match_tritonclient():
    _assert_same(ours_svc.DESCRIPTOR, triton_svc.DESCRIPTOR)


def _count(flat: dict[str, str], kind: str) -> int:
    return sum(1 for k in flat if k.startswith(kind + " ") and k.count(" ") == 1)


def test_comparison_covers_the_whole_schema():
    """Guards the comparator itself: it must actually see nested, map-entry and RPC facts."""
    flat = {**without_later_triton(flatten(ours_mc.DESCRIPTOR)), **flatten(ours_svc.DESCRIPTOR)}
    messages = _count(flat, "message")
    enums = _count(flat, "enum")
    rpcs = sum(1 for k in flat if " rpc " in k)
    # Triton 24.04: 126 message types (map entries included), 9 enums, 20 RPCs.
    assert (messages, enums, rpcs) == (126, 9, 20)
    # nested, doubly nested and synthesized map-entry types are all included
    assert "message inference.ModelOptimizationPolicy.Cuda.GraphSpec.LowerBound.InputEntry" in flat
    assert "map_entry=True" in flat["message inference.ModelConfig.ParametersEntry"]
    assert "enum inference.ModelInstanceGroup.SecondaryDevice.SecondaryDeviceKind" in flat
    assert (
        flat[f"service {SERVICE} rpc ModelStreamInfer"]
        == "in=inference.ModelInferRequest out=inference.ModelStreamInferResponse "
        "client_streaming=True server_streaming=True"
    )
    print(f"\ncompared {messages} messages, {enums} enums, {rpcs} RPCs")


def _drifted_pool(edit) -> descriptor_pool.DescriptorPool:
    """A fresh pool holding naiad's two files, with `edit` applied to grpc_service.proto."""
    pool = descriptor_pool.DescriptorPool()
    mc = descriptor_pb2.FileDescriptorProto.FromString(ours_mc.DESCRIPTOR.serialized_pb)
    svc = descriptor_pb2.FileDescriptorProto.FromString(ours_svc.DESCRIPTOR.serialized_pb)
    edit(svc)
    pool.Add(mc)
    pool.Add(svc)
    return pool


def _msg(fdp, name):
    return next(m for m in fdp.message_type if m.name == name)


@pytest.mark.parametrize(
    "edit, expect",
    [
        # a field renumbered
        (lambda p: setattr(_msg(p, "ModelInferRequest").field[-1], "number", 8),
         "~ differs:             message inference.ModelInferRequest field raw_input_contents"),
        # a field naiad has but Triton does not
        (lambda p: _msg(p, "ServerLiveResponse").field.add(
            name="uptime", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL, json_name="uptime"),
         "+ only in naiad:       message inference.ServerLiveResponse field uptime"),
        # a field Triton has but naiad dropped
        (lambda p: _msg(p, "ModelStatistics").field.pop(),
         "- only in tritonclient: message inference.ModelStatistics field response_stats"),
        # repeated-ness changed
        (lambda p: setattr(_msg(p, "ModelInferRequest").field[-1], "label",
                           descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL),
         "message inference.ModelInferRequest field raw_input_contents"),
        # streaming dropped from an RPC
        (lambda p: setattr(next(m for m in p.service[0].method if m.name == "ModelStreamInfer"),
                           "client_streaming", False),
         f"service {SERVICE} rpc ModelStreamInfer"),
    ],
    ids=["renumbered", "extra-field", "missing-field", "label", "streaming"],
)
def test_comparator_reports_drift(edit, expect):
    pool = _drifted_pool(edit)
    drifted = pool.FindFileByName("grpc_service.proto")
    problems = diff(flatten(drifted), flatten(triton_svc.DESCRIPTOR))
    assert problems, "comparator missed an injected drift"
    assert any(expect in line for line in problems), "\n".join(problems)


# -------------------------------------------------------- config.pbtxt --

DYNAMIC_BATCHING_PBTXT = r"""
name: "resnet50"
platform: "onnxruntime_onnx"
backend: "onnxruntime"
runtime: ""
max_batch_size: 32
version_policy: { latest: { num_versions: 2 } }
input [
  {
    name: "input"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
  },
  {
    name: "scale"
    data_type: TYPE_FP16
    dims: [ 1 ]
    reshape: { shape: [ ] }
    optional: true
    allow_ragged_batch: false
  }
]
output [
  {
    name: "probs"
    data_type: TYPE_FP32
    dims: [ 1000 ]
    label_filename: "labels.txt"
  }
]
batch_input [
  {
    kind: BATCH_ACCUMULATED_ELEMENT_COUNT
    target_name: "offsets"
    data_type: TYPE_INT32
    source_input: "input"
  }
]
batch_output [
  {
    target_name: "probs"
    kind: BATCH_SCATTER_WITH_INPUT_SHAPE
    source_input: "input"
  }
]
instance_group [
  {
    name: "gpu_group"
    count: 2
    kind: KIND_GPU
    gpus: [ 0, 1 ]
    rate_limiter {
      resources [ { name: "R1" count: 4 }, { name: "R2" global: true count: 2 } ]
      priority: 2
    }
  },
  {
    count: 1
    kind: KIND_CPU
    passive: true
    host_policy: "numa0"
  }
]
optimization {
  graph { level: 1 }
  priority: PRIORITY_MAX
  cuda {
    graphs: true
    busy_wait_events: true
    output_copy_stream: true
    graph_spec [
      {
        batch_size: 8
        input { key: "input" value: { dim: [ 3, 224, 224 ] } }
        graph_lower_bound {
          batch_size: 1
          input { key: "input" value: { dim: [ 3, 224, 224 ] } }
        }
      }
    ]
  }
  execution_accelerators {
    gpu_execution_accelerator : [
      {
        name : "tensorrt"
        parameters { key: "precision_mode" value: "FP16" }
        parameters { key: "max_workspace_size_bytes" value: "1073741824" }
      }
    ]
    cpu_execution_accelerator : [ { name : "openvino" } ]
  }
  input_pinned_memory { enable: false }
  output_pinned_memory { enable: true }
  gather_kernel_buffer_threshold: 4
  eager_batching: true
}
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
  preserve_ordering: true
  priority_levels: 2
  default_priority_level: 1
  default_queue_policy {
    timeout_action: DELAY
    default_timeout_microseconds: 5000
    allow_timeout_override: true
    max_queue_size: 64
  }
  priority_queue_policy {
    key: 1
    value: { timeout_action: REJECT max_queue_size: 8 }
  }
}
default_model_filename: "model.onnx"
cc_model_filenames { key: "8.0" value: "model_a100.plan" }
metric_tags { key: "team" value: "vision" }
parameters { key: "intra_op_thread_count" value: { string_value: "4" } }
parameters [
  { key: "enable_mem_arena" value: { string_value: "1" } }
]
model_warmup [
  {
    name: "zeros"
    batch_size: 8
    count: 2
    inputs { key: "input" value: { data_type: TYPE_FP32 dims: [ 3, 224, 224 ] zero_data: true } }
  },
  {
    name: "from_file"
    batch_size: 1
    inputs { key: "input" value: { data_type: TYPE_FP32 dims: [ 3, 224, 224 ] input_data_file: "raw.bin" } }
  }
]
model_operations { op_library_filename: [ "libcustom_ops.so" ] }
model_transaction_policy { decoupled: false }
model_repository_agents {
  agents [ { name: "checksum" parameters { key: "MD5:model.onnx" value: "abc123" } } ]
}
response_cache { enable: true }
"""

SEQUENCE_PBTXT = r"""
name: "stateful_lstm"
backend: "python"
max_batch_size: 8
version_policy: { specific: { versions: [ 1, 3 ] } }
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ -1 ] } ]
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  control_input [
    {
      name: "START"
      control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ]
    },
    {
      name: "READY"
      control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ]
    },
    {
      name: "END"
      control [ { kind: CONTROL_SEQUENCE_END bool_false_true: [ false, true ] } ]
    },
    {
      name: "CORRID"
      control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ]
    }
  ]
  state [
    {
      input_name: "INPUT_STATE"
      output_name: "OUTPUT_STATE"
      data_type: TYPE_FP32
      dims: [ 1, 256 ]
      initial_state: {
        name: "zeros"
        data_type: TYPE_FP32
        dims: [ 1, 256 ]
        zero_data: true
      }
      use_same_buffer_for_input_output: true
      use_growable_memory: true
    }
  ]
  oldest {
    max_candidate_sequences: 4
    preferred_batch_size: [ 2, 4 ]
    max_queue_delay_microseconds: 100
    preserve_ordering: true
  }
  iterative_sequence: false
}
instance_group [ { count: 1 kind: KIND_CPU } ]
model_transaction_policy { decoupled: true }
"""

SEQUENCE_DIRECT_PBTXT = r"""
name: "stateful_direct"
platform: "tensorrt_plan"
max_batch_size: 4
version_policy: { all: { } }
input [ { name: "X" data_type: TYPE_BF16 dims: [ 16 ] is_shape_tensor: false } ]
output [ { name: "Y" data_type: TYPE_BF16 dims: [ 16 ] is_shape_tensor: false } ]
sequence_batching {
  direct { max_queue_delay_microseconds: 50 minimum_slot_utilization: 0.5 }
  state [
    {
      input_name: "S_IN"
      output_name: "S_OUT"
      data_type: TYPE_INT64
      dims: [ 1 ]
      initial_state [ { name: "init" data_type: TYPE_INT64 dims: [ 1 ] data_file: "init.bin" } ]
    }
  ]
}
instance_group [
  {
    kind: KIND_GPU
    gpus: [ 0 ]
    profile: [ "0", "1" ]
    secondary_devices [ { kind: KIND_NVDLA device_id: 0 } ]
  }
]
"""

ENSEMBLE_PBTXT = r"""
name: "pipeline"
platform: "ensemble"
max_batch_size: 16
input [ { name: "RAW" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "SCORES" data_type: TYPE_FP32 dims: [ 1000 ] } ]
ensemble_scheduling {
  step [
    {
      model_name: "preprocess"
      model_version: -1
      input_map { key: "IN" value: "RAW" }
      output_map { key: "OUT" value: "pixels" }
    },
    {
      model_name: "resnet50"
      model_version: 2
      model_namespace: "vision"
      input_map { key: "input" value: "pixels" }
      output_map { key: "probs" value: "SCORES" }
    }
  ]
}
parameters: { key: "note" value: { string_value: "ensembles carry no instance groups" } }
response_cache { enable: false }
"""

CONFIGS = {
    "dynamic_batching": DYNAMIC_BATCHING_PBTXT,
    "sequence_oldest": SEQUENCE_PBTXT,
    "sequence_direct": SEQUENCE_DIRECT_PBTXT,
    "ensemble": ENSEMBLE_PBTXT,
}


@pytest.fixture(params=sorted(CONFIGS), ids=sorted(CONFIGS))
def pbtxt(request):
    return CONFIGS[request.param]


def test_config_pbtxt_parses(pbtxt):
    cfg = text_format.Parse(pbtxt, ours_mc.ModelConfig())
    assert cfg.name
    assert cfg.WhichOneof("scheduling_choice") in {
        "dynamic_batching", "sequence_batching", "ensemble_scheduling"}


def test_config_pbtxt_fields_land_where_triton_puts_them():
    dyn = text_format.Parse(DYNAMIC_BATCHING_PBTXT, ours_mc.ModelConfig())
    assert dyn.version_policy.WhichOneof("policy_choice") == "latest"
    assert dyn.dynamic_batching.priority_queue_policy[1].max_queue_size == 8
    assert dyn.instance_group[0].kind == ours_mc.ModelInstanceGroup.KIND_GPU
    assert list(dyn.instance_group[0].gpus) == [0, 1]
    assert getattr(dyn.instance_group[0].rate_limiter.resources[1], "global") is True
    assert dyn.parameters["intra_op_thread_count"].string_value == "4"
    assert dyn.parameters["enable_mem_arena"].string_value == "1"
    assert dyn.optimization.cuda.graph_spec[0].graph_lower_bound.input["input"].dim == [3, 224, 224]
    assert dyn.model_warmup[1].inputs["input"].WhichOneof("input_data_type") == "input_data_file"
    assert dyn.response_cache.enable is True

    seq = text_format.Parse(SEQUENCE_PBTXT, ours_mc.ModelConfig())
    sb = seq.sequence_batching
    assert [c.name for c in sb.control_input] == ["START", "READY", "END", "CORRID"]
    assert list(sb.control_input[2].control[0].bool_false_true) == [False, True]
    assert sb.control_input[3].control[0].data_type == ours_mc.TYPE_UINT64
    assert sb.state[0].initial_state[0].WhichOneof("state_data") == "zero_data"
    assert sb.WhichOneof("strategy_choice") == "oldest"
    assert seq.model_transaction_policy.decoupled is True
    assert seq.version_policy.specific.versions == [1, 3]

    ens = text_format.Parse(ENSEMBLE_PBTXT, ours_mc.ModelConfig())
    assert ens.ensemble_scheduling.step[0].model_version == -1
    assert ens.ensemble_scheduling.step[1].output_map["probs"] == "SCORES"


def test_two_schedulers_are_rejected_like_triton():
    text = 'name: "x" dynamic_batching { } sequence_batching { }'
    for cls in (ours_mc.ModelConfig, triton_mc.ModelConfig):
        with pytest.raises(text_format.ParseError, match="oneof"):
            text_format.Parse(text, cls())


def test_config_pbtxt_text_round_trip_matches_tritonclient(pbtxt):
    ours = text_format.Parse(pbtxt, ours_mc.ModelConfig())
    theirs = text_format.Parse(pbtxt, triton_mc.ModelConfig())
    assert text_format.MessageToString(ours) == text_format.MessageToString(theirs)
    # and what naiad prints, Triton reads back unchanged
    reparsed = text_format.Parse(text_format.MessageToString(ours), triton_mc.ModelConfig())
    assert reparsed == theirs


# ----------------------------------------------------------- wire tests --


def _unknown_field_paths(msg, path="") -> list[str]:
    """Paths of messages that kept unknown fields after parsing (should be none)."""
    from google.protobuf.unknown_fields import UnknownFieldSet

    found = [path or "<root>"] if len(UnknownFieldSet(msg)) else []
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        if fd.message_type.GetOptions().map_entry:
            if fd.message_type.fields_by_name["value"].message_type is None:
                continue
            items = [(f"{path}.{fd.name}[{k!r}]", v) for k, v in value.items()]
        elif fd.label == fd.LABEL_REPEATED:
            items = [(f"{path}.{fd.name}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(f"{path}.{fd.name}", value)]
        for p, v in items:
            found += _unknown_field_paths(v, p)
    return found


def _cross(src, dst_cls):
    """Serialize `src`, parse it as `dst_cls`; check nothing was lost or left unknown."""
    wire = src.SerializeToString(deterministic=True)
    dst = dst_cls.FromString(wire)
    assert _unknown_field_paths(dst) == []
    assert dst.SerializeToString(deterministic=True) == wire
    assert json_format.MessageToDict(dst) == json_format.MessageToDict(src)
    return dst


def _infer_request(mod):
    req = mod.ModelInferRequest(model_name="resnet50", model_version="2", id="req-42")
    req.parameters["sequence_id"].uint64_param = 2**63 + 5
    req.parameters["sequence_start"].bool_param = True
    req.parameters["priority"].int64_param = -3
    req.parameters["timeout"].double_param = 1.5
    req.parameters["tag"].string_param = "a/b"
    a = req.inputs.add(name="INPUT0", datatype="FP32", shape=[2, 3])
    a.parameters["shared_memory_region"].string_param = "none"
    req.inputs.add(name="INPUT1", datatype="BYTES", shape=[1])
    req.outputs.add(name="OUTPUT0").parameters["classification"].int64_param = 3
    req.raw_input_contents.append(bytes(range(24)))
    req.raw_input_contents.append(b"\x05\x00\x00\x00hello")
    return req


def test_infer_request_naiad_to_tritonclient():
    theirs = _cross(_infer_request(ours_svc), triton_svc.ModelInferRequest)
    assert theirs.raw_input_contents[0] == bytes(range(24))
    assert theirs.parameters["sequence_id"].uint64_param == 2**63 + 5
    assert theirs.inputs[1].datatype == "BYTES"


def test_infer_request_tritonclient_to_naiad():
    ours = _cross(_infer_request(triton_svc), ours_svc.ModelInferRequest)
    assert ours.raw_input_contents[1] == b"\x05\x00\x00\x00hello"
    assert ours.parameters["priority"].WhichOneof("parameter_choice") == "int64_param"
    assert list(ours.inputs[0].shape) == [2, 3]


def test_infer_request_typed_contents_both_ways():
    for src_mod, dst_mod in ((ours_svc, triton_svc), (triton_svc, ours_svc)):
        req = src_mod.ModelInferRequest(model_name="m")
        c = req.inputs.add(name="x", datatype="INT64", shape=[3]).contents
        c.int64_contents.extend([1, -2, 3])
        c.bool_contents.append(True)
        c.int_contents.append(-7)
        c.uint_contents.append(7)
        c.uint64_contents.append(2**64 - 1)
        c.fp32_contents.append(0.25)
        c.fp64_contents.append(-0.5)
        c.bytes_contents.append(b"\x00\xff")
        _cross(req, dst_mod.ModelInferRequest)


def _stream_response(mod):
    resp = mod.ModelStreamInferResponse(error_message="")
    r = resp.infer_response
    r.model_name, r.model_version, r.id = "m", "1", "x"
    r.parameters["triton_final_response"].bool_param = True
    r.outputs.add(name="OUT", datatype="INT32", shape=[2]).parameters["binary_data_size"].int64_param = 8
    r.raw_output_contents.append(b"\x01\x00\x00\x00\x02\x00\x00\x00")
    return resp


def _statistics(mod):
    resp = mod.ModelStatisticsResponse()
    s = resp.model_stats.add(name="m", version="1", last_inference=1700000000000,
                             inference_count=10, execution_count=4)
    s.inference_stats.success.count = 10
    s.inference_stats.cache_miss.ns = 99
    s.batch_stats.add(batch_size=4).compute_infer.ns = 123
    s.memory_usage.add(type="GPU", id=0, byte_size=1 << 20)
    s.response_stats["0"].cancel.count = 1
    s.response_stats["0"].empty_response.ns = 5
    return resp


def _config_response(mod):
    resp = mod.ModelConfigResponse()
    text_format.Parse(DYNAMIC_BATCHING_PBTXT, resp.config)
    return resp


def _repo_load(mod):
    req = mod.RepositoryModelLoadRequest(repository_name="", model_name="m")
    req.parameters["config"].string_param = '{"backend": "python"}'
    req.parameters["file:1/model.py"].bytes_param = b"print('hi')\n"
    return req


def _log_settings(mod):
    req = mod.LogSettingsRequest()
    req.settings["log_verbose_level"].uint32_param = 2
    req.settings["log_info"].bool_param = True
    req.settings["log_format"].string_param = "ISO8601"
    return req


def _trace_settings(mod):
    req = mod.TraceSettingRequest(model_name="m")
    req.settings["trace_level"].value.extend(["TIMESTAMPS", "TENSORS"])
    req.settings["trace_rate"].value.append("1000")
    return req


def _shm(mod):
    resp = mod.CudaSharedMemoryStatusResponse()
    resp.regions["r0"].device_id = 1
    resp.regions["r0"].byte_size = 64
    return resp


BUILDERS = {
    "ModelStreamInferResponse": _stream_response,
    "ModelStatisticsResponse": _statistics,
    "ModelConfigResponse": _config_response,
    "RepositoryModelLoadRequest": _repo_load,
    "LogSettingsRequest": _log_settings,
    "TraceSettingRequest": _trace_settings,
    "CudaSharedMemoryStatusResponse": _shm,
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("direction", ["naiad->tritonclient", "tritonclient->naiad"])
def test_messages_cross_parse(name, direction):
    src_mod, dst_mod = (ours_svc, triton_svc) if direction.startswith("naiad") else (triton_svc, ours_svc)
    _cross(BUILDERS[name](src_mod), getattr(dst_mod, name))


def test_model_config_cross_parse_both_ways(pbtxt):
    ours = text_format.Parse(pbtxt, ours_mc.ModelConfig())
    theirs = _cross(ours, triton_mc.ModelConfig)
    back = _cross(theirs, ours_mc.ModelConfig)
    assert back == ours


# ------------------------------------------------------ process coexistence --


def test_naiad_descriptors_live_in_private_pool():
    assert ours_svc.DESCRIPTOR.pool is _pool.POOL
    assert ours_mc.DESCRIPTOR.pool is _pool.POOL
    default = descriptor_pool.Default()
    assert default.FindMessageTypeByName("inference.ModelConfig") is triton_mc.ModelConfig.DESCRIPTOR
    assert _pool.POOL.FindMessageTypeByName("inference.ModelConfig") is ours_mc.ModelConfig.DESCRIPTOR
    assert ours_svc.ModelConfigResponse.DESCRIPTOR.fields_by_name["config"].message_type \
        is ours_mc.ModelConfig.DESCRIPTOR
    # classes built from the private pool are naiad's own
    cls = message_factory.GetMessageClass(_pool.POOL.FindMessageTypeByName("inference.ModelInferRequest"))
    assert cls is ours_svc.ModelInferRequest


@pytest.mark.parametrize("order", ["naiad-first", "tritonclient-first"])
def test_both_modules_import_in_one_process(order):
    naiad = "from naiad.protos import model_config_pb2, grpc_service_pb2, grpc_service_pb2_grpc"
    triton = "from tritonclient.grpc import model_config_pb2 as t_mc, service_pb2 as t_svc, service_pb2_grpc"
    first, second = (naiad, triton) if order == "naiad-first" else (triton, naiad)
    code = textwrap.dedent(f"""
        {first}
        {second}
        import tritonclient.grpc
        assert grpc_service_pb2.ModelInferRequest is not t_svc.ModelInferRequest
        assert grpc_service_pb2.ModelInferRequest.DESCRIPTOR.full_name == "inference.ModelInferRequest"
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


# ---------------------------------------------- a real client on the wire --


def test_stock_tritonclient_talks_to_naiad_stubs():
    """tritonclient's InferenceServerClient against a server built from naiad's generated stubs."""
    grpc = pytest.importorskip("grpc")
    np = pytest.importorskip("numpy")
    tgrpc = pytest.importorskip("tritonclient.grpc")
    from naiad.protos import grpc_service_pb2_grpc as ours_grpc

    class Echo(ours_grpc.GRPCInferenceServiceServicer):
        def ServerLive(self, request, context):
            return ours_svc.ServerLiveResponse(live=True)

        def ModelInfer(self, request, context):
            resp = ours_svc.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
            for inp, raw in zip(request.inputs, request.raw_input_contents):
                resp.outputs.add(name=inp.name.replace("INPUT", "OUTPUT"), datatype=inp.datatype, shape=inp.shape)
                resp.raw_output_contents.append(raw)
            return resp

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    ours_grpc.add_GRPCInferenceServiceServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        client = tgrpc.InferenceServerClient(url=f"127.0.0.1:{port}")
        assert client.is_server_live()
        data = np.arange(6, dtype=np.float32).reshape(2, 3)
        inp = tgrpc.InferInput("INPUT0", [2, 3], "FP32")
        inp.set_data_from_numpy(data)
        result = client.infer("echo", [inp], request_id="r1")
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
        assert result.get_response().id == "r1"
        client.close()
    finally:
        server.stop(None)
