"""One ONNX Runtime model instance: an InferenceSession, run on the instance's own thread.

The session is built on that thread at load; its inputs and outputs are checked against
the config there (names, datatypes, ranks and fixed dims, a dynamic leading dim when the
model batches), with Triton's wording. ONNX Runtime's strings are text: BYTES inputs go
in as UTF-8 `str` and string outputs come back as `bytes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from naiad.backends.common.autocomplete import TensorSig
from naiad.backends.common.instance import FrameworkInstance
from naiad.backends.common.io import IOSpec
from naiad.backends.common.params import Params
from naiad.kernel.inference.backend import InstanceSpec, ModelSpec
from naiad.kernel.inference.errors import InferenceError

from . import session as sess
from .signature import import_ort, read_session


class OrtInstance(FrameworkInstance):
    bytes_as_text = True

    def __init__(self, model: ModelSpec, instance: InstanceSpec, path: Path, params: Params,
                 defaults: Params, log_verbose: int = 0) -> None:
        super().__init__(model, instance, "onnxruntime")
        self.path = path
        self.params = params
        self.defaults = defaults
        self.log_verbose = log_verbose
        self.session: Any = None
        self.run_options: Any = None
        self.providers: list[str] = []

    # ------------------------------------------------------------------ load --

    def load(self) -> None:
        """Build the session (on the instance's thread) and check the config against it."""
        ort = import_ort()
        config = self.model.config
        options = sess.session_options(ort, config, self.params, self.defaults, self.log_verbose)
        chain = sess.providers(ort, config, self.params, self.instance.kind, self.instance.device_id)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=chain)
        except Exception as exc:
            raise InferenceError.invalid(
                f"failed to load model '{self.model.name}' from '{self.path}': {exc}") from None
        self.providers = list(self.session.get_providers())
        self.run_options = sess.run_options(ort, self.params)
        sig = read_session(self.session)
        check_against_model(self.model.name, self.io.batching, self.io.inputs, sig.inputs, "input",
                            self.io.control_inputs)
        check_against_model(self.model.name, self.io.batching, self.io.outputs, sig.outputs, "output",
                            self.io.state_outputs)
        self._string_outputs = {s.name for s in sig.outputs if s.data_type == "TYPE_STRING"}

    # ------------------------------------------------------------------ execution --

    def infer(self, inputs: dict[str, np.ndarray], outputs: tuple[str, ...]) -> Mapping[str, np.ndarray]:
        names = list(outputs)
        results = self.session.run(names, inputs, self.run_options)
        out = {}
        for name, array in zip(names, results):
            if name in self._string_outputs and array.dtype.hasobject:
                array = _encode(array)
            out[name] = array
        return out

    def describe_error(self, exc: BaseException) -> str:
        return f"onnx runtime error {exc}"

    def release(self) -> None:
        self.session = None


def _encode(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    out = np.empty(flat.shape[0], dtype=object)
    out[:] = [s.encode("utf-8") if isinstance(s, str) else s for s in flat]
    return out.reshape(array.shape)


def check_against_model(model: str, batching: bool, configured: list[IOSpec], actual: list[TensorSig],
                        kind: str, implicit: tuple[str, ...] = ()) -> None:
    """Triton's load-time checks of the config's inputs or outputs against the model's.
    `implicit`: model tensors the sequence batcher provides (control inputs, state)."""
    by_name = {s.name: s for s in actual}
    for spec in configured:
        sig = by_name.get(spec.name)
        if sig is None:
            allowed = ", ".join(s.name for s in actual)
            raise InferenceError.invalid(
                f"unable to load model '{model}', unexpected inference {kind} '{spec.name}', "
                f"allowed {kind}s are: {allowed}")
        if sig.data_type != "TYPE_INVALID" and sig.data_type != spec.data_type:
            raise InferenceError.invalid(
                f"unable to load model '{model}', unexpected datatype {spec.data_type} for {kind} "
                f"'{spec.name}', model provides {sig.data_type}")
        if sig.shape is None:
            continue
        shape = sig.shape
        expected = spec.model_dims
        if batching:
            if not shape or shape[0] != -1:
                raise InferenceError.invalid(
                    f"model '{model}', tensor '{spec.name}': for the model to support batching the shape "
                    f"should have at least 1 dimension and the first dimension must be -1; but shape "
                    f"expected by the model is {list(shape)}")
            shape = shape[1:]
        if len(shape) != len(expected) or any(m >= 0 and c >= 0 and m != c for m, c in zip(shape, expected)):
            raise InferenceError.invalid(
                f"model '{model}', tensor '{spec.name}': the model expects {len(shape) + batching} dimensions "
                f"(shape {list(sig.shape)}) but the model configuration specifies {len(expected) + batching} "
                f"dimensions (an initial batch dimension because max_batch_size > 0 followed by the explicit "
                f"tensor shape, making complete shape {([-1] if batching else []) + list(expected)})"
                if batching else
                f"model '{model}', tensor '{spec.name}': the model expects {len(shape)} dimensions (shape "
                f"{list(sig.shape)}) but the model configuration specifies {len(expected)} dimensions "
                f"(shape {list(expected)})")
    if kind == "input":
        known = {c.name for c in configured}.union(implicit)
        missing = [s.name for s in actual if s.name not in known]
        if missing:
            raise InferenceError.invalid(
                f"unable to load model '{model}', configuration expects {len(configured)} inputs, model provides "
                f"{len(actual)} (missing from the configuration: {', '.join(missing)})")
