"""The ONNX Runtime backend as the model manager sees it.

Settings, from `--backend-config=onnxruntime,<key>=<value>` (`BackendContext.config`):

  default-max-batch-size   max_batch_size auto-complete gives a model that can batch and
                           whose config sets none; default 4 (Triton's).
  intra_op_thread_count,   session thread counts for models whose config sets none
  inter_op_thread_count    (Triton's global-threadpool settings; ORT's Python API has no
                           global pool, so each session gets these counts).
  auto_complete            "false" skips auto-complete (set by the model manager under
                           `--disable-auto-complete-config`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from naiad.backends.common import autocomplete as ac
from naiad.backends.common.params import auto_complete_enabled, backend_params, default_max_batch_size, model_params
from naiad.kernel.inference.backend import Backend, BackendContext, InstanceSpec, ModelInstance, ModelSpec

from .instance import OrtInstance
from .signature import read
from naiad.backends.common.autocomplete import completed_copy
from naiad.backends.common.model_file import model_file


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    platforms = ("onnxruntime_onnx",)
    default_model_filename = "model.onnx"

    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)
        self.settings = backend_params(context.config, self.name)

    def _path(self, model_dir: Path, version: int, config: Any) -> Path:
        return model_file(model_dir, version, config, self.default_model_filename, folder_holds="model.onnx")

    async def auto_complete(self, model_dir: Path, version: int, config: Any) -> Any:
        if not auto_complete_enabled(self.settings):
            return config
        completed = completed_copy(config, self.platforms[0], self.default_model_filename)
        input_count = len(config.input) + len(config.batch_input)
        if input_count and len(config.output):
            return completed  # Triton skips auto-complete when both are given
        sig = await asyncio.to_thread(read, self._path(model_dir, version, config))
        ac.set_max_batch_size(completed, ac.supports_batching(sig.inputs, sig.outputs),
                              default_max_batch_size(self.settings), self.name)
        if input_count == 0:
            ac.fill_io(completed, "input", sig.inputs)
        if len(config.output) == 0:
            ac.fill_io(completed, "output", sig.outputs)
        return completed

    async def create_instance(self, model: ModelSpec, instance: InstanceSpec) -> ModelInstance:
        path = self._path(model.model_dir, model.version, model.config)
        inst = OrtInstance(model, instance, path, model_params(model.config, self.name), self.settings,
                           self.context.log_verbose)
        try:
            await inst.thread.run(inst.load)
        except BaseException:
            await inst.thread.close()
            raise
        return inst
