"""Model readiness from the Python backend's side, through a real `naiad serve`: a model
whose stub died is not ready until the stub is back (Triton 26.01), and a model's own
`is_ready()` (sync or async, python_backend 26.03) decides its readiness, even while an
`execute` is running; a wrong return value or an exception reads as not ready."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

pytestmark = pytest.mark.timeout(120)

CONFIG = '''
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: {count} }} ]
'''

# Reports its pid; sleeps for INPUT0 seconds; its readiness follows a flag file; its
# initialize takes 3 s while FLAG.slow exists (a restart the test can watch).
MODEL = '''
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils

FLAG = {flag!r}


class TritonPythonModel:
    def initialize(self, args):
        if os.path.exists(FLAG + ".slow"):
            time.sleep(3)

    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            time.sleep(float(x[0]))
            out.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUTPUT0", np.array([os.getpid()], dtype=np.float32))]))
        return out
{is_ready}
'''

SYNC_IS_READY = '''
    def is_ready(self):
        return not os.path.exists(FLAG)
'''

ASYNC_IS_READY = '''
    async def is_ready(self):
        import asyncio
        await asyncio.sleep(0)
        return not os.path.exists(FLAG)
'''

BAD_IS_READY = '''
    def is_ready(self):
        if os.path.exists(FLAG):
            raise RuntimeError("dependency down")
        return 1  # not a bool: Triton reports an error, so not ready
'''


def _model(repo: Path, name: str, is_ready: str = "", count: int = 1) -> Path:
    flag = repo.parent / f"{name}.not_ready"
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(MODEL.format(flag=str(flag), is_ready=is_ready)))
    (repo / name / "config.pbtxt").write_text(CONFIG.format(name=name, count=count))
    return flag


def _infer(address: str, name: str, seconds: float = 0.0) -> int:
    client = httpclient.InferenceServerClient(address, network_timeout=60)
    inp = httpclient.InferInput("INPUT0", [1], "FP32")
    inp.set_data_from_numpy(np.array([seconds], dtype=np.float32))
    return int(client.infer(name, [inp]).as_numpy("OUTPUT0")[0])


def _wait(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_crashed_stub_makes_model_not_ready_until_it_is_back(naiad, tmp_path) -> None:
    repo = tmp_path / "models"
    flag = _model(repo, "crashy")
    _model(repo, "bystander")
    proc = naiad("--model-repository", str(repo), "--log-verbose=1")
    http = httpclient.InferenceServerClient(proc.http_address)
    grpc = grpcclient.InferenceServerClient(proc.grpc_address)
    assert http.is_model_ready("crashy") and grpc.is_model_ready("crashy")

    pid = _infer(proc.http_address, "crashy")
    Path(f"{flag}.slow").write_text("")  # the restarted stub initialises for 3 s
    os.kill(pid, signal.SIGKILL)
    assert _wait(lambda: not http.is_model_ready("crashy"), 10), "a dead stub must make its model not ready"
    assert http.is_model_ready("bystander"), "other models stay ready"
    assert _wait(lambda: http.is_model_ready("crashy") and grpc.is_model_ready("crashy"), 30), \
        "the model must be ready again once its stub is back"
    assert _infer(proc.http_address, "crashy") != pid
    assert "is not ready: Stub process 'crashy_0_0' is not healthy." in proc.logs()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_is_ready_decides_model_readiness(naiad, tmp_path, kind) -> None:
    repo = tmp_path / "models"
    flag = _model(repo, "gated", SYNC_IS_READY if kind == "sync" else ASYNC_IS_READY)
    proc = naiad("--model-repository", str(repo), "--log-verbose=1")
    http = httpclient.InferenceServerClient(proc.http_address)
    grpc = grpcclient.InferenceServerClient(proc.grpc_address)
    assert http.is_model_ready("gated") and grpc.is_model_ready("gated")

    flag.write_text("drain")
    assert not http.is_model_ready("gated") and not grpc.is_model_ready("gated")
    assert "is not ready: Model 'gated_0_0' is not ready (user-defined check failed)." in proc.logs()
    # Not ready is the model's word on readiness only: it still serves what reaches it.
    assert _infer(proc.http_address, "gated") > 0
    flag.unlink()
    assert http.is_model_ready("gated")

    # The check is answered while a sync execute is busy (it has a thread of its own).
    busy = threading.Thread(target=_infer, args=(proc.http_address, "gated", 2.0))
    busy.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        assert http.is_model_ready("gated")
        assert time.monotonic() - started < 1.0
    finally:
        busy.join(30)


def test_is_ready_error_or_wrong_type_reads_not_ready(naiad, tmp_path) -> None:
    repo = tmp_path / "models"
    flag = _model(repo, "broken_check", BAD_IS_READY)
    proc = naiad("--model-repository", str(repo), "--log-verbose=1")
    http = httpclient.InferenceServerClient(proc.http_address)
    assert not http.is_model_ready("broken_check")
    assert "is_ready() must return a boolean value" in proc.logs()
    flag.write_text("down")
    assert not http.is_model_ready("broken_check")
    assert "RuntimeError: dependency down" in proc.logs()
