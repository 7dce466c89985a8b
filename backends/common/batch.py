"""One batch tensor per input from the requests of a batch, and outputs split back.

The scheduler hands a backend the requests of one batch; they agree on every input's
non-batch shape. `assemble` concatenates each input along axis 0 with
`naiad.ext.batching.gather` (into a pooled, possibly page-locked host buffer when a pool is
given), `split` cuts each output back with `scatter` (views, no copy) and builds each
request's output tensors, keeping only the outputs that request asked for.

A batch of one request is passed through without a copy unless the caller needs a
private, writable array (`copy=True`: frameworks that may write into their inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from naiad.ext.batching import gather, scatter
from naiad.kernel.inference.datatypes import wire_from_numpy
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, Tensor

from .dtypes import matches_numpy
from .io import ModelIO, to_config_shape, to_model_shape

# Below this many bytes a pooled buffer costs more than it saves.
_POOL_MIN_BYTES = 64 << 10


@dataclass(slots=True)
class Batch:
    inputs: dict[str, np.ndarray]  # input name -> array in the model's shape
    counts: list[int]  # batch size of each request (1 each without batching)
    total: int
    outputs: tuple[str, ...]  # outputs any request of the batch asked for, config order first


def request_batch_size(request: InferenceRequest, io: ModelIO) -> int:
    if not io.batching:
        return 1
    for t in request.inputs:
        spec = io.input_map.get(t.name)
        if spec is not None and spec.is_shape_tensor:
            continue
        if t.shape:
            return int(t.shape[0])
    return 1


def requested_outputs(requests: Sequence[InferenceRequest], io: ModelIO) -> tuple[str, ...]:
    """The union of the outputs the requests asked for (all when one asked for none)."""
    wanted: set[str] = set()
    for r in requests:
        if not r.outputs:
            return io.output_names
        wanted.update(o.name for o in r.outputs)
    ordered = tuple(n for n in io.output_names if n in wanted)
    extra = tuple(sorted(wanted.difference(io.output_names)))
    return ordered + extra


def _text(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item).decode("utf-8")
    return str(item)


def _to_text(array: np.ndarray, name: str) -> np.ndarray:
    """BYTES elements (bytes) as str, for frameworks whose strings are text (ONNX Runtime)."""
    flat = array.reshape(-1)
    out = np.empty(flat.shape[0], dtype=object)
    try:
        out[:] = [_text(x) for x in flat]
    except UnicodeDecodeError:
        raise InferenceError.invalid(
            f"input '{name}': string elements must be valid UTF-8 for this model's runtime") from None
    return out.reshape(array.shape)


def assemble(
    requests: Sequence[InferenceRequest],
    io: ModelIO,
    *,
    pool: Any = None,
    copy: bool = False,
    bytes_as_text: bool = False,
) -> Batch:
    """Build the batch's input arrays (in the model's shape, reshape applied)."""
    batching = io.batching
    counts = [request_batch_size(r, io) for r in requests]
    total = sum(counts)
    first = requests[0]
    inputs: dict[str, np.ndarray] = {}
    for tensor in first.inputs:
        name = tensor.name
        spec = io.input_map.get(name)
        if len(requests) == 1 or (spec is not None and spec.is_shape_tensor):
            # Shape tensors are not batched: every request of a batch carries the same.
            array = tensor.array
            if copy and not array.dtype.hasobject:
                array = _copy(array, pool)
        else:
            parts = []
            for r in requests:
                t = r.input(name)
                if t is None:
                    raise InferenceError.invalid(f"input '{name}' is missing from a request of the batch")
                parts.append(t.array)
            array = _gather(parts, pool)
        if spec is not None:
            if spec.reshape is not None:
                array = array.reshape(to_model_shape(spec, tuple(array.shape), batching and not spec.is_shape_tensor))
            if spec.is_bytes and bytes_as_text:
                array = _to_text(array, name)
        inputs[name] = array
    return Batch(inputs, counts, total, requested_outputs(requests, io))


def _gather(parts: list[np.ndarray], pool: Any) -> np.ndarray:
    dtype = parts[0].dtype
    if pool is not None and not dtype.hasobject:
        nbytes = sum(p.nbytes for p in parts)
        if nbytes >= _POOL_MIN_BYTES:
            # The array keeps the pooled buffer alive; it returns to the pool when the
            # last view of it (an output that aliases an input included) is gone.
            return gather(parts, out=pool.acquire(nbytes))
    return gather(parts)


def _copy(array: np.ndarray, pool: Any) -> np.ndarray:
    if array.ndim == 0:
        return np.array(array)
    return _gather([array], pool)


def split(
    results: Mapping[str, np.ndarray],
    batch: Batch,
    io: ModelIO,
    requests: Sequence[InferenceRequest],
) -> list[list[Tensor]]:
    """Each request's output tensors, in the order the model's config lists them.

    Raises InferenceError when an output is missing, has the wrong datatype, or its batch
    dimension does not match the batch."""
    batching = io.batching
    n = len(requests)
    per_output: dict[str, list[Tensor]] = {}
    for name in batch.outputs:
        array = results.get(name)
        if array is None:
            raise InferenceError.internal(f"model '{io.model_name}' did not produce output '{name}'")
        spec = io.output_map.get(name)
        if spec is not None:
            if not matches_numpy(spec.data_type, array.dtype):
                raise InferenceError.internal(
                    f"unexpected datatype {array.dtype} for inference output '{name}' of model "
                    f"'{io.model_name}', expecting {spec.data_type}")
            datatype = spec.datatype
        else:
            datatype = wire_from_numpy(array.dtype)
        if batching and n > 1:
            if array.ndim == 0 or array.shape[0] != batch.total:
                raise InferenceError.internal(
                    f"output '{name}' of model '{io.model_name}' has shape {list(array.shape)}: its first "
                    f"dimension must be the batch size {batch.total}")
            pieces = scatter(array, batch.counts)
        else:
            pieces = [array]
        tensors = []
        for piece in pieces:
            shape = tuple(piece.shape)
            if spec is not None and spec.reshape is not None:
                config_shape = to_config_shape(spec, shape, batching)
                if config_shape is None:
                    raise InferenceError.internal(
                        f"output '{name}' of model '{io.model_name}' has shape {list(shape)}, which does not "
                        f"reshape to the configured dims {list(spec.dims)}")
                piece = piece.reshape(config_shape)
                shape = config_shape
            tensors.append(Tensor(name, datatype, shape, array=piece))
        per_output[name] = tensors
    out: list[list[Tensor]] = []
    for i, r in enumerate(requests):
        if r.outputs:
            names = [o.name for o in r.outputs]
        else:
            names = list(batch.outputs)
        out.append([per_output[nm][i] for nm in names if nm in per_output])
    return out
