"""naiad.Server: a repository served in-process, driven through the Python API only."""

from __future__ import annotations

import asyncio
import os
import time
import textwrap
from pathlib import Path

import numpy as np
import psutil
import pytest

from naiad import ErrorCode, InferenceError, Server
from support.models import ADD_SUB_MODEL, IDENTITY_MODEL, add_sub_config, identity_config, write_model

# Decoupled: N responses for N = IN[0], each OUT = index; then the final flag alone.
COUNTDOWN_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            sender = r.get_response_sender()
            n = int(pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()[0])
            for i in range(n):
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([i], np.int32))]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''

COUNTDOWN_CONFIG = textwrap.dedent('''
    name: "countdown"
    backend: "python"
    max_batch_size: 0
    model_transaction_policy { decoupled: true }
    input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
    output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
    ''')


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_model(root, "add_sub", add_sub_config(), ADD_SUB_MODEL)
    write_model(root, "strings", identity_config("strings", "TYPE_STRING"), IDENTITY_MODEL)
    write_model(root, "countdown", COUNTDOWN_CONFIG, COUNTDOWN_MODEL)
    return root


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_sync_infer_bytes_stream_metadata_and_clean_exit(repo: Path) -> None:
    before_children, before_shm = _children(), set(os.listdir("/dev/shm"))
    with Server(model_repository=repo) as server:
        assert server.live() and server.ready()
        assert {m["name"]: m["state"] for m in server.models()} == {
            "add_sub": "READY", "strings": "READY", "countdown": "READY"}
        assert _children() - before_children, "the Python backend's stubs run as child processes"

        a = np.arange(4, dtype=np.float32)
        b = np.full(4, 2.0, dtype=np.float32)
        out = server.model("add_sub").infer({"INPUT0": a, "INPUT1": b})
        np.testing.assert_array_equal(out["OUTPUT0"], a + b)
        np.testing.assert_array_equal(out["OUTPUT1"], a - b)
        only = server.model("add_sub", 1).infer({"INPUT0": a, "INPUT1": b}, outputs=["OUTPUT1"])
        assert list(only) == ["OUTPUT1"]

        words = np.array([b"naiad", "caf\u00e9".encode(), b""], dtype=object)
        echoed = server.model("strings").infer({"INPUT0": words})["OUTPUT0"]
        assert echoed.dtype == object and echoed.tolist() == words.tolist()

        got = [r["OUT"].tolist() for r in server.model("countdown").stream({"IN": np.array([3], np.int32)})]
        assert got == [[0], [1], [2]]

        meta = server.model("add_sub").metadata()
        assert meta["name"] == "add_sub" and meta["versions"] == ["1"]
        assert [t["name"] for t in meta["inputs"]] == ["INPUT0", "INPUT1"]
        assert meta["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": [4]}
        assert server.model("countdown").config()["model_transaction_policy"] == {"decoupled": True}
        stats = server.model("add_sub").statistics()["model_stats"][0]
        assert stats["name"] == "add_sub" and stats["inference_count"] == 2
        with pytest.raises(RuntimeError, match="not enabled"):
            server.http_port
    assert _children() == before_children, "stub processes left behind"
    assert set(os.listdir("/dev/shm")) - before_shm == set()


def test_errors_carry_tritons_words(repo: Path) -> None:
    with Server(model_repository=repo) as server:
        with pytest.raises(InferenceError) as missing:
            server.model("nope").infer({"INPUT0": np.zeros(4, np.float32)})
        assert missing.value.message == "Request for unknown model: 'nope' is not found"
        assert missing.value.code == ErrorCode.NOT_FOUND
        with pytest.raises(InferenceError) as wrong:
            server.model("add_sub").infer({"INPUT0": np.zeros(4, np.float32)})
        assert "expected 2 inputs but got 1 inputs for model 'add_sub'" in wrong.value.message
        with pytest.raises(InferenceError) as shape:
            server.model("add_sub").infer({"INPUT0": np.zeros(3, np.float32), "INPUT1": np.zeros(3, np.float32)})
        assert "unexpected shape for input 'INPUT0' for model 'add_sub'" in shape.value.message
        with pytest.raises(TypeError, match="unknown setting 'bogus'"):
            Server(model_repository=repo, bogus=1)


def test_explicit_load_and_unload(repo: Path, capfd: pytest.CaptureFixture) -> None:
    with Server(model_repository=repo, model_control_mode="explicit", load_model=["add_sub"],
                log_verbose=1) as server:
        states = {m["name"]: m.get("state", "") for m in server.models()}
        assert states["add_sub"] == "READY" and states["strings"] != "READY"
        assert not server.model("strings").ready()
        server.load("strings")
        assert server.model("strings").ready()
        server.unload("add_sub")
        assert not server.model("add_sub").ready()
        with pytest.raises(InferenceError, match="add_sub"):
            server.model("add_sub").infer({"INPUT0": np.zeros(4, np.float32), "INPUT1": np.zeros(4, np.float32)})
        # A config given at load time overrides config.pbtxt, as Triton's load API.
        server.load("add_sub", config={"name": "add_sub", "backend": "python", "max_batch_size": 0,
                                       "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [2]},
                                                 {"name": "INPUT1", "data_type": "TYPE_FP32", "dims": [2]}],
                                       "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [2]},
                                                  {"name": "OUTPUT1", "data_type": "TYPE_FP32", "dims": [2]}]})
        out = server.model("add_sub").infer({"INPUT0": np.ones(2, np.float32), "INPUT1": np.ones(2, np.float32)})
        assert out["OUTPUT0"].tolist() == [2.0, 2.0]
    # log_verbose (a [log] setting) puts naiad's Triton-format log on stderr.
    assert "successfully loaded 'strings'" in capfd.readouterr().err


def test_async_context_manager_in_callers_loop(repo: Path) -> None:
    before = _children()

    async def main() -> None:
        async with Server(model_repository=repo) as server:
            assert await server.async_ready()
            model = server.model("add_sub")
            a = np.arange(4, dtype=np.float32)
            results = await asyncio.gather(*(model.async_infer({"INPUT0": a * i, "INPUT1": a}) for i in range(8)))
            assert [r["OUTPUT0"].tolist() for r in results] == [(a * i + a).tolist() for i in range(8)]
            got = [r["OUT"].item() async for r in server.model("countdown").async_stream({"IN": np.array([4], np.int32)})]
            assert got == [0, 1, 2, 3]
            with pytest.raises(RuntimeError, match="async_ methods"):
                server.ready()

    asyncio.run(main())
    assert _children() == before


def test_async_methods_on_threaded_server(repo: Path) -> None:
    with Server(model_repository=repo) as server:
        async def main() -> list[int]:
            return [r["OUT"].item() async for r in server.model("countdown").async_stream({"IN": np.array([2], np.int32)})]

        assert asyncio.run(main()) == [0, 1]


def test_http_alongside_in_process(repo: Path) -> None:
    import tritonclient.http as httpclient

    with Server(model_repository=repo, services=["http"]) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        try:
            assert client.is_server_ready()
            a = np.arange(4, dtype=np.float32)
            inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(a)
            over_http = client.infer("add_sub", inputs).as_numpy("OUTPUT0")
            in_process = server.model("add_sub").infer({"INPUT0": a, "INPUT1": a})["OUTPUT0"]
            np.testing.assert_array_equal(over_http, in_process)
            stats = client.get_inference_statistics("add_sub")["model_stats"][0]
            assert stats["inference_count"] == 2  # both paths reach the same scheduler
        finally:
            client.close()


# Decoupled and slow: one response every 50 ms until cancelled (checks `is_cancelled`).
ENDLESS_MODEL = '''
import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            sender = r.get_response_sender()
            for i in range(200):
                if sender.is_cancelled():
                    break
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([i], np.int32))]))
                time.sleep(0.05)
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''


def test_leaving_a_stream_early_cancels_it(repo: Path) -> None:
    write_model(repo, "endless", COUNTDOWN_CONFIG.replace('"countdown"', '"endless"'), ENDLESS_MODEL)
    with Server(model_repository=repo) as server:
        stream = server.model("endless").stream({"IN": np.array([0], np.int32)})
        assert [next(stream)["OUT"].item() for _ in range(2)] == [0, 1]
        stream.close()
        # The model saw the cancellation: the exit below does not wait out 200 responses.
        started = time.monotonic()
    assert time.monotonic() - started < 5


def test_a_model_failing_at_start_fails_the_server(repo: Path) -> None:
    write_model(repo, "broken", identity_config("broken"), "raise ImportError('no such thing')\n")
    before = _children()
    with pytest.raises(Exception, match="broken"):
        with Server(model_repository=repo):
            pass
    assert _children() == before
    with Server(model_repository=repo, exit_on_error=False, strict_readiness=False) as server:
        states = {m["name"]: m.get("state") for m in server.models()}
        assert states["broken"] == "UNAVAILABLE" and states["add_sub"] == "READY"


def test_readme_example_runs() -> None:
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    section = readme.split("## In-process Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 6
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[2. 2. 2. 2.]"
