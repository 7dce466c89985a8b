"""The typed bus messages of the inference API.

Protocol services (HTTP, gRPC, native front ends) send these; the model manager answers
the model, repository, statistics and shared-memory ones, the tracing service the trace
settings, the kernel the log settings. An `InferenceRequest` itself is the unary infer
message (reply: `InferenceResponse`); `StreamInfer` carries a request and the sink that
receives its responses, for decoupled models and streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..messages import Event, Request
from .stats import ModelStatistics
from .types import InferenceRequest, ResponseSink

# ------------------------------------------------------------------ inference --


@dataclass(slots=True)
class StreamInfer(Request[None]):
    """Submit `request`; every response (and the end) goes to `sink`. Returns once the
    request is accepted (queued), raising InferenceError if it is refused."""

    request: InferenceRequest
    sink: ResponseSink


@dataclass(slots=True)
class SubmitInfer(Request[None]):
    """`StreamInfer` without the await: handled synchronously (`bus.submit`), for
    transports that drive many requests from one callback and want no task per request.
    `unary` asks for the unary path's checks (a decoupled model is refused)."""

    request: InferenceRequest
    sink: ResponseSink
    unary: bool = False


@dataclass(slots=True, frozen=True)
class WatchLanes(Request[None]):
    """A native front end asks to hear of the models' native lanes (ext/frontend/lane.h):
    `on_change(model, version, lane)` is called at once for every open lane, then at
    every change, on the event loop. `version` "" is the model's default version (a URL
    or request that names none); `lane` is the capsule to hand the front end, or None
    when the lane closed. `owner` names the watcher (for `UnwatchLanes`)."""

    owner: str
    on_change: Callable[[str, str, Any], None]


@dataclass(slots=True, frozen=True)
class UnwatchLanes(Request[None]):
    """Stop telling `owner` of lanes (its front end is stopping)."""

    owner: str


# ------------------------------------------------------------------ metadata --


@dataclass(slots=True, frozen=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class ServerMetadataQuery(Request[ServerMetadata]):
    pass


@dataclass(slots=True, frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(slots=True, frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


@dataclass(slots=True, frozen=True)
class ModelReadyQuery(Request[bool]):
    name: str
    version: str = ""


@dataclass(slots=True, frozen=True)
class ModelMetadataQuery(Request[ModelMetadata]):
    name: str
    version: str = ""


@dataclass(slots=True, frozen=True)
class ModelConfigQuery(Request[Any]):
    """Reply: the model's `inference.ModelConfig` protobuf message (do not mutate)."""

    name: str
    version: str = ""


@dataclass(slots=True, frozen=True)
class ModelIsDecoupledQuery(Request[bool]):
    """Whether a ready model is decoupled (protocols pick the unary or the stream path)."""

    name: str
    version: str = ""


# ------------------------------------------------------------------ repository --


@dataclass(slots=True, frozen=True)
class ModelIndexEntry:
    name: str
    version: str = ""
    state: str = ""  # READY, UNAVAILABLE, LOADING, UNLOADING, UNKNOWN
    reason: str = ""


@dataclass(slots=True, frozen=True)
class RepositoryIndexQuery(Request[list]):
    """Reply: list[ModelIndexEntry]."""

    ready_only: bool = False
    repository: str = ""


@dataclass(slots=True)
class LoadModel(Request[None]):
    """Load or reload. `config` is a JSON ModelConfig used instead of config.pbtxt; `files`
    maps "file:<relative path>" to content (needs `config`)."""

    name: str
    config: Optional[str] = None
    files: dict[str, bytes] = field(default_factory=dict)
    repository: str = ""


@dataclass(slots=True, frozen=True)
class UnloadModel(Request[None]):
    name: str
    unload_dependents: bool = False
    repository: str = ""


@dataclass(slots=True, frozen=True)
class PollRepository(Request[None]):
    """Re-scan the repositories and apply changes (poll mode; sent by the poller)."""


@dataclass(slots=True, frozen=True)
class ModelStateChanged(Event):
    name: str
    version: str
    state: str
    reason: str = ""


# ------------------------------------------------------------------ statistics --


@dataclass(slots=True, frozen=True)
class StubInfo:
    """One backend process serving a model instance (a Python stub)."""

    model: str
    version: str
    instance: str
    pid: int | None  # None while the stub is down (restarting)
    restarts: int


@dataclass(slots=True, frozen=True)
class StubProcessQuery(Request[list]):
    """-> list[StubInfo] for every loaded instance that runs in its own process."""


@dataclass(slots=True, frozen=True)
class ModelStatisticsQuery(Request[list]):
    """Reply: list[ModelStatistics] (snapshots); name "" = every model."""

    name: str = ""
    version: str = ""


# ------------------------------------------------------------------ shared memory --


@dataclass(slots=True, frozen=True)
class SystemShmRegion:
    name: str
    key: str
    offset: int
    byte_size: int


@dataclass(slots=True, frozen=True)
class CudaShmRegion:
    name: str
    device_id: int
    byte_size: int


@dataclass(slots=True, frozen=True)
class SystemShmRegister(Request[None]):
    name: str
    key: str
    offset: int
    byte_size: int


@dataclass(slots=True, frozen=True)
class SystemShmUnregister(Request[None]):
    name: str = ""  # "" = all


@dataclass(slots=True, frozen=True)
class SystemShmStatus(Request[list]):
    """Reply: list[SystemShmRegion]; name "" = all, unknown name -> NOT_FOUND."""

    name: str = ""


@dataclass(slots=True, frozen=True)
class CudaShmRegister(Request[None]):
    name: str
    raw_handle: bytes
    device_id: int
    byte_size: int


@dataclass(slots=True, frozen=True)
class CudaShmUnregister(Request[None]):
    name: str = ""


@dataclass(slots=True, frozen=True)
class CudaShmStatus(Request[list]):
    """Reply: list[CudaShmRegion]."""

    name: str = ""


# ------------------------------------------------------------------ trace and log settings --


@dataclass(slots=True)
class TraceSettingRequest(Request[dict]):
    """Read (updates empty) or update trace settings, globally (model "") or per model.

    `updates` maps a setting to its value as the HTTP JSON carries it (a string, a list of
    strings for `trace_level`, None to clear a model's override); gRPC's value lists are
    given in that shape, several values for one setting as a list. Reply: every setting of
    the scope -> str or list[str] (Triton's shape)."""

    model: str = ""
    updates: dict[str, Any] = field(default_factory=dict)
    #: The asking front end, "http" or "grpc": Triton's two check and word some errors apart.
    protocol: str = "http"


@dataclass(slots=True)
class LogSettingRequest(Request[dict]):
    """Read (updates empty) or update log settings; reply: all six settings. `updates` are
    the values as the protocol carries them (JSON values, or the gRPC oneof's value)."""

    updates: dict[str, Any] = field(default_factory=dict)
    protocol: str = "http"


__all__ = [name for name in dir() if not name.startswith("_")] + ["ModelStatistics"]
