"""The TensorRT backend as the model manager sees it.

Settings, from `--backend-config=tensorrt,<key>=<value>`:

  plugins         ';'-separated plugin libraries loaded (ctypes) before the first engine
  auto_complete   "false" skips auto-complete (`--disable-auto-complete-config`)

Model parameters: `execution_context_allocation_strategy` ("STATIC", the default, or
"ON_PROFILE_CHANGE"), as Triton's.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from pathlib import Path
from typing import Any

from naiad.backends.common.params import auto_complete_enabled, backend_params, model_params
from naiad.kernel.inference.backend import Backend, BackendContext, InstanceSpec, ModelInstance, ModelSpec
from naiad.kernel.inference.errors import InferenceError

from . import engine as eng
from .instance import TrtInstance
from naiad.backends.common.autocomplete import completed_copy
from naiad.backends.common.model_file import model_file

log = logging.getLogger("naiad.backends")


class TensorRTBackend(Backend):
    name = "tensorrt"
    platforms = ("tensorrt_plan",)
    default_model_filename = "model.plan"

    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)
        self.settings = backend_params(context.config, self.name)
        self._plugins_loaded = False

    def _path(self, model_dir: Path, version: int, config: Any) -> Path:
        return model_file(model_dir, version, config, self.default_model_filename)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for lib in filter(None, (p.strip() for p in self.settings.text("plugins").split(";"))):
            try:
                ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                raise InferenceError.invalid(f"tensorrt backend: unable to load plugin '{lib}': {exc}") from None

    async def auto_complete(self, model_dir: Path, version: int, config: Any) -> Any:
        if not auto_complete_enabled(self.settings):
            return config
        completed = completed_copy(config, self.platforms[0], self.default_model_filename)
        path = self._path(model_dir, version, config)
        tensors = await asyncio.to_thread(self._read, path)
        eng.auto_complete(completed, tensors)
        return completed

    def _read(self, path: Path) -> list[eng.EngineTensor]:
        from naiad.ext import cuda_path

        trt = eng.import_trt()
        cuda_path.require("deserializing a TensorRT engine")
        self._load_plugins()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise InferenceError.invalid(f"unable to load plan file to auto complete config: {path}")
        try:
            return eng.read_engine(engine, trt)
        finally:
            del engine, runtime

    async def create_instance(self, model: ModelSpec, instance: InstanceSpec) -> ModelInstance:
        path = self._path(model.model_dir, model.version, model.config)
        self._load_plugins()
        inst = TrtInstance(model, instance, path, model_params(model.config, self.name))
        try:
            await inst.thread.run(inst.load)
        except BaseException:
            try:
                await inst.thread.run(inst.release)
            finally:
                await inst.thread.close()
            raise
        return inst
