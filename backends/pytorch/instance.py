"""One PyTorch (TorchScript) model instance.

The module is loaded on the instance's own thread onto the instance's device: `cpu` for
KIND_CPU, `cuda:<device_id>` for KIND_GPU, and for KIND_MODEL wherever the model's own
parameters live (inputs go to the device of its first parameter). Each execution runs
under `torch.inference_mode()` (Triton's INFERENCE_MODE, on by default) with the other
modes the config's `parameters` ask for.

On a GPU the instance has its own CUDA stream: inputs are gathered into pinned host
buffers from `naiad.ext.host_buffers.default_pool()` and copied to the device without
blocking, the forward pass runs on that stream, outputs are copied back into pinned
buffers, and an event recorded after the copies is waited on (on the instance's thread).

Parameters (Triton's names): INFERENCE_MODE, DISABLE_OPTIMIZED_EXECUTION, DISABLE_CUDNN,
ENABLE_CACHE_CLEANING, ENABLE_WEIGHT_SHARING, ENABLE_JIT_EXECUTOR, ENABLE_JIT_PROFILING,
INTRA_OP_THREAD_COUNT (or NUM_THREADS), INTER_OP_THREAD_COUNT (or NUM_INTEROP_THREADS).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from naiad.backends.common.dtypes import numpy_of
from naiad.backends.common.instance import FrameworkInstance
from naiad.backends.common.params import Params
from naiad.kernel.inference.backend import InstanceSpec, ModelSpec
from naiad.kernel.inference.errors import InferenceError

from . import naming
from .signature import ForwardSignature, check_arguments, import_torch, read_forward

log = logging.getLogger("naiad.backends")

_interop_set = False


class Caller:
    """Calls forward() with a batch's inputs and picks the outputs from its results,
    following the naming conventions (see `naming`)."""

    def __init__(self, model: str, sig: ForwardSignature, input_names: list[str], output_names: tuple[str, ...]) -> None:
        self.model = model
        self.sig = sig
        self.inputs = naming.map_inputs(model, sig.names, sig.dict_input, input_names)
        self.outputs = naming.map_outputs(model, output_names, sig.returns == "dict")
        self.nargs = len(sig.arguments)

    def __call__(self, module: Any, values: Mapping[str, Any]) -> Any:
        if self.inputs.convention == naming.DICT:
            return module(dict(values))
        args: list[Any] = [None] * self.nargs
        for name, value in values.items():
            pos = self.inputs.positions.get(name)
            if pos is None:
                raise InferenceError.invalid(f"unexpected inference input '{name}' for model '{self.model}'")
            args[pos] = value
        return module(*args)

    def results(self, result: Any, names: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if isinstance(result, dict):
            for n in names:
                if n not in result:
                    raise InferenceError.internal(
                        f"output '{n}' is not among the keys forward() returned: {', '.join(map(str, result))}")
                out[n] = result[n]
            return out
        if isinstance(result, (tuple, list)) and not (result and isinstance(result[0], str)):
            seq = list(result)
        else:
            seq = [result]
        for n in names:
            pos = self.outputs.positions.get(n)
            if pos is None:
                raise InferenceError.internal(f"unexpected inference output '{n}' for model '{self.model}'")
            if pos >= len(seq):
                raise InferenceError.internal(
                    f"output '{n}' is result {pos} of forward(), but model '{self.model}' returned {len(seq)}")
            out[n] = seq[pos]
        return out


class TorchInstance(FrameworkInstance):
    copy_inputs = True  # a model may write into its inputs: never hand it request buffers

    def __init__(self, model: ModelSpec, instance: InstanceSpec, path: Path, params: Params,
                 acquire: Callable[[Any, Path, Any], Any], release: Callable[[Path, Any], None]) -> None:
        super().__init__(model, instance, "pytorch")
        self.path = path
        self.params = params
        self._acquire = acquire
        self._release = release
        self.torch: Any = None
        self.module: Any = None
        self.device: Any = None
        self.stream: Any = None
        self.caller: Caller | None = None
        self._share_key: Any = None

    # ------------------------------------------------------------------ load --

    def load(self) -> None:
        torch = self.torch = import_torch()
        p = self.params
        self.inference_mode = p.flag("INFERENCE_MODE", True)
        self.optimized = not p.flag("DISABLE_OPTIMIZED_EXECUTION", False)
        self.cudnn = not p.flag("DISABLE_CUDNN", False)
        self.clean_cache = p.flag("ENABLE_CACHE_CLEANING", False)
        self._threads(torch)
        if p.has("ENABLE_JIT_EXECUTOR"):
            torch._C._jit_set_profiling_executor(p.flag("ENABLE_JIT_EXECUTOR", True))
        if p.has("ENABLE_JIT_PROFILING"):
            torch._C._jit_set_profiling_mode(p.flag("ENABLE_JIT_PROFILING", True))
        kind = self.instance.kind
        if kind == "GPU":
            if not torch.cuda.is_available():
                raise InferenceError.invalid(
                    f"model '{self.model.name}' has a KIND_GPU instance group, but torch sees no CUDA device "
                    f"(torch {torch.__version__}, CUDA {torch.version.cuda or 'none'})")
            if self.instance.device_id >= torch.cuda.device_count():
                raise InferenceError.invalid(
                    f"instance '{self.instance.name}': GPU {self.instance.device_id} does not exist "
                    f"({torch.cuda.device_count()} visible)")
            self.device = torch.device("cuda", self.instance.device_id)
            torch.cuda.set_device(self.device)
            map_location = self.device
        elif kind == "MODEL":
            map_location = None
        else:
            self.device = torch.device("cpu")
            map_location = self.device
        share = p.flag("ENABLE_WEIGHT_SHARING", False)
        self._share_key = map_location if share else None
        try:
            self.module = self._acquire(torch, self.path, map_location) if share else self._load(torch, map_location)
        except InferenceError:
            raise
        except Exception as exc:
            raise InferenceError.invalid(f"failed to load model '{self.model.name}': {exc}") from None
        if kind == "MODEL":
            first = next(iter(self.module.parameters()), None)
            self.device = first.device if first is not None else torch.device("cpu")
        sig = read_forward(self.module)
        check_arguments(self.model.name, sig)
        self.caller = Caller(self.model.name, sig, [s.name for s in self.io.inputs] + list(self.io.control_inputs),
                             self.io.output_names + self.io.state_outputs)
        self._check_string_inputs(sig)
        if self.device.type == "cuda":
            from naiad.ext.host_buffers import default_pool

            self.stream = torch.cuda.Stream(device=self.device)
            self.pool = default_pool()

    def _load(self, torch: Any, map_location: Any) -> Any:
        module = torch.jit.load(str(self.path), map_location=map_location)
        module.eval()
        return module

    def _threads(self, torch: Any) -> None:
        global _interop_set
        p = self.params
        intra = p.integer("INTRA_OP_THREAD_COUNT", p.integer("NUM_THREADS", 0))
        if intra > 0:
            torch.set_num_threads(intra)  # applies to this instance's thread
        inter = p.integer("INTER_OP_THREAD_COUNT", p.integer("NUM_INTEROP_THREADS", 0))
        if inter > 0 and not _interop_set:
            try:
                torch.set_num_interop_threads(inter)
                _interop_set = True
            except RuntimeError as exc:  # only once per process, before any inter-op work
                log.warning("model '%s': INTER_OP_THREAD_COUNT %d ignored: %s", self.model.name, inter, exc)

    def _check_string_inputs(self, sig: ForwardSignature) -> None:
        for spec in self.io.inputs:
            if spec.is_bytes and len(spec.model_dims) + (1 if self.io.batching else 0) > 1:
                raise InferenceError.invalid(
                    f"Triton only supports 1 dimensional List of String as input for '{spec.name}' for model "
                    f"'{self.model.name}'")

    # ------------------------------------------------------------------ execution --

    def _modes(self) -> contextlib.ExitStack:
        torch = self.torch
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode() if self.inference_mode else torch.no_grad())
        if not self.optimized:
            stack.enter_context(torch.jit.optimized_execution(False))
        if not self.cudnn:
            stack.enter_context(torch.backends.cudnn.flags(enabled=False))
        if self.stream is not None:
            stack.enter_context(torch.cuda.stream(self.stream))
        return stack

    def _to_torch(self, name: str, array: np.ndarray) -> Any:
        torch = self.torch
        spec = self.io.input_map.get(name)
        if spec is not None and spec.is_bytes:
            try:
                return [bytes(b).decode("utf-8") if not isinstance(b, str) else b for b in array.reshape(-1)]
            except UnicodeDecodeError:
                raise InferenceError.invalid(f"input '{name}': string elements must be valid UTF-8 for TorchScript") from None
        if spec is not None and spec.datatype == "BF16":
            tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        else:
            tensor = torch.from_numpy(array)
        if self.device is not None and self.device.type != "cpu":
            tensor = tensor.to(self.device, non_blocking=True)
        return tensor

    def _to_host(self, name: str, value: Any) -> Any:
        """Start the copy of one result to host memory; returns a thunk giving the array
        once the stream has finished."""
        torch = self.torch
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            out = np.empty(len(value), dtype=object)
            out[:] = [v.encode("utf-8") for v in value]
            return lambda: out
        if not isinstance(value, torch.Tensor):
            raise InferenceError.internal(
                f"output '{name}' of model '{self.model.name}' is a {type(value).__name__}; only tensors (and "
                f"List[str]) can be returned")
        value = value.detach()
        np_dtype = np.dtype(np.uint16) if value.dtype == torch.bfloat16 else None
        if value.device.type == "cpu":
            value = value.contiguous()
            if np_dtype is not None:
                array = value.view(torch.int16).numpy().view(np_dtype)
            else:
                array = value.numpy()
            return lambda: array
        shape = tuple(value.shape)
        count = value.numel()
        nbytes = count * value.element_size()
        spec = self.io.output_map.get(name)
        if np_dtype is None:
            np_dtype = numpy_of(spec.data_type) if spec is not None and not spec.is_bytes else \
                torch.empty((), dtype=value.dtype).numpy().dtype
        buf = self.pool.acquire(max(nbytes, 1))
        host = torch.frombuffer(buf, dtype=value.dtype, count=count).reshape(shape) if count else \
            torch.empty(shape, dtype=value.dtype)
        if count:
            host.copy_(value, non_blocking=True)
        return lambda: np.frombuffer(buf, dtype=np_dtype, count=count).reshape(shape)

    def infer(self, inputs: dict[str, np.ndarray], outputs: tuple[str, ...]) -> Mapping[str, np.ndarray]:
        torch = self.torch
        assert self.caller is not None
        with self._modes():
            values = {name: self._to_torch(name, array) for name, array in inputs.items()}
            result = self.caller(self.module, values)
            picked = self.caller.results(result, outputs)
            pending = {name: self._to_host(name, value) for name, value in picked.items()}
            if self.stream is not None:
                done = torch.cuda.Event()
                done.record(self.stream)
                done.synchronize()
        arrays = {name: thunk() for name, thunk in pending.items()}
        if self.clean_cache and self.stream is not None:
            torch.cuda.empty_cache()
        return arrays

    def describe_error(self, exc: BaseException) -> str:
        text = str(exc).strip()
        return f"PyTorch execute failure: {text}"

    def release(self) -> None:
        if self.module is not None and self._share_key is not None:
            self._release(self.path, self._share_key)
        self.module = None
        self.stream = None

