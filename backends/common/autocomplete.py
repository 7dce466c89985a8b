"""Auto-complete of a model config from what the model file says about its tensors.

A backend reads its model's signature (names, datatypes, shapes with -1 for dynamic dims)
and calls these helpers, which fill the config the way Triton's framework backends do:
`max_batch_size` from the backend's `default-max-batch-size` when every tensor has a
dynamic leading dim and the config sets none, `dynamic_batching {}` when batching is on
and no scheduler is named, and the `input` / `output` lists when the config has none (a
tensor without dims becomes `dims: [1]` with an empty `reshape`, Triton's spelling of a
scalar per batch item).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from naiad.kernel.inference.errors import InferenceError

from .dtypes import config_value

log = logging.getLogger("naiad.backends")


@dataclass(frozen=True, slots=True)
class TensorSig:
    name: str
    data_type: str  # TYPE_* name ("TYPE_INVALID" when the model does not say)
    shape: tuple[int, ...] | None  # full shape with -1 for dynamic dims; None: rank unknown
    is_shape_tensor: bool = False


def supports_batching(inputs: Sequence[TensorSig], outputs: Sequence[TensorSig]) -> bool:
    """Every tensor has a leading dynamic dimension (Triton's onnxruntime rule)."""
    tensors = list(inputs) + list(outputs)
    return bool(tensors) and all(t.shape is not None and len(t.shape) > 0 and t.shape[0] == -1 for t in tensors)


def set_max_batch_size(config: Any, can_batch: bool, default_max_batch_size: int, backend: str) -> None:
    """Triton's AutoCompleteMaxBatch."""
    if can_batch:
        if config.max_batch_size == 0:
            config.max_batch_size = default_max_batch_size
            log.warning(
                "autofilled max_batch_size to %d for model '%s' since batching is supported but no "
                "max_batch_size is specified in model configuration. Must specify max_batch_size to "
                "utilize autofill with a larger max batch size", default_max_batch_size, config.name)
        ensure_dynamic_batching(config)
    elif config.max_batch_size != 0:
        raise InferenceError.invalid(
            f"autofill failed for model '{config.name}': model does not support batching while non-zero "
            f"max_batch_size is specified")


def ensure_dynamic_batching(config: Any) -> None:
    if config.max_batch_size > 1 and not config.HasField("dynamic_batching") and not config.HasField("sequence_batching"):
        config.dynamic_batching.SetInParent()


def fill_io(config: Any, field: str, sigs: Sequence[TensorSig]) -> None:
    """Fill `config.input` or `config.output` from the signature when the config lists none;
    otherwise fill what listed tensors leave out (data_type, dims)."""
    target = getattr(config, field)
    skip_first = config.max_batch_size > 0
    by_name = {s.name: s for s in sigs}
    if len(target) == 0:
        for sig in sigs:
            _fill_one(target.add(), sig, skip_first, config.name, new=True)
        return
    for entry in target:
        sig = by_name.get(entry.name)
        if sig is not None:
            _fill_one(entry, sig, skip_first, config.name, new=False)


def _fill_one(entry: Any, sig: TensorSig, skip_first: bool, model: str, new: bool) -> None:
    if new:
        entry.name = sig.name
    if entry.data_type == 0:
        if sig.data_type == "TYPE_INVALID":
            raise InferenceError.invalid(
                f"autofill failed for model '{model}': the model does not tell the data type of '{sig.name}'")
        entry.data_type = config_value(sig.data_type)
    if sig.is_shape_tensor and new:
        entry.is_shape_tensor = True
    if len(entry.dims) == 0 and not entry.HasField("reshape"):
        if sig.shape is None:
            if new:
                entry.dims.append(-1)
            return
        dims = list(sig.shape[1:] if skip_first and not sig.is_shape_tensor else sig.shape)
        if sig.is_shape_tensor and skip_first and dims:
            dims = [dims[0] - 1] if dims[0] > 0 else dims
        if dims:
            entry.dims.extend(dims)
        else:
            entry.dims.append(1)
            entry.reshape.SetInParent()


def completed_copy(config: Any, platform: str, default_model_filename: str) -> Any:
    """A copy of `config` to complete, with the backend's platform and model file name
    filled where the config leaves them out (every framework backend starts so)."""
    completed = type(config)()
    completed.CopyFrom(config)
    if not completed.platform:
        completed.platform = platform
    if not completed.default_model_filename:
        completed.default_model_filename = default_model_filename
    return completed
