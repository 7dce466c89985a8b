"""An ONNX model's inputs and outputs, for auto-complete and load-time checks.

Read from the graph with the `onnx` package (external weights are not loaded, no session
is built), or, where `onnx` is not installed, from an InferenceSession's metadata. Graph
inputs that are initializers (weights an older exporter also listed as inputs) are not
model inputs. A dimension with a symbolic name or no value is dynamic (-1).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from naiad.backends.common.autocomplete import TensorSig
from naiad.backends.common.dtypes import ONNX_TO_CONFIG, ORT_TO_CONFIG
from naiad.backends.common.framework import import_framework
from naiad.kernel.inference.errors import InferenceError


def import_ort() -> Any:
    return import_framework(
        "onnxruntime",
        "the onnxruntime backend needs the 'onnxruntime' package (pip install 'naiad[onnx]', or onnxruntime-gpu for GPUs)",
        "InferenceSession", "InferenceSession")


def _import_onnx() -> Any:
    try:
        return importlib.import_module("onnx")
    except ImportError:
        return None


class Signature:
    def __init__(self, inputs: list[TensorSig], outputs: list[TensorSig]) -> None:
        self.inputs = inputs
        self.outputs = outputs

    @property
    def input_map(self) -> dict[str, TensorSig]:
        return {s.name: s for s in self.inputs}

    @property
    def output_map(self) -> dict[str, TensorSig]:
        return {s.name: s for s in self.outputs}


def _onnx_sig(value_info: Any) -> TensorSig:
    t = value_info.type
    if t.WhichOneof("value") != "tensor_type":
        raise InferenceError.invalid(
            f"tensor '{value_info.name}' is a {t.WhichOneof('value')}; Triton's onnxruntime backend serves tensors only")
    tt = t.tensor_type
    data_type = ONNX_TO_CONFIG.get(int(tt.elem_type), "TYPE_INVALID")
    shape: tuple[int, ...] | None = None
    if tt.HasField("shape"):
        shape = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in tt.shape.dim)
    return TensorSig(value_info.name, data_type, shape)


def read_graph(path: Path) -> Signature | None:
    """From the graph (None when the `onnx` package is not installed)."""
    onnx = _import_onnx()
    if onnx is None:
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InferenceError.invalid(f"failed to read ONNX model '{path}': {exc}") from None
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [_onnx_sig(v) for v in graph.input if v.name not in initializers]
    outputs = [_onnx_sig(v) for v in graph.output]
    return Signature(inputs, outputs)


def _ort_sig(arg: Any) -> TensorSig:
    shape = arg.shape
    dims = None if shape is None else tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)
    return TensorSig(arg.name, ORT_TO_CONFIG.get(arg.type, "TYPE_INVALID"), dims)


def read_session(session: Any) -> Signature:
    return Signature([_ort_sig(a) for a in session.get_inputs()], [_ort_sig(a) for a in session.get_outputs()])


def read(path: Path) -> Signature:
    sig = read_graph(path)
    if sig is not None:
        return sig
    ort = import_ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InferenceError.invalid(f"failed to load ONNX model '{path}': {exc}") from None
    return read_session(session)
