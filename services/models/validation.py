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
from naiad.kernel.inference.errors import InferenceError, log_request
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


def _dims_match(expected: tuple[int, ...], got: tuple[int, ...], name: str, model: str,
                full_shape: tuple[int, ...], prefix: str) -> bool:
    if len(expected) != len(got):
        return False
    for e, g in zip(expected, got):
        if g == -1:  # only gRPC's signed shapes can say -1
            raise InferenceError.invalid(
                f"{prefix}All input dimensions should be specified for input '{name}' for model '{model}', "
                f"got {_fmt(full_shape)}")
        if e != -1 and e != g:
            return False
    return True


def _fmt(dims: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _names(names: list[str]) -> str:
    """Triton's list of quoted names: `['A','B']`; `[]` for none."""
    return "[" + ",".join(f"'{n}'" for n in names) + "]"


_BATCH_NOTE = ("NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be "
               "prepended to each input shape. If you want to specify the full shape including the batch dim "
               "in your input dims config, try setting max_batch_size to zero. See the model configuration "
               "docs for more info on max_batch_size.")


class ModelSchema:
    def __init__(self, config: Any, control_inputs: frozenset[str] = frozenset()) -> None:
        self.name = config.name
        self.max_batch_size = int(config.max_batch_size)
        self.inputs = {t.name: _spec(t, True) for t in config.input}
        self.outputs = {t.name: _spec(t, False) for t in config.output}
        # Inputs the sequence batcher fills in itself (START/END/READY/CORRID, state).
        self.control_inputs = control_inputs
        self.input_count = sum(1 for n in self.inputs if n not in control_inputs)
        self.required = [n for n, s in self.inputs.items() if not s.optional and n not in control_inputs]
        self.any_optional = len(self.required) != self.input_count

    def adopt_raw_input(self, tensor: Any, request_id: str = "") -> None:
        """Triton's raw binary request (`Inference-Header-Content-Length: 0`): the whole
        body is the model's one input; its name, datatype and shape come from the config
        (core `InferenceRequest::Normalize`)."""
        prefix = log_request(request_id)
        if self.input_count != 1:
            raise InferenceError.invalid(
                f"{prefix}Raw request must only have 1 input (found 1) to be deduced but got {self.input_count} "
                f"inputs in '{self.name}' model configuration")
        spec = next(s for n, s in self.inputs.items() if n not in self.control_inputs)
        shape = [1] if self.max_batch_size > 0 else []
        dynamic_axis = -1
        known = 1
        for d in spec.dims:
            if d == -1:
                if dynamic_axis != -1:
                    raise InferenceError.invalid(
                        f"{prefix}The shape of the raw input '{spec.name}' can not be deduced because there are "
                        f"more than one variable-sized dimension")
                dynamic_axis = len(shape)
            else:
                known *= d
            shape.append(d)
        raw = tensor.raw
        nbytes = raw.nbytes if isinstance(raw, memoryview) else len(raw)
        if spec.datatype == "BYTES":
            if dynamic_axis != -1 or known != 1:
                raise InferenceError.invalid(
                    f"{prefix}For BYTE datatype raw input '{spec.name}', the model must have input shape [1]")
            # The body is the one element: give it BYTES' 4-byte length prefix.
            tensor._raw = nbytes.to_bytes(4, "little") + bytes(raw)
        elif dynamic_axis != -1:
            itemsize = WIRE_ITEMSIZE.get(spec.datatype, 1)
            shape[dynamic_axis] = nbytes // known // itemsize if known else 0
        tensor.name = spec.name
        tensor.datatype = spec.datatype
        tensor.shape = tuple(shape)

    def _count_error(self, request: InferenceRequest, prefix: str) -> InferenceError:
        given = [t.name for t in request.inputs]
        missing = [n for n in self.required if request.input(n) is None]
        # Triton drops the list's opening bracket when nothing is missing: "input(s) ]".
        missing_text = _names(missing) if missing else "]"
        if self.any_optional:
            expected = f"expected number of inputs between {len(self.required)} and {self.input_count}"
        else:
            expected = f"expected {self.input_count} inputs"
        return InferenceError.invalid(
            f"{prefix}{expected} but got {len(given)} inputs for model '{self.name}'. Got input(s) "
            f"{_names(given)}, but missing required input(s) {missing_text}. Please provide all required input(s).")

    def validate(self, request: InferenceRequest) -> int:
        """Raise InferenceError(INVALID_ARG) on the first problem, in the order Triton's core
        checks (`InferenceRequest::Normalize`); return the batch size (1 for models without
        batching)."""
        model = self.name
        inputs = self.inputs
        batching = self.max_batch_size > 0
        prefix = log_request(request.id)
        seen = len(request.inputs)
        if seen > 1 and len({t.name for t in request.inputs}) != seen:
            names: set[str] = set()
            for t in request.inputs:
                if t.name in names:
                    raise InferenceError.invalid(f"{prefix}input '{t.name}' already exists in request")
                names.add(t.name)
        if request.outputs and self.outputs:
            outputs = self.outputs
            for out in request.outputs:
                if out.name not in outputs:
                    raise InferenceError.invalid(f"unexpected inference output '{out.name}' for model '{model}'")
        if seen > self.input_count or seen < len(self.required):
            raise self._count_error(request, prefix)
        batch = 0
        batched_inputs = False
        specs = []
        for tensor in request.inputs:
            spec = inputs.get(tensor.name)
            if spec is None or tensor.name in self.control_inputs:
                raise InferenceError.invalid(f"unexpected inference input '{tensor.name}' for model '{model}'")
            specs.append(spec)
            if batching and not spec.is_shape_tensor:
                if not tensor.shape:
                    raise InferenceError.invalid(
                        f"{prefix}input '{tensor.name}' has no shape but model requires batch dimension for "
                        f"'{model}'")
                n = tensor.shape[0]
                if not batched_inputs:
                    batched_inputs = True
                    batch = n
                elif n != batch:
                    raise InferenceError.invalid(
                        f"{prefix}input '{tensor.name}' batch size does not match other inputs for '{model}'")
        if self.any_optional and any(request.input(n) is None for n in self.required):
            # Optional inputs stood in for required ones; Triton's count check lets this pass
            # to the backend, which then fails. naiad refuses it here, in the count's words.
            raise self._count_error(request, prefix)
        if batching and batch > self.max_batch_size:
            raise InferenceError.invalid(
                f"{prefix}inference request batch-size must be <= {self.max_batch_size} for '{model}'")
        if batching and batch <= 0 and batched_inputs:
            # Triton 24.04 passes a batch of 0 on to the backend; naiad's batcher needs >= 1.
            raise InferenceError.invalid(f"inference request batch-size must be >= 1 for '{model}'")
        for tensor, spec in zip(request.inputs, specs):
            if tensor.datatype != spec.datatype:
                raise InferenceError.invalid(
                    f"{prefix}inference input '{tensor.name}' data-type is '{tensor.datatype}', "
                    f"but model '{model}' expects '{spec.datatype}'")
            shape = tensor.shape
            dims = shape[1:] if batching and not spec.is_shape_tensor else shape
            if not spec.ragged and not _dims_match(spec.dims, dims, tensor.name, model, shape, prefix):
                expected = ((-1,) + spec.dims) if batching else spec.dims
                raise InferenceError.invalid(
                    f"{prefix}unexpected shape for input '{tensor.name}' for model '{model}'. "
                    f"Expected {_fmt(expected)}, got {_fmt(shape)}. {_BATCH_NOTE if batching else ''}")
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
                                f"{prefix}input byte size mismatch for input '{tensor.name}' for model '{model}'. "
                                f"Expected {expected_bytes}, got {got}")
                    else:
                        arr = tensor._array
                        if arr is not None and tuple(arr.shape) != shape:
                            raise InferenceError.invalid(
                                f"{prefix}unexpected shape for input '{tensor.name}' for model '{model}'. "
                                f"Expected {_fmt(shape)}, got {_fmt(tuple(arr.shape))}")
            elif tensor.shm is None:
                raise InferenceError.invalid(f"input '{tensor.name}' for model '{model}' has no data")
        return batch if batching and batch > 0 else 1
