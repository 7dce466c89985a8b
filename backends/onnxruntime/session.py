"""SessionOptions, execution providers and run options from a model config, with the keys
Triton's onnxruntime backend reads:

  optimization { graph { level } }   -1 basic, 1 basic + extended, 2 none; else all (default)
  parameters   intra_op_thread_count, inter_op_thread_count (0: ORT's default),
               execution_mode (0 sequential, 1 parallel), enable_mem_arena,
               enable_mem_pattern, session.use_device_allocator_for_initializers,
               memory.enable_memory_arena_shrinkage (a run option),
               cudnn_conv_algo_search, gpu_mem_limit, arena_extend_strategy,
               do_copy_in_default_stream (CUDA provider options, the deprecated spelling)
  optimization { execution_accelerators { gpu_execution_accelerator [{ name: "cuda" |
               "tensorrt", parameters }] cpu_execution_accelerator [{ name: "openvino" }] } }

`--backend-config=onnxruntime,intra_op_thread_count=N` (and inter_op_thread_count) set
the default for models whose config sets none. KIND_GPU instances use the CUDA execution
provider on their device (TensorRT first when asked for): that needs onnxruntime-gpu.
"""

from __future__ import annotations

from typing import Any

from naiad.backends.common.params import Params, parse_bool
from naiad.kernel.inference.errors import InferenceError

# Triton's `precision_mode` and the other TensorRT accelerator keys -> TensorRT EP options.
_TRT_KEYS = {
    "max_workspace_size_bytes": "trt_max_workspace_size",
    "int8_calibration_table_name": "trt_int8_calibration_table_name",
    "int8_use_native_calibration_table": "trt_int8_use_native_calibration_table",
}
_TRT_PASSTHROUGH_PREFIX = "trt_"
_CUDA_DEPRECATED = ("cudnn_conv_algo_search", "gpu_mem_limit", "arena_extend_strategy", "do_copy_in_default_stream")


def graph_level(ort: Any, config: Any) -> Any:
    levels = ort.GraphOptimizationLevel
    level = 0
    if config.HasField("optimization") and config.optimization.HasField("graph"):
        level = int(config.optimization.graph.level)
    return {
        -1: levels.ORT_ENABLE_BASIC,
        1: levels.ORT_ENABLE_EXTENDED,
        2: levels.ORT_DISABLE_ALL,
    }.get(level, levels.ORT_ENABLE_ALL)


def session_options(ort: Any, config: Any, params: Params, defaults: Params, log_verbose: int = 0) -> Any:
    so = ort.SessionOptions()
    so.graph_optimization_level = graph_level(ort, config)
    mode = params.integer("execution_mode", 0)
    if mode not in (0, 1):
        raise InferenceError.invalid(
            f"Invalid configuration value provided. Expected values for execution_mode are 0 or 1 but got {mode} .")
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL if mode == 0 else ort.ExecutionMode.ORT_PARALLEL
    intra = params.integer("intra_op_thread_count", defaults.integer("intra_op_thread_count", 0))
    inter = params.integer("inter_op_thread_count", defaults.integer("inter_op_thread_count", 0))
    if intra > 0:
        so.intra_op_num_threads = intra
    if inter > 0:
        so.inter_op_num_threads = inter
    if params.has("enable_mem_arena"):
        so.enable_cpu_mem_arena = params.flag("enable_mem_arena", True)
    if params.has("enable_mem_pattern"):
        so.enable_mem_pattern = params.flag("enable_mem_pattern", True)
    key = "session.use_device_allocator_for_initializers"
    if params.has(key):
        so.add_session_config_entry(key, params.text(key))
    so.log_severity_level = 0 if log_verbose > 1 else (1 if log_verbose else 3)
    so.logid = config.name
    return so


def run_options(ort: Any, params: Params) -> Any:
    key = "memory.enable_memory_arena_shrinkage"
    if not params.has(key):
        return None
    ro = ort.RunOptions()
    ro.add_run_config_entry(key, params.text(key))
    return ro


def _accelerators(config: Any, gpu: bool) -> list[Any]:
    if not config.HasField("optimization"):
        return []
    ea = config.optimization.execution_accelerators
    return list(ea.gpu_execution_accelerator if gpu else ea.cpu_execution_accelerator)


def _trt_options(acc: Any, device_id: int) -> dict[str, Any]:
    opts: dict[str, Any] = {"device_id": device_id}
    for key, value in acc.parameters.items():
        if key == "precision_mode":
            mode = value.upper()
            if mode == "FP16":
                opts["trt_fp16_enable"] = True
            elif mode == "INT8":
                opts["trt_int8_enable"] = True
            elif mode != "FP32":
                raise InferenceError.invalid(f"unsupported precision mode '{value}' is requested")
        elif key in _TRT_KEYS:
            opts[_TRT_KEYS[key]] = value
        elif key.startswith(_TRT_PASSTHROUGH_PREFIX):
            opts[key] = value
        else:
            raise InferenceError.invalid(f"unknown parameter '{key}' is provided for TensorRT Execution Accelerator")
    return opts


def providers(ort: Any, config: Any, params: Params, kind: str, device_id: int) -> list[Any]:
    """Execution providers for one instance, most preferred first."""
    available = set(ort.get_available_providers())
    if kind != "GPU":
        chain: list[Any] = []
        for acc in _accelerators(config, gpu=False):
            if acc.name == "openvino":
                if "OpenVINOExecutionProvider" not in available:
                    raise InferenceError.invalid(
                        "the OpenVINO execution accelerator was asked for, but this onnxruntime has no "
                        "OpenVINOExecutionProvider")
                chain.append("OpenVINOExecutionProvider")
            else:
                raise InferenceError.invalid(f"unknown Execution Accelerator '{acc.name}' is requested")
        return chain + ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise InferenceError.invalid(
            f"model '{config.name}' has a KIND_GPU instance group, but the installed onnxruntime has no "
            f"CUDAExecutionProvider (install onnxruntime-gpu, or use KIND_CPU)")
    cuda: dict[str, Any] = {"device_id": device_id}
    for key in _CUDA_DEPRECATED:
        if params.has(key):
            value = params.text(key)
            cuda[key] = str(int(parse_bool(value, key, params.where))) if key == "do_copy_in_default_stream" else value
    chain = []
    for acc in _accelerators(config, gpu=True):
        if acc.name == "tensorrt":
            if "TensorrtExecutionProvider" not in available:
                raise InferenceError.invalid(
                    "the TensorRT execution accelerator was asked for, but this onnxruntime has no "
                    "TensorrtExecutionProvider")
            chain.append(("TensorrtExecutionProvider", _trt_options(acc, device_id)))
        elif acc.name == "cuda":
            for key, value in acc.parameters.items():
                cuda[key] = value
        else:
            raise InferenceError.invalid(f"unknown Execution Accelerator '{acc.name}' is requested")
    return chain + [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
