"""Model namespacing (`--model-namespacing=true`) through a real server, in the scenarios of
Triton's L0_model_namespacing: two repositories (addsub_repo, subadd_repo) that hold models
of the same name, in poll and explicit modes. Each repository is a namespace: same-named
models all load, an ensemble's steps resolve in the ensemble's own repository first, and a
client naming an ambiguous model gets Triton's identifier errors."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.naiad_process import http_get

# OUTPUT0/OUTPUT1 are INPUT0 +/- INPUT1 ("addsub") or -/+ ("subadd"). No config.pbtxt: the
# model completes its own config, as the composing models of Triton's test do.
COMPOSING_MODEL = '''
import triton_python_backend_utils as pb_utils

FIRST = "{first}"


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        for name in ("INPUT0", "INPUT1"):
            config.add_input({{"name": name, "data_type": "TYPE_INT32", "dims": [16]}})
        for name in ("OUTPUT0", "OUTPUT1"):
            config.add_output({{"name": name, "data_type": "TYPE_INT32", "dims": [16]}})
        return config

    def execute(self, requests):
        out = []
        for r in requests:
            a = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(r, "INPUT1").as_numpy()
            first, second = (a + b, a - b) if FIRST == "add" else (a - b, a + b)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", first),
                                                   pb_utils.Tensor("OUTPUT1", second)]))
        return out
'''

_TENSORS = "".join(
    f'{kind} [ {{ name: "{name}" data_type: TYPE_INT32 dims: [ 16 ] }} ]\n'
    for kind, name in (("input", "INPUT0"), ("input", "INPUT1"), ("output", "OUTPUT0"), ("output", "OUTPUT1")))


def _ensemble_config(composing: str) -> str:
    maps = "".join(f'{kind} {{ key: "{t}" value: "{t}" }}\n'
                   for kind, t in (("input_map", "INPUT0"), ("input_map", "INPUT1"),
                                   ("output_map", "OUTPUT0"), ("output_map", "OUTPUT1")))
    return (f'platform: "ensemble"\nmax_batch_size: 0\n{_TENSORS}'
            f'ensemble_scheduling {{ step [ {{ model_name: "{composing}" model_version: -1\n{maps} }} ] }}\n')


def _composing(repo: Path, name: str, first: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.py").write_text(COMPOSING_MODEL.format(first=first))


def _ensemble(repo: Path, name: str, composing: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(_ensemble_config(composing))


# The four layouts of Triton's test: (ensemble, composing) per repository.
LAYOUTS = {
    "no_duplication": (("simple_addsub", "composing_addsub"), ("simple_subadd", "composing_subadd")),
    "duplication": (("simple_addsub", "composing_model"), ("simple_subadd", "composing_model")),
    "ensemble_duplication": (("simple_ensemble", "composing_addsub"), ("simple_ensemble", "composing_subadd")),
}


def _repositories(root: Path, layout: str) -> tuple[Path, Path]:
    (addsub_ensemble, addsub_composing), (subadd_ensemble, subadd_composing) = LAYOUTS[layout]
    addsub, subadd = root / "addsub_repo", root / "subadd_repo"
    _ensemble(addsub, addsub_ensemble, addsub_composing)
    _composing(addsub, addsub_composing, "add")
    _ensemble(subadd, subadd_ensemble, subadd_composing)
    _composing(subadd, subadd_composing, "sub")
    return addsub, subadd


MODES = {"poll": ["--model-control-mode=poll", "--repository-poll-secs=1"],
         "explicit": ["--model-control-mode=explicit"]}


@pytest.fixture(params=sorted(MODES))
def serve(request, naiad, tmp_path):
    """serve(layout) -> (process, addsub_repo, subadd_repo), in the parametrized mode."""
    mode = request.param

    def start(layout: str):
        addsub, subadd = _repositories(tmp_path / "models", layout)
        proc = naiad("--model-namespacing=true", f"--model-repository={addsub}", f"--model-repository={subadd}",
                     *MODES[mode], env={"PYTHONDONTWRITEBYTECODE": "1"})
        return proc, addsub, subadd

    start.mode = mode
    return start


DATA = np.arange(16, dtype=np.int32)


def _infer(client, model: str):
    inputs = [httpclient.InferInput("INPUT0", [16], "INT32"), httpclient.InferInput("INPUT1", [16], "INT32")]
    for i in inputs:
        i.set_data_from_numpy(DATA)
    result = client.infer(model, inputs)
    return result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")


def _assert_addsub(client, model: str) -> None:
    out0, out1 = _infer(client, model)
    np.testing.assert_array_equal(out0, DATA + DATA)
    np.testing.assert_array_equal(out1, DATA - DATA)


def _assert_subadd(client, model: str) -> None:
    out0, out1 = _infer(client, model)
    np.testing.assert_array_equal(out0, DATA - DATA)
    np.testing.assert_array_equal(out1, DATA + DATA)


def _ambiguity(model: str, count: int = 2) -> str:
    return (f"There are {count} identifiers of model '{model}' in global map, model namespace must be provided "
            "to resolve ambiguity.")


def _assert_ambiguous(proc, client, model: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        _infer(client, model)
    assert info.value.message() == _ambiguity(model)
    status, body = http_get(f"{proc.url}/v2/models/{model}")  # metadata: the same error, a 400 (INVALID_ARG)
    assert status == 400 and json.loads(body) == {"error": _ambiguity(model)}
    status, _ = http_get(f"{proc.url}/v2/models/{model}/ready")
    assert status == 400
    grpc = grpcclient.InferenceServerClient(proc.grpc_address)
    with pytest.raises(InferenceServerException) as info:
        grpc.get_model_metadata(model)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and info.value.message() == _ambiguity(model)


def test_no_duplication(serve):
    # Repositories that are valid without namespacing behave as without it.
    proc, _, _ = serve("no_duplication")
    client = httpclient.InferenceServerClient(proc.http_address)
    assert client.is_server_live() and client.is_server_ready()
    if serve.mode == "explicit":
        for model in ("simple_addsub", "simple_subadd"):
            client.load_model(model)  # brings its composing model in
    for model in ("simple_addsub", "composing_addsub"):
        _assert_addsub(client, model)
    for model in ("simple_subadd", "composing_subadd"):
        _assert_subadd(client, model)


def test_duplication(serve):
    # One composing model name in both repositories: each ensemble uses its own repository's,
    # and the shared name alone is ambiguous.
    proc, addsub, subadd = serve("duplication")
    client = httpclient.InferenceServerClient(proc.http_address)
    assert client.is_server_ready()
    if serve.mode == "explicit":
        for model in ("simple_addsub", "simple_subadd"):
            client.load_model(model)
    _assert_addsub(client, "simple_addsub")
    _assert_subadd(client, "simple_subadd")
    _assert_ambiguous(proc, client, "composing_model")
    index = client.get_model_repository_index()
    assert sorted((e["name"], e.get("state")) for e in index) == [
        ("composing_model", "READY"), ("composing_model", "READY"),
        ("simple_addsub", "READY"), ("simple_subadd", "READY")]
    stats = client.get_inference_statistics()["model_stats"]
    assert sorted(s["name"] for s in stats) == ["composing_model", "composing_model", "simple_addsub", "simple_subadd"]
    with pytest.raises(InferenceServerException) as info:
        client.get_inference_statistics("composing_model")
    assert info.value.message() == _ambiguity("composing_model")


def test_ensemble_duplication(serve):
    # One ensemble name in both repositories: each runs its own repository's composing model,
    # and the ensemble's name alone is ambiguous.
    proc, _, _ = serve("ensemble_duplication")
    client = httpclient.InferenceServerClient(proc.http_address)
    assert client.is_server_ready()
    if serve.mode == "explicit":
        client.load_model("simple_ensemble")  # both ensembles, each with its composing model
    _assert_addsub(client, "composing_addsub")
    _assert_subadd(client, "composing_subadd")
    _assert_ambiguous(proc, client, "simple_ensemble")


def _eventually(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except (AssertionError, InferenceServerException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_dynamic_resolution(serve, tmp_path):
    # Take addsub_repo's composing_model away: both ensembles use subadd_repo's, which is then
    # the only one of its name. Put it back: each ensemble uses its own repository's again.
    proc, addsub, _ = serve("duplication")
    client = httpclient.InferenceServerClient(proc.http_address)
    away = tmp_path / "composing_model"
    shutil.move(addsub / "composing_model", away)
    if serve.mode == "explicit":
        for model in ("simple_addsub", "simple_subadd"):
            client.load_model(model)

    def all_subadd() -> None:
        for model in ("simple_subadd", "simple_addsub", "composing_model"):
            _assert_subadd(client, model)

    _eventually(all_subadd)

    shutil.move(away, addsub / "composing_model")
    if serve.mode == "explicit":
        client.load_model("simple_addsub")  # loads the composing models of every repository again

    def own_again() -> None:
        _assert_addsub(client, "simple_addsub")
        _assert_subadd(client, "simple_subadd")

    _eventually(own_again)
    _assert_ambiguous(proc, client, "composing_model")


def test_unload_and_unknown_names(naiad, tmp_path):
    # Explicit unload of a shared name unloads it in every repository; a name never seen is
    # Triton's INVALID_ARG "unknown model", a name whose models are all unloaded a NOT_FOUND.
    addsub, subadd = _repositories(tmp_path / "models", "duplication")
    proc = naiad("--model-namespacing=true", f"--model-repository={addsub}", f"--model-repository={subadd}",
                 "--model-control-mode=explicit", "--load-model=composing_model")
    client = httpclient.InferenceServerClient(proc.http_address)
    _assert_ambiguous(proc, client, "composing_model")
    client.unload_model("composing_model")
    index = client.get_model_repository_index()
    assert [e["state"] for e in index if e["name"] == "composing_model"] == ["UNAVAILABLE", "UNAVAILABLE"]
    with pytest.raises(InferenceServerException) as info:
        _infer(client, "composing_model")
    assert info.value.message() == "Identifier of model 'composing_model' is not found in global map"
    status, _ = http_get(f"{proc.url}/v2/models/composing_model")
    assert status == 404
    with pytest.raises(InferenceServerException) as info:
        _infer(client, "no_such_model")
    assert info.value.message() == "Request for unknown model: 'no_such_model' is not found"
    status, _ = http_get(f"{proc.url}/v2/models/no_such_model")
    assert status == 400
    client.load_model("simple_subadd")  # loads composing_model of both repositories again
    _assert_subadd(client, "simple_subadd")
    _assert_ambiguous(proc, client, "composing_model")
