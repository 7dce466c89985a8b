"""A tiny model-manager stand-in that drives PythonBackend through naiad's Backend interface.

`Harness` loads models from folders the tests write into tmp_path, keeps one instance
per model, and offers BackendContext.infer/stream that call back into those instances
(so BLS from one stub reaches another model's stub).
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np
from google.protobuf import text_format

from naiad.backends.python.backend import PythonBackend
from naiad.kernel.inference.backend import BackendContext, InstanceSpec, ModelSpec
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import (
    FutureSink,
    InferenceRequest,
    InferenceResponse,
    QueueSink,
    RequestedOutput,
    Tensor,
)
from naiad.protos import model_config_pb2

ADD_SUB = '''
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.args = args

    def execute(self, requests):
        out = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT0", a + b),
                pb_utils.Tensor("OUTPUT1", a - b),
            ]))
        return out
'''

ADD_SUB_CONFIG = '''
name: "add_sub"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
        { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
         { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
'''


def parse_config(text: str) -> Any:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def write_model(root: Path, name: str, source: str, config_text: str, version: int = 1) -> ModelSpec:
    model_dir = root / name
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    (model_dir / str(version) / "model.py").write_text(textwrap.dedent(source))
    (model_dir / "config.pbtxt").write_text(config_text)
    config = parse_config(config_text)
    if not config.name:
        config.name = name
    return ModelSpec(name=name, version=version, repository=root, model_dir=model_dir, config=config)


def request(model: str, inputs: dict[str, np.ndarray], **kw: Any) -> InferenceRequest:
    tensors = [Tensor.from_numpy(k, v) for k, v in inputs.items()]
    outputs = kw.pop("outputs", None)
    if outputs is not None:
        kw["outputs"] = [RequestedOutput(n) for n in outputs]
    return InferenceRequest(model, tensors, **kw)


class Harness:
    def __init__(self, root: Path, *, run_id: str = "test-run", config: dict[str, str] | None = None) -> None:
        self.root = root
        self.instances: dict[str, Any] = {}
        self.specs: dict[str, ModelSpec] = {}
        self.control_calls: list[tuple] = []
        self.context = BackendContext(
            infer=self.infer,
            stream=self.stream,
            model_ready=self._model_ready,
            load_model=self._load_model,
            unload_model=self._unload_model,
            config=dict(config or {}),
            run_id=run_id,
        )
        self.backend = PythonBackend(self.context)

    async def load(self, name: str, source: str, config_text: str, *, version: int = 1, instance_name: str | None = None, kind: str = "CPU") -> Any:
        spec = write_model(self.root, name, source, config_text, version)
        config = await self.backend.auto_complete(spec.model_dir, version, spec.config)
        spec = ModelSpec(spec.name, spec.version, spec.repository, spec.model_dir, config)
        inst = await self.backend.create_instance(spec, InstanceSpec(instance_name or f"{name}_0_0", kind))
        self.instances[name] = inst
        self.specs[name] = spec
        return inst

    async def infer(self, req: InferenceRequest) -> InferenceResponse:
        inst = self.instances.get(req.model_name)
        if inst is None:
            raise InferenceError.not_found(f"Request for unknown model: '{req.model_name}' is not found")
        fut = asyncio.get_running_loop().create_future()
        await inst.execute([req], [FutureSink(fut)])
        return await fut

    async def stream(self, req: InferenceRequest) -> AsyncIterator[InferenceResponse]:
        inst = self.instances.get(req.model_name)
        if inst is None:
            raise InferenceError.not_found(f"Request for unknown model: '{req.model_name}' is not found")
        sink = QueueSink()
        task = asyncio.ensure_future(inst.execute([req], [sink]))
        try:
            async for resp in sink:
                yield resp
        finally:
            await task

    async def batch(self, name: str, reqs: list[InferenceRequest]) -> list[InferenceResponse]:
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in reqs]
        await self.instances[name].execute(reqs, [FutureSink(f) for f in futs])
        return [await f for f in futs]

    async def _model_ready(self, name: str, version: str) -> bool:
        self.control_calls.append(("ready", name, version))
        return name in self.instances

    async def _load_model(self, name: str, config: str, files: dict[str, bytes]) -> None:
        self.control_calls.append(("load", name, config, dict(files)))
        if name == "missing":
            raise InferenceError.not_found("failed to load 'missing'")

    async def _unload_model(self, name: str, unload_dependents: bool) -> None:
        self.control_calls.append(("unload", name, unload_dependents))

    async def close(self) -> None:
        await self.backend.close()


def run(coro: Any, timeout: float = 60.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def stub_processes() -> set[int]:
    """Live naiad stub processes that are children of this test process."""
    me = os.getpid()
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        if int(fields[1]) == me and b"naiad.backends.python.stub" in cmd:
            pids.add(int(entry))
    return pids

