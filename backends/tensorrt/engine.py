"""What a deserialised TensorRT engine says about its I/O tensors and optimisation
profiles, the auto-complete built on it, the config checks and profile choice.

Pure logic over the engine's Python API (TensorRT >= 10: `num_io_tensors`,
`get_tensor_name`, `get_tensor_mode`, `get_tensor_dtype`, `get_tensor_shape`,
`is_shape_inference_io`, `num_optimization_profiles`, `get_tensor_profile_shape`,
`get_tensor_profile_values`): it takes the engine and the `tensorrt` module as arguments,
so it is tested with stand-ins where TensorRT cannot run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from naiad.backends.common.autocomplete import TensorSig, ensure_dynamic_batching, fill_io
from naiad.backends.common.dtypes import TRT_TO_CONFIG
from naiad.backends.common.framework import import_framework
from naiad.backends.common.io import ModelIO
from naiad.kernel.inference.errors import InferenceError

log = logging.getLogger("naiad.backends")


def import_trt() -> Any:
    return import_framework(
        "tensorrt", "the tensorrt backend needs the 'tensorrt' package and cuda-python (pip install 'naiad[tensorrt]')",
        "Runtime", "Runtime")


@dataclass(frozen=True)
class EngineTensor:
    name: str
    is_input: bool
    data_type: str  # TYPE_* ("TYPE_INVALID": a type Triton has no config type for)
    shape: tuple[int, ...]
    is_shape_tensor: bool = False
    # Per profile (min, opt, max): shapes for inputs, values for shape-tensor inputs.
    profiles: tuple[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...] = field(default=())

    @property
    def config_name(self) -> str:
        # Triton names a tensor by what comes before the first space of its engine name.
        return self.name.split(" ", 1)[0]

    def sig(self) -> TensorSig:
        return TensorSig(self.config_name, self.data_type, self.shape, self.is_shape_tensor)


def _dims(value: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in value)


def _profile_values(engine: Any, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
    getter = engine.get_tensor_profile_values
    try:
        values = getter(profile, name)
    except TypeError:
        values = getter(name, profile)
    return tuple(_dims(v) for v in values)


def read_engine(engine: Any, trt: Any) -> list[EngineTensor]:
    if not hasattr(engine, "num_io_tensors"):
        raise InferenceError.unavailable("the installed TensorRT is older than 10 (no named I/O tensor API)")
    tensors = []
    profiles = int(engine.num_optimization_profiles)
    for i in range(int(engine.num_io_tensors)):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        dtype = engine.get_tensor_dtype(name)
        data_type = TRT_TO_CONFIG.get(getattr(dtype, "name", str(dtype).split(".")[-1]), "TYPE_INVALID")
        is_shape = bool(engine.is_shape_inference_io(name))
        shapes: list[Any] = []
        if is_input:
            for p in range(profiles):
                if is_shape:
                    shapes.append(_profile_values(engine, name, p))
                else:
                    shapes.append(tuple(_dims(s) for s in engine.get_tensor_profile_shape(name, p)))
        tensors.append(EngineTensor(name, is_input, data_type, _dims(engine.get_tensor_shape(name)), is_shape,
                                    tuple(shapes)))
    return tensors


def instance_profiles(config: Any, group_name: str | None, num_profiles: int) -> list[int]:
    """Profile indices an instance group may use (all groups when `group_name` is None);
    [0] when none are named."""
    indices: list[int] = []
    for group in config.instance_group:
        if group_name is not None and group.name != group_name:
            continue
        for text in group.profile:
            try:
                idx = int(text)
            except ValueError:
                raise InferenceError.invalid(f"model '{config.name}': profile '{text}' is not an integer") from None
            if not 0 <= idx < num_profiles:
                raise InferenceError.invalid(
                    f"unable to autofill for '{config.name}', configuration specified invalid profile {text} . "
                    f"Number of profiles supported by TensorRT engine: {num_profiles}")
            if idx not in indices:
                indices.append(idx)
    return indices or [0]


def max_supported_batch(tensors: Sequence[EngineTensor], profiles: Sequence[int]) -> int:
    """The largest batch the engine takes: 0 unless every non-shape tensor has a dynamic
    leading dim; then the best over the profiles of the smallest max leading dim of the
    inputs (shape tensors: their first max value)."""
    for t in tensors:
        if not t.is_shape_tensor and (not t.shape or t.shape[0] != -1):
            return 0
    best = 0
    for p in profiles:
        limit = None
        for t in tensors:
            if not t.is_input or p >= len(t.profiles):
                continue
            max_shape = t.profiles[p][2]
            if not max_shape:
                continue
            limit = max_shape[0] if limit is None else min(limit, max_shape[0])
        if limit is not None:
            best = max(best, limit)
    return best


def auto_complete(config: Any, tensors: Sequence[EngineTensor]) -> None:
    """Triton's tensorrt auto-complete, in place."""
    inputs = [t for t in tensors if t.is_input]
    outputs = [t for t in tensors if not t.is_input]
    by_name = {t.config_name: t for t in tensors}
    batch_hint = None  # True / False when the config's dims say, None when it does not
    for entry in list(config.input) + list(config.output):
        t = by_name.get(entry.name)
        if t is None or entry.allow_ragged_batch:
            if entry.allow_ragged_batch:
                batch_hint = True
            continue
        dims = list(entry.reshape.shape) if entry.HasField("reshape") else list(entry.dims)
        if not dims:
            continue
        should_batch = (t.shape[0] == dims[0] + 1) if t.is_shape_tensor else (len(t.shape) == len(dims) + 1)
        if batch_hint is not None and batch_hint != should_batch:
            raise InferenceError.invalid(
                f"unable to autofill for '{config.name}', model tensor configurations are contradicting each other in "
                f"terms of whether batching is supported")
        batch_hint = should_batch
    profiles = instance_profiles(config, None, max((len(t.profiles) for t in inputs), default=1) or 1)
    max_batch = max_supported_batch(tensors, profiles)
    if batch_hint and max_batch == 0:
        raise InferenceError.invalid(
            f"autofill failed for model '{config.name}': model tensor shape configuration hints for dynamic batching "
            f"but the underlying engine doesn't support batching.")
    if batch_hint is False:
        max_batch = 0
    if config.max_batch_size == 0:
        config.max_batch_size = max_batch
    elif config.max_batch_size > max_batch:
        raise InferenceError.invalid(
            f"autofill failed for model '{config.name}': configuration specified max-batch {config.max_batch_size} "
            f"but TensorRT engine only supports max-batch {max_batch}")
    ensure_dynamic_batching(config)
    fill_io(config, "input", [t.sig() for t in inputs])
    fill_io(config, "output", [t.sig() for t in outputs])


def check_config(model: str, io: ModelIO, tensors: Sequence[EngineTensor]) -> None:
    """Load-time checks of the config against the engine (names, datatypes, ranks)."""
    by_name = {t.config_name: t for t in tensors}
    for kind, specs, is_input in (("input", io.inputs, True), ("output", io.outputs, False)):
        allowed = [t.config_name for t in tensors if t.is_input == is_input]
        for spec in specs:
            t = by_name.get(spec.name)
            if t is None or t.is_input != is_input:
                raise InferenceError.invalid(
                    f"unable to load model '{model}', unexpected inference {kind} '{spec.name}', allowed {kind}s are: "
                    f"{', '.join(allowed)}")
            if t.data_type != spec.data_type:
                raise InferenceError.invalid(
                    f"unable to load model '{model}', unexpected datatype {spec.data_type} for {kind} '{spec.name}', "
                    f"model provides {t.data_type}")
            if t.is_shape_tensor:
                continue
            rank = len(spec.model_dims) + (1 if io.batching else 0)
            if rank != len(t.shape):
                raise InferenceError.invalid(
                    f"unable to load model '{model}', {kind} '{spec.name}' has {len(t.shape)} dimensions in the engine "
                    f"({list(t.shape)}) but the model configuration gives {rank}")
    missing = [t.config_name for t in tensors if t.is_input and t.config_name not in io.input_map]
    if missing:
        raise InferenceError.invalid(
            f"unable to load model '{model}', configuration expects {len(io.inputs)} inputs, model provides "
            f"{sum(1 for t in tensors if t.is_input)} (missing from the configuration: {', '.join(missing)})")


def pick_profile(tensors_by_name: dict[str, EngineTensor], shapes: dict[str, tuple[int, ...]],
                 profiles: Sequence[int]) -> int | None:
    """The first allowed profile whose [min, max] holds every input's shape."""
    for p in profiles:
        fits = True
        for name, shape in shapes.items():
            t = tensors_by_name.get(name)
            if t is None or t.is_shape_tensor or p >= len(t.profiles):
                continue
            lo, _, hi = t.profiles[p]
            if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
                fits = False
                break
        if fits:
            return p
    return None
