"""What a TorchScript module's `forward` says about its inputs and outputs, and the
auto-complete built on it.

TorchScript keeps argument names and types but no tensor dtypes or shapes, so Triton's
libtorch backend does not auto-complete at all. naiad completes what the model allows:

  inputs   named after forward()'s arguments; a `List[str]` argument is a TYPE_STRING [-1]
           input; a Tensor argument needs its data_type and dims from the config.
  outputs  when the config lists the inputs fully, naiad runs forward() twice on zero
           inputs on the CPU (dynamic dims at two different sizes) and reads each result's
           datatype and shape: a dim that changed between the runs is -1. Outputs are named
           OUTPUT__<index> (or by key for a forward returning a Dict[str, Tensor]).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from naiad.backends.common.dtypes import config_of_torch, config_value, torch_dtype
from naiad.backends.common.framework import import_framework
from naiad.backends.common.io import ModelIO
from naiad.kernel.inference.errors import InferenceError

log = logging.getLogger("naiad.backends")


def import_torch() -> Any:
    return import_framework("torch", "the pytorch backend needs the 'torch' package (pip install 'naiad[torch]')",
                            "jit", "TorchScript (torch.jit)")


@dataclass(frozen=True)
class Argument:
    name: str
    kind: str  # "tensor", "strings" (List[str]), "tensors" (List[Tensor]), "dict", "other"
    type_str: str


@dataclass(frozen=True)
class ForwardSignature:
    arguments: tuple[Argument, ...]
    returns: str  # "tensor", "tuple", "list", "dict", "strings", "other"
    return_count: int | None  # elements of a returned tuple (None: not known)

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.arguments]

    @property
    def dict_input(self) -> bool:
        return len(self.arguments) == 1 and self.arguments[0].kind == "dict"


def _kind(t: Any) -> str:
    kind = t.kind()
    if kind == "TensorType":
        return "tensor"
    if kind == "ListType":
        element = t.getElementType()
        ek = element.kind()
        if ek == "StringType":
            return "strings"
        if ek == "TensorType":
            return "tensors"
        return "other"
    if kind == "DictType":
        return "dict"
    if kind == "OptionalType":
        return _kind(t.getElementType())
    return "other"


def read_forward(module: Any) -> ForwardSignature:
    try:
        schema = module.forward.schema
    except AttributeError:
        raise InferenceError.invalid("the model has no scripted forward() method (is it a TorchScript file?)") from None
    args = list(schema.arguments)
    if args and args[0].type.kind() == "ClassType":
        args = args[1:]
    arguments = tuple(Argument(a.name, _kind(a.type), str(a.type)) for a in args)
    ret = schema.returns[0].type if schema.returns else None
    returns, count = "other", None
    if ret is not None:
        kind = ret.kind()
        if kind == "TensorType":
            returns, count = "tensor", 1
        elif kind == "TupleType":
            returns, count = "tuple", len(ret.elements())
        elif kind == "ListType":
            returns = "strings" if _kind(ret) == "strings" else "list"
            count = 1 if returns == "strings" else None
        elif kind == "DictType":
            returns = "dict"
    return ForwardSignature(arguments, returns, count)


def check_arguments(model: str, sig: ForwardSignature) -> None:
    """Triton's rules: one Dict(str, Tensor) argument, or Tensor / List arguments only."""
    if sig.dict_input:
        return
    for a in sig.arguments:
        if a.kind == "dict":
            raise InferenceError.invalid(
                "Multiple inputs of kind DictType were detected. Only a single input of type Dict(str, Tensor) "
                "is supported.")
        if a.kind not in ("tensor", "strings", "tensors"):
            raise InferenceError.invalid(
                f"An input of type '{a.type_str}' was detected in the model '{model}'. Only a single input of type "
                f"Dict(str, Tensor) or input(s) of type Tensor are supported.")


# ------------------------------------------------------------------ auto-complete --


def complete_inputs(config: Any, sig: ForwardSignature) -> None:
    """Name the inputs after forward()'s arguments when the config lists none."""
    if len(config.input) or len(config.batch_input):
        return
    if sig.dict_input:
        raise InferenceError.invalid(
            f"autofill failed for model '{config.name}': forward() takes a Dict[str, Tensor], whose keys only the "
            f"model configuration can give: list the inputs in config.pbtxt")
    unknown = [a.name for a in sig.arguments if a.kind != "strings"]
    if unknown:
        raise InferenceError.invalid(
            f"autofill failed for model '{config.name}': TorchScript does not record the data type and shape of "
            f"tensor argument(s) {', '.join(unknown)} of forward({', '.join(sig.names)}); list the inputs with "
            f"data_type and dims in config.pbtxt (the outputs can be left to auto-complete)")
    for a in sig.arguments:
        entry = config.input.add()
        entry.name = a.name
        entry.data_type = config_value("TYPE_STRING")
        entry.dims.append(-1)


def _probe_sizes(dims: Sequence[int], first: bool) -> list[int]:
    dynamic = sum(1 for d in dims if d < 0)
    base = 8 if dynamic <= 2 else 4
    size = base if first else base + 1
    return [size if d < 0 else d for d in dims]


def _probe_inputs(torch: Any, io: ModelIO, first: bool) -> dict[str, Any]:
    batch = (1 if first else 2,) if io.batching else ()
    values: dict[str, Any] = {}
    for spec in io.inputs:
        dims = list(spec.model_dims)
        shape = (batch if not spec.is_shape_tensor else ()) + tuple(_probe_sizes(dims, first))
        if spec.is_bytes:
            n = int(np.prod(shape)) if shape else 1
            values[spec.name] = ["" for _ in range(n)]
        else:
            values[spec.name] = torch.zeros(shape, dtype=torch_dtype(spec.data_type, torch))
    return values


def _flatten(result: Any) -> list[tuple[str | int, Any]]:
    if isinstance(result, dict):
        return list(result.items())
    if isinstance(result, (tuple, list)) and not (result and isinstance(result[0], str)):
        return list(enumerate(result))
    return [(0, result)]


def _describe(torch: Any, value: Any) -> tuple[str, tuple[int, ...]]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "TYPE_STRING", (len(value),)
    if isinstance(value, torch.Tensor):
        return config_of_torch(value.dtype), tuple(value.shape)
    raise InferenceError.invalid(f"forward() returned a {type(value).__name__}, which is not a tensor")


def complete_outputs(torch: Any, module: Any, config: Any, sig: ForwardSignature, call: Any) -> None:
    """Fill the outputs from two probe runs (see the module docstring). `call(module,
    inputs)` runs forward the way the instance will (naming conventions applied)."""
    if len(config.output):
        return
    io = ModelIO(config)
    runs = []
    for first in (True, False):
        try:
            with torch.inference_mode():
                result = call(module, _probe_inputs(torch, io, first))
        except InferenceError:
            raise
        except Exception as exc:
            raise InferenceError.invalid(
                f"autofill failed for model '{config.name}': forward() on zero-filled sample inputs failed "
                f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); list the outputs "
                f"in config.pbtxt") from None
        runs.append([(key, *_describe(torch, value)) for key, value in _flatten(result)])
    first_run, second_run = runs
    if len(first_run) != len(second_run):
        raise InferenceError.invalid(f"autofill failed for model '{config.name}': forward() returned a varying number of results")
    for (key, dtype, shape1), (_, _, shape2) in zip(first_run, second_run):
        name = key if isinstance(key, str) else f"OUTPUT__{key}"
        if dtype == "TYPE_INVALID":
            raise InferenceError.invalid(f"autofill failed for model '{config.name}': output '{name}' has an unsupported dtype")
        if len(shape1) != len(shape2):
            dims = [-1] * max(len(shape1), len(shape2))
        else:
            dims = [a if a == b else -1 for a, b in zip(shape1, shape2)]
        if io.batching:
            if not dims or (shape1[0], shape2[0]) != (1, 2):
                raise InferenceError.invalid(
                    f"autofill failed for model '{config.name}': output '{name}' has no batch dimension (shapes "
                    f"{list(shape1)} and {list(shape2)} for batch sizes 1 and 2) while max_batch_size is "
                    f"{config.max_batch_size}")
            dims = dims[1:]
        entry = config.output.add()
        entry.name = name
        entry.data_type = config_value(dtype)
        if dims:
            entry.dims.extend(dims)
        else:
            entry.dims.append(1)
            entry.reshape.SetInParent()
