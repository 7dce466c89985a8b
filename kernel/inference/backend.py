"""The interface every backend implements (Python, ONNX Runtime, PyTorch, TensorRT, ...).

A backend is chosen by a model config's `backend` / `platform` and loaded by import string
(see `naiad.kernel.importer`), so a new backend never touches the protocol services or the
model manager. The model manager owns scheduling: it forms batches and hands each one to a
free `ModelInstance`; the instance delivers every request's responses to that request's
sink and returns when it can take another batch.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, ClassVar, NamedTuple, Sequence

from .errors import InferenceError
from .types import InferenceRequest, InferenceResponse, ResponseSink


@dataclass(frozen=True)
class ModelSpec:
    """One version of one model, as the repository found it."""

    name: str
    version: int
    repository: Path  # the repository root that holds the model folder
    model_dir: Path  # <repository>/<name> (or a temporary folder for file overrides)
    config: Any  # naiad.protos.model_config_pb2.ModelConfig, complete and normalised

    @property
    def version_dir(self) -> Path:
        return self.model_dir / str(self.version)


@dataclass(frozen=True)
class InstanceSpec:
    """One instance of a model from its `instance_group`s (Triton names: `<group>_<index>`)."""

    name: str
    kind: str  # "CPU", "GPU" or "MODEL"
    device_id: int = 0
    group: str = ""
    index: int = 0


class ExecutionTimes(NamedTuple):
    """Monotonic ns timestamps of one execution, for statistics and traces."""

    compute_start: int
    compute_input_end: int
    compute_output_start: int
    compute_end: int
    #: The execution failed as a whole (execute raised, the framework refused the batch,
    #: the instance died): every request was answered with that error. Triton's backends
    #: then report no batch statistics (a decoupled Python model's still does).
    failed: bool = False


@dataclass
class BackendContext:
    """What naiad offers a backend: calls back into the inference API (BLS), model control,
    its `--backend-config` settings, and server-wide identifiers."""

    infer: Callable[[InferenceRequest], Awaitable[InferenceResponse]]
    stream: Callable[[InferenceRequest], AsyncIterator[InferenceResponse]]
    model_ready: Callable[[str, str], Awaitable[bool]]
    load_model: Callable[[str, str, dict[str, bytes]], Awaitable[None]]
    unload_model: Callable[[str, bool], Awaitable[None]]
    config: dict[str, str] = field(default_factory=dict)  # --backend-config=<backend>,k=v
    server_id: str = "naiad"
    run_id: str = ""  # unique per server process: names shm regions so servers never collide
    log_verbose: int = 0


class ModelInstance(abc.ABC):
    """One loaded instance of a model version."""

    #: How many batches the scheduler may hand this instance at once. 1 for ordinary
    #: models; more where the backend runs several executions concurrently (Python
    #: models with `async def execute`).
    max_inflight: int = 1

    @abc.abstractmethod
    async def execute(
        self, requests: Sequence[InferenceRequest], sinks: Sequence[ResponseSink]
    ) -> ExecutionTimes:
        """Run one batch. Each request's responses go to `sinks[i]` (on the loop thread),
        the last with `final=True` (or `sink.finish()`). Returns when the instance may take
        the next batch; a decoupled model may still be sending responses then.

        Must not raise for a model error: deliver it as an error response. Raises only
        when the instance itself failed (it is then restarted by its backend)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finalize the model and release every resource (processes, shared memory)."""

    def abort(self, error: InferenceError) -> None:
        """Shutdown's exit timeout ran out: end the work in flight now, answering it with
        `error`, and take no more (`close()` still follows). Default: nothing to end early
        (a backend that runs in this process finishes its batch)."""

    async def check_ready(self) -> str | None:
        """Why this instance cannot serve right now, or None when it can. A loaded model
        is ready only while every instance is (Triton's TRITONBACKEND_ModelInstanceReady)."""
        return None


class Backend(abc.ABC):
    """A kind of model runtime. One object per backend name per server."""

    #: The `backend` name in config.pbtxt ("python", "onnxruntime", ...).
    name: ClassVar[str]
    #: `platform` names that select this backend ("onnxruntime_onnx", ...).
    platforms: ClassVar[tuple[str, ...]] = ()
    #: The model file name in a version folder when the config names none.
    default_model_filename: ClassVar[str] = ""

    def __init__(self, context: BackendContext) -> None:
        self.context = context

    async def auto_complete(self, model_dir: Path, version: int, config: Any) -> Any:
        """Fill what a config leaves out, from the model itself. Default: unchanged."""
        return config

    @abc.abstractmethod
    async def create_instance(self, model: ModelSpec, instance: InstanceSpec) -> ModelInstance:
        """Load one instance (may take long: it runs off the hot path)."""

    def abort(self, error: InferenceError) -> None:
        """Shutdown's exit timeout ran out: end what this backend's instances still run,
        loads included (see ModelInstance.abort). Default: nothing to end early."""

    async def close(self) -> None:
        """Release backend-wide resources at shutdown."""
