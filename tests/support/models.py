"""Write small Triton model repositories for tests (Python-backend models)."""

from __future__ import annotations

import textwrap
from pathlib import Path

IDENTITY_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            t = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", t)]))
        return out
'''

ADD_SUB_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            a = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(r, "INPUT1").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", a + b),
                                                   pb_utils.Tensor("OUTPUT1", a - b)]))
        return out
'''

# Sleeps `delay` seconds (a string parameter of its config), then echoes INPUT0.
DELAYED_IDENTITY_MODEL = '''
import json
import time
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay = float(params.get("delay", {}).get("string_value", "0"))

    def execute(self, requests):
        time.sleep(self.delay)
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())]) for r in requests]
'''


# Answers a request whose INPUT0 starts negative with an error ("negative input").
NEGATIVE_REFUSING_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            t = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            if t[0] < 0:
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("negative input")))
            else:
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", t)]))
        return out
'''


def identity_config(name: str, datatype: str = "TYPE_FP32", dims: str = "[ -1 ]", max_batch_size: int = 0,
                    extra: str = "") -> str:
    return textwrap.dedent(f"""
        name: "{name}"
        backend: "python"
        max_batch_size: {max_batch_size}
        input [ {{ name: "INPUT0" data_type: {datatype} dims: {dims} }} ]
        output [ {{ name: "OUTPUT0" data_type: {datatype} dims: {dims} }} ]
        """) + extra


def add_sub_config(name: str = "add_sub", dims: str = "[ 4 ]", extra: str = "") -> str:
    return textwrap.dedent(f"""
        name: "{name}"
        backend: "python"
        max_batch_size: 0
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: {dims} }},
                {{ name: "INPUT1" data_type: TYPE_FP32 dims: {dims} }} ]
        output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: {dims} }},
                 {{ name: "OUTPUT1" data_type: TYPE_FP32 dims: {dims} }} ]
        """) + extra


def write_model(repo: Path, name: str, config: str | None, model_py: str, versions=(1,)) -> Path:
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (model_dir / "config.pbtxt").write_text(config)
    for v in versions:
        (model_dir / str(v)).mkdir(exist_ok=True)
        (model_dir / str(v) / "model.py").write_text(textwrap.dedent(model_py))
    return model_dir


def empty_repository(root: Path) -> Path:
    """An empty model repository folder under `root` (naiad, as Triton, needs one to start)."""
    repo = root / "models"
    repo.mkdir(parents=True, exist_ok=True)
    return repo
