"""Check a request against its model's config before anything reaches a backend: input
names, datatypes, shapes and batch dimension, byte sizes, required inputs, requested
outputs. Messages follow Triton's wording.

`ModelSchema` precomputes what the checks need from the config once per loaded model, so
the per-request work is a few dict lookups and integer comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from naiad.kernel.inference.datatypes import CONFIG_ENUM_NAME, CONFIG_TO_WIRE, WIRE_ITEMSIZE
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str  # wire name
    dims: tuple[int, ...]  # without the batch dimension
    optional: bool = False
    ragged: bool = False
    is_shape_tensor: bool = False


def _spec(t: Any, is_input: bool) -> TensorSpec:
    datatype = CONFIG_TO_WIRE.get(CONFIG_ENUM_NAME.get(t.data_type, ""), "")
    return TensorSpec(
        name=t.name,
        datatype=datatype,
        dims=tuple(int(d) for d in t.dims),
        optional=bool(getattr(t, "optional", False)) if is_input else False,
        ragged=bool(getattr(t, "allow_ragged_batch", False)) if is_input else False,
        is_shape_tensor=bool(t.is_shape_tensor),
    )


def _dims_match(expected: tuple[int, ...], got: tuple[int, ...]) -> bool:
    if len(expected) != len(got):
        return False
    for e, g in zip(expected, got):
        if e != -1 and e != g:
            return False
    return True


def _fmt(dims: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


class ModelSchema:
    def __init__(self, config: Any, control_inputs: frozenset[str] = frozenset()) -> None:
        self.name = config.name
        self.max_batch_size = int(config.max_batch_size)
        self.inputs = {t.name: _spec(t, True) for t in config.input}
        self.outputs = {t.name: _spec(t, False) for t in config.output}
        # Inputs the sequence batcher fills in itself (START/END/READY/CORRID, state).
        self.control_inputs = control_inputs
        self.required = [n for n, s in self.inputs.items() if not s.optional and n not in control_inputs]
        self.any_optional = any(s.optional for s in self.inputs.values())

    def adopt_raw_input(self, tensor: Any) -> None:
        """Triton's raw binary request (`Inference-Header-Content-Length: 0`): the whole
        body is the model's one input; its name, datatype and shape come from the config."""
        model = self.name
        candidates = [s for n, s in self.inputs.items() if n not in self.control_inputs]
        if len(candidates) != 1:
            raise InferenceError.invalid(
                f"Raw request must only have 1 input (found 1) to be deduced but got {len(candidates)} inputs "
                f"in '{model}' model configuration")
        spec = candidates[0]
        itemsize = WIRE_ITEMSIZE.get(spec.datatype)
        if itemsize is None:
            raise InferenceError.invalid(
                f"Raw request input '{spec.name}' of model '{model}' must have a fixed-size datatype")
        nbytes = tensor.raw.nbytes if isinstance(tensor.raw, memoryview) else len(tensor.raw)
        dims = list(spec.dims)
        known = 1
        for d in dims:
            if d != -1:
                known *= d
        wildcards = dims.count(-1)
        if wildcards > 1 or (known and nbytes % (known * itemsize)):
            raise InferenceError.invalid(
                f"Raw request input '{spec.name}' of model '{model}': cannot deduce the shape of {nbytes} bytes")
        if wildcards == 1:
            dims[dims.index(-1)] = nbytes // (known * itemsize) if known else 0
        shape = ([1] if self.max_batch_size > 0 else []) + dims
        tensor.name = spec.name
        tensor.datatype = spec.datatype
        tensor.shape = tuple(shape)

    def validate(self, request: InferenceRequest) -> int:
        """Raise InferenceError(INVALID_ARG) on the first problem; return the batch size
        (1 for models without batching)."""
        model = self.name
        inputs = self.inputs
        batching = self.max_batch_size > 0
        batch = -1
        seen = 0
        for tensor in request.inputs:
            spec = inputs.get(tensor.name)
            if spec is None or tensor.name in self.control_inputs:
                raise InferenceError.invalid(f"unexpected inference input '{tensor.name}' for model '{model}'")
            seen += 1
            if tensor.datatype != spec.datatype:
                raise InferenceError.invalid(
                    f"inference input '{tensor.name}' data-type is '{tensor.datatype}', "
                    f"but model '{model}' expects '{spec.datatype}'")
            shape = tensor.shape
            for d in shape:
                if d < 0:
                    raise InferenceError.invalid(
                        f"unexpected shape for input '{tensor.name}' for model '{model}': negative dimension")
            if batching and not spec.is_shape_tensor:
                if not shape:
                    raise InferenceError.invalid(
                        f"inference input '{tensor.name}' for model '{model}' has no batch dimension")
                n = shape[0]
                if batch == -1:
                    batch = n
                elif n != batch:
                    raise InferenceError.invalid(
                        f"input '{tensor.name}' batch size does not match other inputs for '{model}'")
                dims = shape[1:]
            else:
                dims = shape
            if not spec.ragged and not _dims_match(spec.dims, dims):
                expected = ((-1,) + spec.dims) if batching else spec.dims
                raise InferenceError.invalid(
                    f"unexpected shape for input '{tensor.name}' for model '{model}'. "
                    f"Expected {_fmt(expected)}, got {_fmt(shape)}")
            if tensor.has_data:
                itemsize = WIRE_ITEMSIZE.get(tensor.datatype)
                if itemsize is not None:
                    raw = tensor._raw
                    if raw is not None:
                        count = 1
                        for d in shape:
                            count *= d
                        expected_bytes = count * itemsize
                        got = raw.nbytes if isinstance(raw, memoryview) else len(raw)
                        if got != expected_bytes:
                            raise InferenceError.invalid(
                                f"input byte size mismatch for input '{tensor.name}' for model '{model}'. "
                                f"Expected {expected_bytes}, got {got}")
                    else:
                        arr = tensor._array
                        if arr is not None and tuple(arr.shape) != shape:
                            raise InferenceError.invalid(
                                f"unexpected shape for input '{tensor.name}' for model '{model}'. "
                                f"Expected {_fmt(shape)}, got {_fmt(tuple(arr.shape))}")
            elif tensor.shm is None:
                raise InferenceError.invalid(f"input '{tensor.name}' for model '{model}' has no data")
        if seen > 1 and len({t.name for t in request.inputs}) != seen:
            raise InferenceError.invalid(f"duplicate inference input for model '{model}'")
        missing = [n for n in self.required if request.input(n) is None]
        if missing:
            if self.any_optional:
                raise InferenceError.invalid(
                    f"expected {len(self.required)} inputs but got {seen} inputs for model '{model}'. "
                    f"Got input(s) {[t.name for t in request.inputs]}, but missing required input(s) {missing}. "
                    f"Please provide all required input(s).")
            raise InferenceError.invalid(
                f"expected {len(self.inputs) - len(self.control_inputs)} inputs but got {seen} inputs for model '{model}'. "
                f"Got input(s) {[t.name for t in request.inputs]}, but missing required input(s) {missing}. "
                f"Please provide all required input(s).")
        if batching:
            if batch <= 0 and request.inputs:
                raise InferenceError.invalid(f"inference request batch-size must be >= 1 for '{model}'")
            if batch > self.max_batch_size:
                raise InferenceError.invalid(
                    f"inference request batch-size must be <= {self.max_batch_size} for '{model}'")
        if request.outputs and self.outputs:
            outputs = self.outputs
            for out in request.outputs:
                if out.name not in outputs:
                    raise InferenceError.invalid(f"unexpected inference output '{out.name}' for model '{model}'")
        return batch if batching and batch > 0 else 1
