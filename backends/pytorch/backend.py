"""The PyTorch backend as the model manager sees it.

Settings, from `--backend-config=pytorch,<key>=<value>`:

  auto_complete   "false" skips auto-complete (set by the model manager under
                  `--disable-auto-complete-config`).

Instances of a model with ENABLE_WEIGHT_SHARING on the same device share one loaded
module (counted; the last instance to close drops it).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from naiad.kernel.inference.backend import Backend, BackendContext, InstanceSpec, ModelInstance, ModelSpec
from naiad.kernel.inference.errors import InferenceError

from naiad.backends.common.params import auto_complete_enabled, backend_params, model_params

from .instance import Caller, TorchInstance
from .signature import check_arguments, complete_inputs, complete_outputs, import_torch, read_forward
from naiad.backends.common.autocomplete import completed_copy
from naiad.backends.common.model_file import model_file


class PyTorchBackend(Backend):
    name = "pytorch"
    platforms = ("pytorch_libtorch",)
    default_model_filename = "model.pt"

    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)
        self.settings = backend_params(context.config, self.name)
        self._shared: dict[tuple[str, str], list[Any]] = {}  # (path, device) -> [module, refs]
        self._shared_lock = threading.Lock()

    def _path(self, model_dir: Path, version: int, config: Any) -> Path:
        return model_file(model_dir, version, config, self.default_model_filename)

    # ------------------------------------------------------------------ auto-complete --

    async def auto_complete(self, model_dir: Path, version: int, config: Any) -> Any:
        if not auto_complete_enabled(self.settings):
            return config
        completed = completed_copy(config, self.platforms[0], self.default_model_filename)
        if len(completed.input) and len(completed.output):
            return completed
        path = self._path(model_dir, version, config)
        await asyncio.to_thread(_complete, path, completed)
        return completed

    # ------------------------------------------------------------------ instances --

    async def create_instance(self, model: ModelSpec, instance: InstanceSpec) -> ModelInstance:
        path = self._path(model.model_dir, model.version, model.config)
        inst = TorchInstance(model, instance, path, model_params(model.config, self.name),
                             self._acquire_shared, self._release_shared)
        try:
            await inst.thread.run(inst.load)
        except BaseException:
            await inst.thread.close()
            raise
        return inst

    def _acquire_shared(self, torch: Any, path: Path, map_location: Any) -> Any:
        key = (str(path), str(map_location))
        with self._shared_lock:
            entry = self._shared.get(key)
            if entry is None:
                module = torch.jit.load(str(path), map_location=map_location)
                module.eval()
                entry = self._shared[key] = [module, 0]
            entry[1] += 1
            return entry[0]

    def _release_shared(self, path: Path, map_location: Any) -> None:
        key = (str(path), str(map_location))
        with self._shared_lock:
            entry = self._shared.get(key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._shared[key]

    async def close(self) -> None:
        self._shared.clear()


def _complete(path: Path, config: Any) -> None:
    """Auto-complete on a worker thread (loads the module on the CPU)."""
    torch = import_torch()
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise InferenceError.invalid(f"failed to load model '{config.name}' to auto-complete it: {exc}") from None
    module.eval()
    sig = read_forward(module)
    check_arguments(config.name, sig)
    complete_inputs(config, sig)
    if len(config.output) == 0:
        caller = Caller(config.name, sig, [t.name for t in config.input], ())
        complete_outputs(torch, module, config, sig, caller)
