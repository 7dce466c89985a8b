"""Loaded models and their states: UNAVAILABLE, LOADING, READY, UNLOADING (with a reason),
and which version serves a request."""

from __future__ import annotations

import asyncio
import enum
from pathlib import Path
from typing import Any

from naiad.kernel.inference.backend import Backend, ModelInstance, ModelSpec
from naiad.kernel.inference.errors import InferenceError

from .recorder import StatsRecorder
from .scheduler import Scheduler
from .sequence import control_input_names
from .validation import ModelSchema


class State(str, enum.Enum):
    UNKNOWN = "UNKNOWN"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"


class LoadedVersion:
    """One version of a model with its instances and scheduler."""

    def __init__(self, spec: ModelSpec, backend: Backend, recorder: StatsRecorder) -> None:
        self.spec = spec
        self.name = spec.name
        self.version = spec.version
        self.version_str = str(spec.version)
        self.config = spec.config
        self.backend = backend
        self.schema = ModelSchema(spec.config, control_input_names(spec.config))
        self.decoupled = bool(spec.config.model_transaction_policy.decoupled)
        self.instances: list[ModelInstance] = []
        self.scheduler: Scheduler | None = None
        self.signatures: dict[ModelInstance, bytes] = {}  # what each instance is (instances.signature)
        self.recorder = recorder
        self.state = State.LOADING
        self.reason = ""
        self.labels: dict[str, list[str]] = {}  # output name -> labels (classification)

    def load_labels(self) -> None:
        for out in self.config.output:
            if out.label_filename:
                path = self.spec.model_dir / out.label_filename
                try:
                    self.labels[out.name] = path.read_text().splitlines()
                except OSError as exc:
                    raise InferenceError.invalid(
                        f"failed to read label file '{out.label_filename}' of model '{self.name}': {exc.strerror}")

    async def check_ready(self) -> str | None:
        """Why this READY version cannot serve right now (an instance's stub is down, a
        model's `is_ready()` said no), or None. Instances are asked together."""
        if not self.instances:
            return None
        reasons = await asyncio.gather(*(inst.check_ready() for inst in self.instances))
        return next((r for r in reasons if r is not None), None)


class ModelRecord:
    """Everything known about one model name (it may have several versions loaded)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.versions: dict[int, LoadedVersion] = {}
        self.latest: LoadedVersion | None = None  # highest READY version (the hot path's pick)
        self.state = State.UNKNOWN  # for models with no version entries
        self.reason = ""
        self.fingerprint = ""
        self.files_fingerprint = ""  # of the files but config.pbtxt at the last load (in-place updates)
        self.model_dir: Path | None = None
        self.temp_dir: Any = None  # a TemporaryDirectory for file-override loads
        self.wanted = False  # loaded at start or on request; counts for strict readiness

    def refresh_latest(self) -> None:
        ready = [v for v in self.versions.values() if v.state is State.READY]
        self.latest = max(ready, key=lambda v: v.version) if ready else None

    def resolve(self, version: str) -> LoadedVersion:
        if not version:
            lv = self.latest
            if lv is None:
                raise InferenceError.unavailable(
                    f"Request for unknown model: '{self.name}' has no available versions")
            return lv
        try:
            number = int(version)
        except ValueError:
            raise InferenceError.invalid(f"invalid model version '{version}' for model '{self.name}'") from None
        lv = self.versions.get(number)
        if lv is None or lv.state is not State.READY:
            raise InferenceError.not_found(f"Request for unknown model: '{self.name}' version {number} is not found")
        return lv
