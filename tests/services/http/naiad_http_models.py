"""Python-backend models for the HTTP tests, written into a model repository on demand."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from support.naiad_process import NaiadProcess
from support.models import ADD_SUB_MODEL as _ADD_SUB

# Wire datatype -> config enum, every datatype Triton has.
DATATYPES = {
    "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64", "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64", "FP16": "TYPE_FP16", "FP32": "TYPE_FP32", "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING", "BF16": "TYPE_BF16",
}

_IDENTITY_ALL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            outs = []
            for t in request.inputs():
                name = "OUT_" + t.name()[3:]
                outs.append(pb_utils.Tensor(name, t.as_numpy(), t.triton_dtype()))
            responses.append(pb_utils.InferenceResponse(outs))
        return responses
"""

_IDENTITY = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(
            r, "INPUT0").as_numpy())]) for r in requests]
"""

_ECHO = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for r in requests:
            info = {"parameters": json.loads(r.parameters() or "{}"), "id": r.request_id(),
                    "correlation_id": r.correlation_id()}
            x = pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", x),
                pb_utils.Tensor("INFO", np.array([json.dumps(info).encode()], dtype=np.object_)),
            ]))
        return responses
"""

_REVERSE = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy()
            out = np.array([bytes(v)[::-1] for v in x.reshape(-1)], dtype=np.object_).reshape(x.shape)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", out)]))
        return responses
"""

_REPEAT = """
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.threads = []

    def execute(self, requests):
        for request in requests:
            t = threading.Thread(target=self._respond, args=(request,), daemon=True)
            t.start()
            self.threads.append(t)
        return None

    def _respond(self, request):
        sender = request.get_response_sender()
        values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
        delay = pb_utils.get_input_tensor_by_name(request, "DELAY_MS")
        delay_s = float(delay.as_numpy()[0]) / 1000 if delay is not None else 0.0
        for idx, value in enumerate(values):
            if sender.is_cancelled():
                break
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([value], dtype=np.int32)),
                                                    pb_utils.Tensor("IDX", np.array([idx], dtype=np.uint32))]))
            if delay_s:
                time.sleep(delay_s)
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        for t in self.threads:
            t.join(timeout=5)
"""

_CLASSIFIER = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(
            r, "IN").as_numpy())]) for r in requests]
"""

_FAIL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError("model says no")) for r in requests]
"""


def _io(kind: str, name: str, config_type: str, dims: str, extra: str = "") -> str:
    return f'  {{ name: "{name}" data_type: {config_type} dims: [ {dims} ]{extra} }}'


def _model(repo: Path, name: str, config: str, code: str, files: dict[str, str] | None = None) -> None:
    d = repo / name
    (d / "1").mkdir(parents=True, exist_ok=True)
    (d / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "python"\n' + config)
    (d / "1" / "model.py").write_text(code)
    for rel, text in (files or {}).items():
        (d / rel).write_text(text)


def identity_all_config() -> str:
    ins = ",\n".join(_io("input", f"IN_{w}", c, "-1", " optional: true") for w, c in DATATYPES.items())
    outs = ",\n".join(_io("output", f"OUT_{w}", c, "-1") for w, c in DATATYPES.items())
    return f"max_batch_size: 0\ninput [\n{ins}\n]\noutput [\n{outs}\n]\n"


MODELS: dict[str, tuple[str, str, dict[str, str] | None]] = {
    "identity_all": (identity_all_config(), _IDENTITY_ALL, None),
    "identity_fp32": (
        "max_batch_size: 64\n"
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        "dynamic_batching { }\n", _IDENTITY, None),
    "add_sub": (
        "max_batch_size: 0\n"
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },'
        ' { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },'
        ' { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]\n', _ADD_SUB, None),
    "echo": (
        "max_batch_size: 0\n"
        'input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ -1 ] },'
        ' { name: "INFO" data_type: TYPE_STRING dims: [ 1 ] } ]\n', _ECHO, None),
    "reverse": (
        "max_batch_size: 8\n"
        'input [ { name: "TEXT" data_type: TYPE_STRING dims: [ -1 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_STRING dims: [ -1 ] } ]\n', _REVERSE, None),
    "repeat": (
        "max_batch_size: 0\nmodel_transaction_policy { decoupled: true }\n"
        'input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] },'
        ' { name: "DELAY_MS" data_type: TYPE_UINT32 dims: [ 1 ] optional: true } ]\n'
        'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] },'
        ' { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] } ]\n', _REPEAT, None),
    "classifier": (
        "max_batch_size: 0\n"
        'input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" } ]\n',
        _CLASSIFIER, {"labels.txt": "cat\ndog\nbird\nfish\n"}),
    "fail": (
        "max_batch_size: 0\n"
        'input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ -1 ] } ]\n', _FAIL, None),
}


def build_repository(repo: Path, names: list[str] | None = None) -> Path:
    repo.mkdir(parents=True, exist_ok=True)
    for name in names or list(MODELS):
        config, code, files = MODELS[name]
        _model(repo, name, config, code, files)
    return repo


def model_source(name: str) -> tuple[str, str]:
    """(config.pbtxt text, model.py text) of one test model."""
    config, code, _ = MODELS[name]
    return f'name: "{name}"\nbackend: "python"\n' + config, code


@contextlib.contextmanager
def serve(workdir: Path, *flags: str, config: str | None = None) -> Iterator[NaiadProcess]:
    """A `naiad serve` process for a whole test module; stopped (SIGTERM) at the end."""
    proc = NaiadProcess(workdir, list(flags), config=config)
    try:
        proc.start()
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            try:
                proc.stop(timeout=20)
            except AssertionError:
                pass
        proc.kill_if_running()


def shared_memory_module():
    """`tritonclient.utils.shared_memory`, which imports `pkg_resources` only to find its
    own libcshm.so; setuptools >= 81 no longer ships `pkg_resources`, so a one-function
    stand-in is supplied for that import when it is missing."""
    import importlib
    import importlib.resources
    import sys
    import types

    try:
        return importlib.import_module("tritonclient.utils.shared_memory")
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise
    shim = types.ModuleType("pkg_resources")
    shim.resource_filename = lambda package, name: str(importlib.resources.files(package) / name)  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = shim
    try:
        return importlib.import_module("tritonclient.utils.shared_memory")
    finally:
        sys.modules.pop("pkg_resources", None)
