"""The Python backend as the model manager sees it: `backend: "python"` models.

Settings, from `--backend-config=python,<key>=<value>` (`BackendContext.config`):

  auto_complete          "false" skips running the model's `auto_complete_config`
                         (naiad's equivalent of `--disable-auto-complete-config` for this
                         backend); default "true".
  max_inflight           batches the scheduler may hand one instance at once when its
                         model has `async def execute`; default 4 (sync models: always 1).
  shm-default-byte-size  size of the first shared-memory region per stub side (bytes);
                         default 8 MiB. Regions are memfds: untouched pages cost nothing.
  shm-growth-byte-size   size of each further region; default 8 MiB. A tensor larger than
                         a region gets a region of its own.
  stub-timeout-seconds   how long `close()` lets `finalize` run before SIGKILL; default 30.
  spare_stub             "false" stops keeping one stub process started ahead of the next
                         load (which saves the interpreter's start-up); default "true".

Keys are matched with '-' and '_' treated alike.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from naiad.kernel.inference.backend import Backend, BackendContext, InstanceSpec, ModelInstance, ModelSpec
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.model_config import config_to_json, parse_json

from .environments import ExecutionEnvironments, PythonEnv, requested_path
from .instance import PythonModelInstance, Session, Settings, run_auto_complete
from .launcher import SpareStub, StubProcess
from .shm import safe_name



# How long a primed auto-complete stub waits for its model's first instance.
_PRIMED_TTL = 120.0


class PythonBackend(Backend):
    """Runs Triton Python models (`model.py` with class `TritonPythonModel`)."""

    name = "python"
    default_model_filename = "model.py"

    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)
        self.settings = settings_from(context.config)
        self.run_id = safe_name(context.run_id or uuid.uuid4().hex[:12], 32)
        self.instances: set[PythonModelInstance] = set()
        self.spare = SpareStub(f"{self.run_id}-spare", enabled=self.settings.spare_stubs)
        # Auto-complete stubs of models without auto_complete_config, kept for the model's
        # first instance (they ran nothing but the import of model.py): model file -> session.
        self.primed: dict[str, Session] = {}
        self.environments = ExecutionEnvironments()  # models' EXECUTION_ENV_PATH

    # ------------------------------------------------------------------ loading --

    def _model_file(self, version_dir: Path, config: Any) -> Path:
        path = version_dir / (config.default_model_filename or self.default_model_filename)
        if not path.is_file():
            raise InferenceError.internal(f"Python model file not found in '{path}'")
        return path

    def _stub_config(self, name: str, model_dir: Path, version: int, config: Any) -> dict:
        version_dir = model_dir / str(version)
        path = self._model_file(version_dir, config)
        return {
            "model_path": str(path),
            "module": f"{version}.{path.stem}",
            "version_dir": str(version_dir),
            "model_dir": str(model_dir),
            "model_name": name,
            "label": f"{self.run_id}-{safe_name(name)}",
            "region_size": self.settings.region_size,
            "first_region_size": self.settings.first_region_size,
        }

    async def _python_env(self, name: str, model_dir: Path, config: Any) -> PythonEnv | None:
        path = requested_path(config, model_dir)
        return None if path is None else await self.environments.get(name, path)

    def _new_stub(self, label: str, python_env: PythonEnv | None) -> StubProcess:
        """A stub process: the warm spare, or one started in the model's own environment."""
        if python_env is None:
            return self.spare.take(label)
        return StubProcess.spawn(label, python_env=python_env)

    async def auto_complete(self, model_dir: Path, version: int, config: Any) -> Any:
        if not self.settings.auto_complete:
            return config
        name = config.name or Path(model_dir).name
        stub_config = self._stub_config(name, Path(model_dir), version, config)
        stub_config["config_json"] = config_to_json(config)
        label = f"{self.run_id}-{safe_name(name)}-ac"
        stub_config["label"] = label
        python_env = await self._python_env(name, Path(model_dir), config)
        text, primed = await run_auto_complete(
            label=label,
            model_name=name,
            context=self.context,
            settings=self.settings,
            config=stub_config,
            stub=self._new_stub(label, python_env),
        )
        if primed is not None:
            self._keep_primed(stub_config["model_path"], primed)
        return parse_json(text, f"the auto-completed configuration of model '{name}'")

    def _keep_primed(self, key: str, session: Session) -> None:
        old = self.primed.pop(key, None)
        if old is not None:
            old.kill("replaced")
        self.primed[key] = session
        loop = asyncio.get_running_loop()
        loop.call_later(_PRIMED_TTL, self._drop_primed, key, session)

    def _drop_primed(self, key: str, session: Session) -> None:
        if self.primed.get(key) is session:
            del self.primed[key]
            session.kill("not used")

    async def create_instance(self, model: ModelSpec, instance: InstanceSpec) -> ModelInstance:
        config = model.config
        decoupled = bool(config.model_transaction_policy.decoupled)
        init = self._stub_config(model.name, model.model_dir, model.version, config)
        label = f"{self.run_id}-{safe_name(instance.name)}"
        init.update(
            label=label,
            instance_name=instance.name,
            decoupled=decoupled,
            all_outputs=tuple(o.name for o in config.output),
            args={
                "model_config": config_to_json(config),
                "model_instance_kind": instance.kind,
                "model_instance_name": instance.name,
                "model_instance_device_id": str(instance.device_id),
                "model_repository": str(model.model_dir),
                "model_version": str(model.version),
                "model_name": model.name,
            },
        )
        python_env = await self._python_env(model.name, model.model_dir, config)
        primed = self.primed.pop(init["model_path"], None)
        inst = PythonModelInstance(
            model=model,
            instance=instance,
            context=self.context,
            settings=self.settings,
            init_config=init,
            decoupled=decoupled,
            label=label,
            stubs=lambda: self._new_stub(label, python_env),
        )
        inst.on_close = self.instances.discard
        self.instances.add(inst)  # from the start, so that abort() reaches an initialize
        try:
            await inst.start(primed)
        except BaseException:
            self.instances.discard(inst)
            raise
        return inst

    def abort(self, error: InferenceError) -> None:
        for inst in list(self.instances):
            inst.abort(error)

    async def close(self) -> None:
        self.spare.close()
        primed, self.primed = list(self.primed.values()), {}
        for session in primed:
            session.kill("backend closed")
        instances, self.instances = list(self.instances), set()
        for inst in instances:
            await inst.close()
        self.environments.close()


def settings_from(config: dict[str, str]) -> Settings:
    """Backend settings from `--backend-config=python,...` values (documented above)."""
    norm = {k.replace("-", "_").lower(): v for k, v in (config or {}).items()}
    defaults = Settings()

    def num(key: str, default: float, cast: type = int) -> Any:
        raw = norm.get(key)
        if raw is None or raw == "":
            return default
        try:
            return cast(raw)
        except ValueError:
            raise InferenceError.invalid(f"python backend: '{key}' must be a number, got '{raw}'") from None

    auto = _flag(norm.get("auto_complete", "true"))
    return Settings(
        region_size=num("shm_growth_byte_size", defaults.region_size),
        first_region_size=num("shm_default_byte_size", defaults.first_region_size),
        stub_timeout=num("stub_timeout_seconds", defaults.stub_timeout, float),
        max_inflight=max(1, num("max_inflight", defaults.max_inflight)),
        auto_complete=auto,
        spare_stubs=_flag(norm.get("spare_stub", "true")),
    )


def _flag(value: str) -> bool:
    return str(value).strip().lower() not in ("false", "0", "no", "off")
