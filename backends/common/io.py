"""A model's inputs and outputs as its config states them, in the form the batch code needs.

`dims` are the config's dims (without the batch dimension when `max_batch_size` > 0);
`model_dims` are the dims the framework sees: the config's `reshape.shape` when there is
one (an empty reshape is a scalar per batch item), else `dims`. Requests are validated
against `dims` by the model manager; a backend converts to `model_dims` on the way in and
back to `dims` on the way out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .dtypes import config_name, numpy_of, wire_of


@dataclass(frozen=True, slots=True)
class IOSpec:
    name: str
    data_type: str  # TYPE_* name
    datatype: str  # wire name
    dtype: np.dtype
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None
    optional: bool = False
    is_shape_tensor: bool = False

    @property
    def model_dims(self) -> tuple[int, ...]:
        return self.reshape if self.reshape is not None else self.dims

    @property
    def is_bytes(self) -> bool:
        return self.datatype == "BYTES"


def _spec(t: Any, is_input: bool) -> IOSpec:
    name = config_name(t.data_type)
    reshape = tuple(int(d) for d in t.reshape.shape) if t.HasField("reshape") else None
    return IOSpec(
        name=t.name,
        data_type=name,
        datatype=wire_of(name),
        dtype=numpy_of(name),
        dims=tuple(int(d) for d in t.dims),
        reshape=reshape,
        optional=bool(t.optional) if is_input else False,
        is_shape_tensor=bool(t.is_shape_tensor),
    )


class ModelIO:
    """Inputs and outputs of one model version, in config order."""

    def __init__(self, config: Any) -> None:
        self.model_name = config.name
        self.max_batch_size = int(config.max_batch_size)
        self.batching = self.max_batch_size > 0
        self.inputs = [_spec(t, True) for t in config.input]
        self.outputs = [_spec(t, False) for t in config.output]
        self.input_map = {s.name: s for s in self.inputs}
        self.output_map = {s.name: s for s in self.outputs}
        self.output_names = tuple(s.name for s in self.outputs)
        # Inputs the sequence batcher adds to each request (control tensors, implicit state)
        # and outputs it takes back (state): model tensors the config lists elsewhere.
        sb = config.sequence_batching if config.HasField("sequence_batching") else None
        self.control_inputs = tuple(
            [c.name for c in sb.control_input] + [st.input_name for st in sb.state]) if sb is not None else ()
        self.state_outputs = tuple(st.output_name for st in sb.state) if sb is not None else ()


def to_model_shape(spec: IOSpec, shape: tuple[int, ...], batching: bool) -> tuple[int, ...]:
    """The shape a framework gets for a request tensor of `shape` (reshape applied)."""
    if spec.reshape is None:
        return shape
    if batching:
        return (shape[0],) + spec.reshape
    return spec.reshape


def to_config_shape(spec: IOSpec, shape: tuple[int, ...], batching: bool) -> tuple[int, ...] | None:
    """The shape an output of the framework's `shape` is returned with: the config's dims
    when the output has a reshape (-1 dims filled from the element count), else unchanged.
    None when the element counts cannot agree."""
    if spec.reshape is None:
        return shape
    lead = (shape[0],) if batching and shape else ()
    count = 1
    for d in shape[len(lead):]:
        count *= d
    dims = list(spec.dims)
    known = 1
    free = [i for i, d in enumerate(dims) if d < 0]
    for d in dims:
        if d >= 0:
            known *= d
    if len(free) > 1:
        return None
    if free:
        if known == 0 or count % known:
            return None
        dims[free[0]] = count // known
    elif known != count:
        return None
    return lead + tuple(dims)
