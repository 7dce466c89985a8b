"""EXECUTION_ENV_PATH: a Python model served from an environment of its own (Python 3.10
with numpy 1, while naiad runs on its own interpreter and numpy 2), given as a folder or as
a packed archive under `$$TRITON_MODEL_DIRECTORY`, through a real `naiad serve` and
tritonclient. The environment is a venv built once per test session (pip, bounded); the
tests skip, saying why, where no Python 3.10 or no numpy<2 can be had."""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.timeout(300)

# Uses np.NINF, which numpy 2 removed: it runs only under the environment's numpy 1.
MODEL = '''
import json
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.floor = np.NINF

    def is_ready(self):  # answered from the environment's interpreter too
        return bool(np.isneginf(self.floor))

    def execute(self, requests):
        info = json.dumps({
            "python": "%d.%d" % sys.version_info[:2],
            "numpy": np.__version__,
            "numpy_file": np.__file__,
        })
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT0", np.maximum(x, self.floor) * 2),
                pb_utils.Tensor("INFO", np.array([info.encode()], dtype=np.object_)),
            ]))
        return out
'''

CONFIG = '''
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 2 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2 ] }},
         {{ name: "INFO" data_type: TYPE_STRING dims: [ 1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
parameters: {{ key: "EXECUTION_ENV_PATH", value: {{ string_value: "{env}" }} }}
'''


def _python310() -> str | None:
    """A working Python 3.10 (a pyenv shim on PATH may name one that is not selected)."""
    candidates = [shutil.which("python3.10")]
    for pattern in ("~/.pyenv/versions/3.10*/bin/python3.10", "/usr/local/bin/python3.10", "/usr/bin/python3.10"):
        candidates += sorted(glob.glob(str(Path(pattern).expanduser())), reverse=True)
    for python in filter(None, candidates):
        try:
            subprocess.run([python, "-c", "import sys, venv; assert sys.version_info[:2] == (3, 10)"],
                           check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        return python
    return None


@pytest.fixture(scope="session")
def numpy1_env(tmp_path_factory) -> Path:
    """A Python 3.10 venv with numpy<2, built once per session."""
    python = _python310()
    if python is None:
        pytest.skip("no Python 3.10 interpreter on this machine to build a numpy 1 environment")
    env = tmp_path_factory.mktemp("envs") / "py310-numpy1"
    try:
        subprocess.run([python, "-m", "venv", str(env)], check=True, capture_output=True, timeout=120)
        subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "numpy<2"],
                       check=True, capture_output=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.skip("building the numpy 1 environment took too long (pip install numpy<2)")
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot build the numpy 1 environment: {exc.stderr.decode(errors='replace')[-300:]}")
    return env


def _model(repo: Path, name: str, env: str) -> Path:
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.py").write_text(textwrap.dedent(MODEL))
    (model_dir / "config.pbtxt").write_text(CONFIG.format(name=name, env=env))
    return model_dir


def _pack(env: Path, archive: Path) -> None:
    """A venv packed with tarfile (as conda-pack would pack a conda environment), without
    pip and setuptools, which the model does not need."""

    def skip_tools(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        return None if any(p.startswith(("pip", "setuptools", "_distutils_hack")) for p in parts) else info

    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(env, arcname=".", filter=skip_tools)


def _infer_http(proc, name: str) -> tuple[np.ndarray, dict]:
    client = httpclient.InferenceServerClient(proc.http_address)
    x = np.array([1.5, -3.0], dtype=np.float32)
    inp = httpclient.InferInput("INPUT0", [2], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(name, [inp])
    return result.as_numpy("OUTPUT0"), json.loads(result.as_numpy("INFO")[0])


def test_folder_environment_runs_numpy1_model_on_its_own_interpreter(naiad, tmp_path, numpy1_env) -> None:
    assert int(np.__version__.split(".")[0]) >= 2, "the server side of this test expects numpy 2"
    repo = tmp_path / "models"
    _model(repo, "numpy1_folder", str(numpy1_env))
    proc = naiad("--model-repository", str(repo))

    out, info = _infer_http(proc, "numpy1_folder")
    np.testing.assert_array_equal(out, np.array([3.0, -6.0], dtype=np.float32))
    assert info["python"] == "3.10"
    assert info["numpy"].startswith("1.")
    assert info["numpy_file"].startswith(str(numpy1_env))
    assert httpclient.InferenceServerClient(proc.http_address).is_model_ready("numpy1_folder")

    # The same stub over gRPC, and the server's log names the environment as Triton's does.
    client = grpcclient.InferenceServerClient(proc.grpc_address)
    inp = grpcclient.InferInput("INPUT0", [2], "FP32")
    inp.set_data_from_numpy(np.array([0.5, 4.0], dtype=np.float32))
    np.testing.assert_array_equal(client.infer("numpy1_folder", [inp]).as_numpy("OUTPUT0"), [1.0, 8.0])
    assert f"Using Python execution env {numpy1_env}" in proc.logs()


def test_archive_environment_is_unpacked_once_and_removed_at_exit(naiad, tmp_path, numpy1_env) -> None:
    repo = tmp_path / "models"
    model_dir = _model(repo, "numpy1_archive", "$$TRITON_MODEL_DIRECTORY/env.tar.gz")
    _pack(numpy1_env, model_dir / "env.tar.gz")
    proc = naiad("--model-repository", str(repo), "--model-control-mode=explicit", "--load-model=numpy1_archive")

    out, info = _infer_http(proc, "numpy1_archive")
    np.testing.assert_array_equal(out, np.array([3.0, -6.0], dtype=np.float32))
    assert info["numpy"].startswith("1.") and info["python"] == "3.10"
    numpy_file = Path(info["numpy_file"])
    assert not str(numpy_file).startswith(str(numpy1_env)), "the archive's copy must be used"
    unpacked = numpy_file.parents[4]  # <tmp>/python_env_XXXX/<n>/lib/python3.10/site-packages/numpy
    assert unpacked.parent.name.startswith("python_env_"), numpy_file

    # A reload with the archive unchanged reuses the unpacked copy.
    client = httpclient.InferenceServerClient(proc.http_address)
    client.load_model("numpy1_archive")
    assert _infer_http(proc, "numpy1_archive")[1]["numpy_file"] == str(numpy_file)

    assert proc.stop() == 0
    assert not unpacked.parent.exists(), "the unpacked environments must be removed at exit"


def test_environment_without_activate_script_fails_the_load(naiad, tmp_path) -> None:
    repo = tmp_path / "models"
    bare = tmp_path / "bare_env"
    (bare / "bin").mkdir(parents=True)
    _model(repo, "no_activate", str(bare))
    proc = naiad("--model-repository", str(repo), "--model-control-mode=explicit")
    client = httpclient.InferenceServerClient(proc.http_address)
    with pytest.raises(InferenceServerException) as err:
        client.load_model("no_activate")
    assert (f"Path {bare}/bin/activate does not exist. The Python environment should contain an "
            "'activate' script.") in err.value.message()
    assert not client.is_model_ready("no_activate")
