"""The model manager through a real server: control modes, version policy, broken models,
config errors, readiness. Talks HTTP with tritonclient and raw requests."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.models import ADD_SUB_MODEL, IDENTITY_MODEL, add_sub_config, identity_config, write_model
from support.naiad_process import http_get

VERSIONED_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.version = int(args["model_version"])

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", np.array([self.version], np.int32))])
                for _ in requests]
'''


def _versioned_config(name, policy=""):
    return f'''
name: "{name}"
backend: "python"
input [ {{ name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] }} ]
{policy}
'''


def _which_version(client, name, version=""):
    inp = httpclient.InferInput("INPUT0", [1], "INT32")
    inp.set_data_from_numpy(np.array([0], np.int32))
    return int(client.infer(name, [inp], model_version=version).as_numpy("OUTPUT0")[0])


def _add_sub(client, name="add_sub"):
    a = np.arange(4, dtype=np.float32)
    b = np.ones(4, dtype=np.float32)
    inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer(name, inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def _index(client):
    return {(e["name"], e.get("version", "")): e for e in client.get_model_repository_index()}


def test_none_mode_loads_everything_and_refuses_load_api(naiad, tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "add_sub", add_sub_config(), ADD_SUB_MODEL)
    write_model(repo, "identity", identity_config("identity"), IDENTITY_MODEL)
    proc = naiad("--model-repository", str(repo))
    client = httpclient.InferenceServerClient(proc.http_address)
    assert client.is_model_ready("add_sub") and client.is_model_ready("identity")
    _add_sub(client)
    with pytest.raises(InferenceServerException) as info:
        client.load_model("add_sub")
    assert "explicit model load / unload is not allowed if polling is enabled" in str(info.value)
    assert proc.stop() == 0


def test_version_policies(naiad, tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "latest1", _versioned_config("latest1"), VERSIONED_MODEL, versions=(1, 2, 3))
    write_model(repo, "latest2", _versioned_config("latest2", "version_policy { latest { num_versions: 2 } }"),
                VERSIONED_MODEL, versions=(1, 2, 3))
    write_model(repo, "all", _versioned_config("all", "version_policy { all { } }"), VERSIONED_MODEL, versions=(1, 2))
    write_model(repo, "specific", _versioned_config("specific", "version_policy { specific { versions: [1, 3] } }"),
                VERSIONED_MODEL, versions=(1, 2, 3))
    (repo / "latest1" / "007").mkdir()  # leading zero: not a version
    (repo / "latest1" / "notes").mkdir()
    proc = naiad("--model-repository", str(repo))
    client = httpclient.InferenceServerClient(proc.http_address)
    assert _which_version(client, "latest1") == 3
    assert not client.is_model_ready("latest1", "1")
    assert _which_version(client, "latest2") == 3 and _which_version(client, "latest2", "2") == 2
    assert not client.is_model_ready("latest2", "1")
    assert _which_version(client, "all", "1") == 1 and _which_version(client, "all", "2") == 2
    assert _which_version(client, "specific") == 3 and _which_version(client, "specific", "1") == 1
    assert not client.is_model_ready("specific", "2")
    assert client.get_model_metadata("latest2")["versions"] == ["2", "3"]
    with pytest.raises(InferenceServerException, match="version 2 is not found"):
        _which_version(client, "specific", "2")
    assert proc.stop() == 0


def test_explicit_mode_load_unload_and_index(naiad, tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "add_sub", add_sub_config(), ADD_SUB_MODEL)
    write_model(repo, "identity", identity_config("identity"), IDENTITY_MODEL)
    proc = naiad("--model-repository", str(repo), "--model-control-mode=explicit", "--load-model=identity")
    client = httpclient.InferenceServerClient(proc.http_address)
    assert client.is_model_ready("identity") and not client.is_model_ready("add_sub")
    index = _index(client)
    assert index[("add_sub", "")].get("state", "") == ""  # listed, never loaded
    assert index[("identity", "1")]["state"] == "READY"
    client.load_model("add_sub")
    _add_sub(client)
    client.unload_model("add_sub")
    deadline = time.monotonic() + 10
    while client.is_model_ready("add_sub") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.is_model_ready("add_sub")
    entry = _index(client)[("add_sub", "1")]
    assert entry["state"] == "UNAVAILABLE" and entry["reason"] == "unloaded"
    with pytest.raises(InferenceServerException):
        _add_sub(client)
    with pytest.raises(InferenceServerException, match="failed to poll from model repository"):
        client.load_model("nope")
    assert proc.stop() == 0


def test_explicit_star_loads_all(naiad, tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "add_sub", add_sub_config(), ADD_SUB_MODEL)
    write_model(repo, "identity", identity_config("identity"), IDENTITY_MODEL)
    proc = naiad("--model-repository", str(repo), "--model-control-mode=explicit", "--load-model=*")
    client = httpclient.InferenceServerClient(proc.http_address)
    assert client.is_model_ready("add_sub") and client.is_model_ready("identity")
    assert proc.stop() == 0


def test_load_with_config_override_and_files(naiad, tmp_path):
    import base64
    repo = tmp_path / "repo"
    repo.mkdir()
    proc = naiad("--model-repository", str(repo), "--model-control-mode=explicit")
    client = httpclient.InferenceServerClient(proc.http_address)
    config = json.dumps({"name": "fromfiles", "backend": "python",
                         "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [2]}],
                         "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [2]}]})
    client.load_model("fromfiles", config=config, files={"file:1/model.py": IDENTITY_MODEL.encode()})
    inp = httpclient.InferInput("INPUT0", [2], "FP32")
    inp.set_data_from_numpy(np.array([1.5, 2.5], np.float32))
    np.testing.assert_array_equal(client.infer("fromfiles", [inp]).as_numpy("OUTPUT0"), [1.5, 2.5])
    # A path that leaves the model folder is refused, and nothing is written outside.
    with pytest.raises(InferenceServerException, match="leaves the model folder"):
        client.load_model("evil", config=config.replace("fromfiles", "evil"),
                          files={"file:../../escaped.py": b"x = 1"})
    assert not (tmp_path / "escaped.py").exists()
    with pytest.raises(InferenceServerException, match="must also provide 'config'"):
        status = client.load_model("fromfiles2", files={"file:1/model.py": b"x"})
    assert proc.stop() == 0


def test_poll_mode_picks_up_added_changed_and_removed_models(naiad, tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "v", _versioned_config("v"), VERSIONED_MODEL, versions=(1,))
    proc = naiad("--model-repository", str(repo), "--model-control-mode=poll", "--repository-poll-secs=1")
    client = httpclient.InferenceServerClient(proc.http_address)
    assert _which_version(client, "v") == 1

    def wait_for(cond, what):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if cond():
                    return
            except InferenceServerException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"poll did not pick up {what}:\n{proc.logs()}")

    # Added model.
    write_model(repo, "add_sub", add_sub_config(), ADD_SUB_MODEL)
    wait_for(lambda: client.is_model_ready("add_sub"), "an added model")
    # Changed model: a new version folder; v1 keeps serving until v2 is ready.
    write_model(repo, "v", None, VERSIONED_MODEL, versions=(2,))
    served = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        served.add(_which_version(client, "v"))  # never fails in between
        if 2 in served:
            break
        time.sleep(0.05)
    assert 2 in served
    # Removed model.
    shutil.rmtree(repo / "add_sub")
    wait_for(lambda: not client.is_model_ready("add_sub"), "a removed model")
    assert proc.stop() == 0


def test_broken_model_beside_a_good_one(naiad, tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "add_sub", add_sub_config(), ADD_SUB_MODEL)
    write_model(repo, "broken", add_sub_config("broken"), "raise RuntimeError('cannot import this model')\n")
    # exit-on-error (the default) stops the server at start.
    proc = naiad("--model-repository", str(repo), wait_ready=False)
    assert proc.wait(60) == 2
    assert "failed to load 'broken'" in proc.logs()
    # Without it the good model serves; strict readiness keeps the server not ready.
    proc = naiad("--model-repository", str(repo), "--exit-on-error=false", wait_ready=False)
    client = httpclient.InferenceServerClient(proc.http_address)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if client.is_model_ready("add_sub"):
                break
        except Exception:
            pass
        time.sleep(0.1)
    _add_sub(client)
    assert not client.is_server_ready()
    entry = _index(client)[("broken", "")]
    assert entry["state"] == "UNAVAILABLE" and "cannot import this model" in entry["reason"]
    assert proc.stop() == 0
    proc = naiad("--model-repository", str(repo), "--exit-on-error=false", "--strict-readiness=false")
    client = httpclient.InferenceServerClient(proc.http_address)
    assert client.is_server_ready()
    assert proc.stop() == 0


def test_config_pbtxt_error_names_file_line_and_field(naiad, tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "bad", 'name: "bad"\nbackend: "python"\nmax_batch_size: "eight"\n', IDENTITY_MODEL)
    write_model(repo, "typo", 'name: "typo"\nbackend: "python"\nmax_batchsize: 8\n', IDENTITY_MODEL)
    proc = naiad("--model-repository", str(repo), "--exit-on-error=false", "--strict-readiness=false")
    client = httpclient.InferenceServerClient(proc.http_address)
    index = _index(client)
    bad = index[("bad", "")]["reason"]
    assert str(repo / "bad" / "config.pbtxt") in bad and "3:" in bad and "max_batch_size" in bad
    typo = index[("typo", "")]["reason"]
    assert "config.pbtxt" in typo and "max_batchsize" in typo
    assert proc.stop() == 0
