"""`model_warmup`: the samples of config.pbtxt run on every instance before its version
turns READY, as Triton 24.04's core does (backend_model_instance.cc).

Per instance: each sample with `batch_size` > 0, in config order, `max(count, 1)` times;
one execution of `batch_size` requests each with batch 1 (the batch dimension only where
the model batches). Data: zeros, random bytes (BYTES: zeros, i.e. empty strings), or a
file under the model's `warmup/` folder (BYTES: the whole file, already length-prefixed;
else its first bytes). The requests go straight to the instance's execute (no scheduler,
no request checks). Given a recorder, they count in the version's statistics as Triton
24.04's backends report warmup requests (its warmup InferenceRequest keeps collect_stats_
true); without one they count nowhere. A failed response fails the load.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from naiad.kernel.inference.backend import ModelInstance, ModelSpec
from naiad.kernel.inference.datatypes import CONFIG_ENUM_NAME, CONFIG_TO_WIRE, WIRE_ITEMSIZE
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, ResponseSink, Tensor

from .recorder import AnswerWatch, Ran, StatsRecorder

log = logging.getLogger("naiad.services.models")

WARMUP_FOLDER = "warmup"  # Triton's kWarmupDataFolder
_LOG_REQUEST = "[request id: <id_unknown>] "  # Triton's LogRequest() of a request without id


@dataclass
class Sample:
    """One `model_warmup` entry made ready to run: its requests, reused every iteration."""

    name: str
    count: int
    requests: list[InferenceRequest] = field(default_factory=list)


def _element_count(dims: Sequence[int]) -> int:
    """Triton's GetElementCount: -1 with a variable dimension, 0 for no dimensions."""
    if any(d == -1 for d in dims):
        return -1
    count = 0
    for i, d in enumerate(dims):
        count = d if i == 0 else count * d
    return count


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InferenceError.internal(f"failed to open text file for read {path}: {os.strerror(exc.errno or 0)}") from None


def _wire(data_type: int) -> str:
    name = CONFIG_ENUM_NAME.get(data_type, str(data_type))
    try:
        return CONFIG_TO_WIRE[name]
    except KeyError:
        raise InferenceError.invalid(f"unsupported data type {name}") from None


def build_samples(spec: ModelSpec) -> list[Sample]:
    """The samples of `spec.config.model_warmup`, with Triton's checks and error texts.
    Random bytes are drawn here, so each instance gets its own (as Triton)."""
    config = spec.config
    batching = config.max_batch_size != 0
    samples: list[Sample] = []
    for setting in config.model_warmup:
        if setting.batch_size == 0:
            log.debug("Skipping batch 0 warmup sample '%s'", setting.name, extra={"verbose": 1})
            continue
        log.debug("Generating warmup sample data for '%s'", setting.name, extra={"verbose": 1})
        # First pass: byte sizes (BYTES counts 4 bytes, a zero length, per element).
        sizes: dict[str, int] = {}
        for name, meta in setting.inputs.items():
            count = _element_count(meta.dims)
            if count == -1:
                raise InferenceError.invalid(
                    f"warmup setting expects all variable-size dimensions are specified for input '{name}'")
            itemsize = WIRE_ITEMSIZE.get(CONFIG_TO_WIRE.get(CONFIG_ENUM_NAME.get(meta.data_type, ""), ""))
            sizes[name] = count * (itemsize or 4)
        random_size = max((sizes[n] for n, m in setting.inputs.items()
                           if m.WhichOneof("input_data_type") == "random_data" and _wire(m.data_type) != "BYTES"),
                          default=0)
        random_data = os.urandom(random_size)  # one buffer per sample, every input reads its start
        sample = Sample(setting.name, max(setting.count, 1))
        for _ in range(setting.batch_size):
            inputs: list[Tensor] = []
            for name, meta in setting.inputs.items():
                size, wire = sizes[name], _wire(meta.data_type)
                kind = meta.WhichOneof("input_data_type")
                if kind == "zero_data" or (kind == "random_data" and wire == "BYTES"):
                    data = bytes(size)
                elif kind == "random_data":
                    data = random_data[:size]
                elif kind == "input_data_file":
                    data = _read_file(spec.model_dir / WARMUP_FOLDER / meta.input_data_file)
                    if wire != "BYTES":
                        if size > len(data):
                            # Triton's text, its missing space included.
                            raise InferenceError.invalid(
                                f"{_LOG_REQUEST}warmup setting expects {size} bytes, but the data provided from "
                                f"{meta.input_data_file}only has {len(data)} bytes")
                        data = data[:size]
                else:
                    raise InferenceError.invalid(f"{_LOG_REQUEST}warmup setting expects input '{name}' to have input_data_type set")
                shape = ([1] if batching else []) + list(meta.dims)
                inputs.append(Tensor(name, wire, shape, raw=data))
            sample.requests.append(InferenceRequest(spec.name, inputs, model_version=str(spec.version),
                                                    protocol="warmup"))
        samples.append(sample)
    return samples


class _Collect(ResponseSink):
    """Waits for a warmup request's final response and keeps its error, if any."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.error: str | None = None

    def send(self, response: InferenceResponse) -> None:
        if response.error is not None and self.error is None:
            self.error = response.error.message
        if response.final and not self.done.done():
            self.done.set_result(None)

    def finish(self, error: InferenceError | None = None) -> None:
        if error is not None and self.error is None:
            self.error = error.message
        if not self.done.done():
            self.done.set_result(None)


async def _run_once(inst: ModelInstance, sample: Sample, recorder: StatsRecorder | None,
                    decoupled: bool) -> list[str]:
    """One execution of the sample; the error messages of its responses. With a recorder
    it counts in the statistics as Triton's backends report warmup requests."""
    collects = [_Collect() for _ in sample.requests]
    watches = [AnswerWatch(c) for c in collects]
    start = time.monotonic_ns()
    for r in sample.requests:
        r.arrival_ns = start  # each iteration is timed on its own (Triton captures it anew)
    try:
        times = await inst.execute(sample.requests, watches)
    except InferenceError as exc:
        return [exc.message]
    await asyncio.gather(*(c.done for c in collects))
    if recorder is not None:
        recorder.executed(times, decoupled, [Ran(r, 1, max(times.compute_start - start, 0), None if decoupled else w)
                                             for r, w in zip(sample.requests, watches)])
        for r, c in zip(sample.requests, collects):
            recorder.request_done(r.arrival_ns, None if c.error is None else InferenceError.internal(c.error))
    return [c.error for c in collects if c.error is not None]


async def warm_up(inst: ModelInstance, spec: ModelSpec, name: str, recorder: StatsRecorder | None = None) -> float:
    """Run every sample on one instance (named `name` in the log); raise Triton's error
    at the first sample that fails. Returns the seconds it took."""
    started = time.monotonic()
    samples = build_samples(spec)
    decoupled = bool(spec.config.model_transaction_policy.decoupled)
    for sample in samples:
        for iteration in range(1, sample.count + 1):
            log.debug("model '%s' instance %s is running warmup sample '%s' for iteration %d",
                      spec.name, name, sample.name, iteration, extra={"verbose": 1})
            errors = await _run_once(inst, sample, recorder, decoupled)
            if errors:
                log.debug("model '%s' instance %s failed to run warmup sample '%s'", spec.name, name, sample.name,
                          extra={"verbose": 1})
                raise InferenceError.invalid(
                    f"failed to run warmup sample '{sample.name}': " + "".join(f"{e}; " for e in errors))
    return time.monotonic() - started
