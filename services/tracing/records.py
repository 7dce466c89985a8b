"""One finished trace -> the records of Triton's JSON trace file (`server:src/tracer.cc`):
a header `{"id", "model_name", "model_version"[, "request_id"][, "parent_id"]}`, one
`{"id", "timestamps": [{"name", "ns"}]}` per timestamp in time order, and at TENSORS level
`{"id", "activity", "tensor": {"name", "data", "shape", "dtype"}}` records."""

from __future__ import annotations

import json
from typing import Any

from naiad.kernel.inference.trace import Trace

_NO_DATA = ("FP16", "BF16")  # Triton leaves these out of the text
_str = json.JSONEncoder(ensure_ascii=False).encode  # a JSON string literal


def _version(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return -1


def tensor_text(datatype: str, shape: Any, array: Any) -> tuple[str, str]:
    """(data, shape) as Triton writes them: comma-separated values and dims."""
    dims = ",".join(str(int(d)) for d in shape)
    if array is None or datatype in _NO_DATA:
        return "", dims
    flat = array.reshape(-1) if hasattr(array, "reshape") else array
    if datatype == "BYTES":
        items = []
        for v in flat:
            s = v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)
            items.append(f'"{s}"')
        return ",".join(items), dims
    if datatype == "BOOL":
        return ",".join("1" if v else "0" for v in flat.tolist()), dims
    if datatype in ("FP32", "FP64"):
        return ",".join(f"{v:g}" for v in flat.tolist()), dims
    return ",".join(str(v) for v in flat.tolist()), dims


def snapshot_tensor(tensor: Any) -> tuple[str, str, Any, Any]:
    """(name, datatype, shape, array copy or None): taken while the tensor's memory is
    still the request's, so the writer thread may read it later."""
    array = None
    if getattr(tensor, "has_data", False) and tensor.datatype not in _NO_DATA:
        try:
            array = tensor.array.copy()
        except Exception:  # data that cannot be decoded is written empty, not fatal
            array = None
    return (tensor.name, tensor.datatype, tuple(tensor.shape), array)


def _tensor_record(trace_id: int, activity: str, item: Any) -> str:
    name, datatype, shape, array = item if isinstance(item, tuple) else snapshot_tensor(item)
    data, dims = tensor_text(datatype, shape, array)
    return (f'{{"id":{trace_id},"activity":{_str(activity)},"tensor":{{"name":{_str(name)},'
            f'"data":{_str(data)},"shape":{_str(dims)},"dtype":{_str(datatype)}}}}}')


_NAMES: dict[str, str] = {}


def _name(name: str) -> str:
    quoted = _NAMES.get(name)
    if quoted is None:
        quoted = _NAMES[name] = _str(name)
    return quoted


def encode_trace(trace: Trace, timestamps: bool = True, tensors: bool = False) -> str:
    """The trace's records as JSON text, comma-separated, without the enclosing brackets
    (the trace file adds those). Built as text: this runs once per traced request."""
    tid = trace.id
    head = f'{{"id":{tid},"model_name":{_str(trace.model_name)},"model_version":{_version(trace.model_version)}'
    if trace.request_id:
        head += f',"request_id":{_str(trace.request_id)}'
    if trace.parent_id:
        head += f',"parent_id":{trace.parent_id}'
    out = [head + "}"]
    stamps = sorted(trace.timestamps, key=_ns) if timestamps else ()
    inputs: list = []
    outputs: list = []
    if tensors:
        for activity, item in trace.tensors:
            (outputs if activity == "TENSOR_BACKEND_OUTPUT" else inputs).append((activity, item))
    prefix = f'{{"id":{tid},"timestamps":[{{"name":'
    for name, ns in stamps:
        if outputs and name == "REQUEST_END":
            out.extend(_tensor_record(tid, a, t) for a, t in outputs)
            outputs = []
        out.append(f'{prefix}{_name(name)},"ns":{ns}}}]}}')
        if inputs and name == "REQUEST_START":
            out.extend(_tensor_record(tid, a, t) for a, t in inputs)
            inputs = []
    out.extend(_tensor_record(tid, a, t) for a, t in inputs)
    out.extend(_tensor_record(tid, a, t) for a, t in outputs)
    return ",".join(out)


def _ns(stamp: tuple[str, int]) -> int:
    return stamp[1]


def trace_records(trace: Trace, timestamps: bool = True, tensors: bool = False) -> list[dict]:
    """The same records as dicts (for reading them back)."""
    return json.loads("[" + encode_trace(trace, timestamps, tensors) + "]")
