"""Python-backend models for the HTTP tests, written into a model repository on demand."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from support.models import ADD_SUB_MODEL as _ADD_SUB, IDENTITY_MODEL as _IDENTITY
from support.naiad_process import NaiadProcess
from support.protocol_models import IDENTITY_ALL as _IDENTITY_ALL, REPEAT as _REPEAT, REPEAT_CONFIG, identity_all_config

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


def _model(repo: Path, name: str, config: str, code: str, files: dict[str, str] | None = None) -> None:
    d = repo / name
    (d / "1").mkdir(parents=True, exist_ok=True)
    (d / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "python"\n' + config)
    (d / "1" / "model.py").write_text(code)
    for rel, text in (files or {}).items():
        (d / rel).write_text(text)


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
    "repeat": (REPEAT_CONFIG, _REPEAT, None),
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
