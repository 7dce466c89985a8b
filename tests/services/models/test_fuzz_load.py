"""Fuzzing the load API's overrides on a real `naiad serve` (explicit model control): model
names, a `config` override (JSON built by hypothesis from configs near real ones) and
`file:` overrides (paths that try to leave the model folder, contents that are not base64),
over HTTP (raw sockets) and gRPC (RepositoryModelLoad as bytes).

Property, for every input: an answer in time; HTTP replies well-formed with no 5xx but the
500s Triton answers on malformed JSON; gRPC statuses those of a refused load; no Python
exception's text; and nothing written outside the server's temporary folder (TMPDIR points
inside the test's folder, which is checked file by file afterwards). After the run the
server lives and a good load with file overrides still serves inferences.
"""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.parse
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import strategies as st

from support.fuzzing import TRITON_INTERNAL, check_replies, exchange, python_leak, run_target
from support.models import IDENTITY_MODEL, identity_config
from support.naiad_process import NaiadProcess

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2  # noqa: E402

TIMEOUT = 10.0  # a load may take a while
SHORT = 320  # inputs per target in the normal suite
LOAD = "/inference.GRPCInferenceService/RepositoryModelLoad"
# The model's own Python failing (a fuzzed model.py): Triton's Python backend reports that in
# Python's words too, so such a text is not a leak of the server's.
MODEL_CODE = re.compile(r"module '[\w.]*model'|model\.py|TritonPythonModel")
# UNIMPLEMENTED: Triton's answer to a load naming a repository ('repository_name').
REFUSED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.ALREADY_EXISTS,
           grpc.StatusCode.UNIMPLEMENTED}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_load")
    repo = root / "models"
    repo.mkdir()
    tmpdir = root / "tmp" / "a" / "b"  # deep: a path that climbs out lands still inside root
    tmpdir.mkdir(parents=True)
    proc = NaiadProcess(root / "work", ["--model-repository", str(repo), "--model-control-mode=explicit"],
                        env={"TMPDIR": str(tmpdir)})
    proc.root, proc.tmpdir, proc.repo = root, tmpdir, repo  # type: ignore[attr-defined]
    proc.start()
    yield proc
    proc.kill_if_running()


def outside_tmp(server: NaiadProcess) -> list[str]:
    """Files under the test's folder that neither the server's log/config nor its TMPDIR hold."""
    found = []
    for dirpath, dirnames, filenames in os.walk(server.root):
        here = Path(dirpath)
        if here == server.tmpdir or server.tmpdir in here.parents or here == server.workdir:
            continue
        found += [str(here / f) for f in filenames]
        found += [str(here / d) for d in dirnames
                  if (here / d) not in (server.repo, server.workdir, server.tmpdir) and
                  not server.tmpdir.is_relative_to(here / d)]
    return found


def assert_still_serving(server: NaiadProcess) -> None:
    assert server.proc.poll() is None, f"naiad died during the fuzz run:\n{server.logs()[-4000:]}"
    assert outside_tmp(server) == []
    config = identity_config("good")
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        client.load_model("good", config=json.dumps(_config_json(config)),
                          files={"file:1/model.py": IDENTITY_MODEL.encode()})
        x = grpcclient.InferInput("INPUT0", [4], "FP32")
        values = np.arange(4, dtype=np.float32)
        x.set_data_from_numpy(values)
        np.testing.assert_array_equal(client.infer("good", [x]).as_numpy("OUTPUT0"), values)
        client.unload_model("good")


def _config_json(pbtxt: str) -> dict:
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    return json_format.MessageToDict(text_format.Parse(pbtxt, model_config_pb2.ModelConfig()),
                                     preserving_proto_field_name=True)


# ------------------------------------------------------------------ loads --

_names = st.one_of(st.sampled_from(["m", "x/../../../tmp/evil", "..", ".", "a/b", "-", "m\x00", "%2e%2e", "good"]),
                   st.text(max_size=10))
_paths = st.one_of(st.sampled_from(["1/model.py", "config.pbtxt", "../x", "../../x", "/tmp/x", "1/../../x",
                                    "1/../model.py", "", ".", "1/", "a\x00b", "1/" + "x" * 300, "..\\x"]),
                   st.text(max_size=16))
_contents = st.one_of(st.binary(max_size=32).map(lambda b: base64.b64encode(b).decode()),
                      st.sampled_from(["", "!!", "====", "YQ", "not base64 at all"]), st.text(max_size=12))
_config_docs = st.fixed_dictionaries({}, optional={
    "name": _names, "backend": st.sampled_from(["python", "onnxruntime", "pytorch", "nope", "", "../../x"]),
    "platform": st.sampled_from(["ensemble", "onnxruntime_onnx", "x"]),
    "max_batch_size": st.integers(-2, 1 << 40),
    "input": st.lists(st.fixed_dictionaries({"name": st.text(max_size=4)}, optional={
        "data_type": st.sampled_from(["TYPE_FP32", "TYPE_STRING", "TYPE_NOPE", 3]),
        "dims": st.lists(st.integers(-3, 1 << 40), max_size=3)}), max_size=2),
    "version_policy": st.sampled_from([{"all": {}}, {"specific": {"versions": [-1, 0, 1 << 62]}}, {"latest": {}}]),
    "instance_group": st.lists(st.fixed_dictionaries({}, optional={
        "count": st.integers(-1, 3), "kind": st.sampled_from(["KIND_CPU", "KIND_GPU", "KIND_MODEL", "KIND_X"])}),
        max_size=2),
    "ensemble_scheduling": st.just({"step": [{"model_name": "m", "model_version": -1}]}),
    "parameters": st.dictionaries(st.text(max_size=4), st.fixed_dictionaries({"string_value": st.text(max_size=4)}),
                                  max_size=2),
    "no_such_field": st.integers(),
})


@st.composite
def loads(draw) -> tuple[str, dict[str, str]]:
    """(model name, load parameters): a config override as JSON text (or not JSON), and
    file overrides with their base64 contents."""
    params: dict[str, str] = {}
    if draw(st.integers(0, 5)):
        doc = draw(_config_docs)
        params["config"] = json.dumps(doc) if draw(st.integers(0, 7)) else draw(st.text(max_size=20))
    for path in draw(st.lists(_paths, max_size=3)):
        params["file:" + path] = draw(_contents)
    if draw(st.integers(0, 9)) == 0:
        params[draw(st.text(max_size=6))] = draw(st.text(max_size=6))
    return draw(_names), params


def _http_load(name: str, params: dict) -> bytes:
    body = json.dumps({"parameters": params}).encode()
    target = "/v2/repository/models/" + urllib.parse.quote(name, safe="") + "/load"
    return (f"POST {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


def test_fuzz_load_http(server):
    def check(raw: bytes) -> None:
        reply, closed = exchange(server.http_port, raw, TIMEOUT)
        if MODEL_CODE.search(reply.decode("utf-8", "replace")):
            return  # the model's own Python error, in its words (as Triton's Python backend)
        check_replies(reply, closed)

    run_target("load-http", loads().map(lambda t: _http_load(*t)), check, SHORT)
    assert_still_serving(server)


def _grpc_load(name: str, params: dict) -> bytes:
    msg = service_pb2.RepositoryModelLoadRequest(model_name=name)
    for key, value in params.items():
        if key.startswith("file:"):
            try:
                msg.parameters[key].bytes_param = base64.b64decode(value)
            except ValueError:
                msg.parameters[key].bytes_param = value.encode()
        else:
            msg.parameters[key].string_param = value
    return msg.SerializeToString()


def test_fuzz_load_grpc(server):
    with grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(LOAD)

        def check(raw: bytes) -> None:
            try:
                call(raw, timeout=TIMEOUT)
                return
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
            assert code in REFUSED, f"{code.name}: {details}"
            leak = python_leak(details)
            if MODEL_CODE.search(details):
                return  # the model's own Python error, in its words (as Triton's Python backend)
            assert leak is None, f"a Python exception's text ({leak}) in {code.name}: {details}"
            if code is grpc.StatusCode.INTERNAL:  # bytes that are not a load request, or Triton's poll failure
                assert details == "failed to parse the RepositoryModelLoad request" or TRITON_INTERNAL.search(
                    details), details

        run_target("load-grpc", loads().map(lambda t: _grpc_load(*t)), check, SHORT)
    assert_still_serving(server)


# Found by the fuzz run: `file:.` (the model folder itself) was a 500/INTERNAL with
# "IsADirectoryError: [Errno 21] Is a directory" from writing the file; in CI, a name holding a
# lone surrogate was a 500 with "UnicodeEncodeError" (the file system takes no such name).
@pytest.mark.parametrize("path", [".", "1/model.py/x", "\udc00x"])
def test_file_override_that_cannot_be_written(server, path):
    files = {f"file:{path}": base64.b64encode(b"x").decode(), "file:1/model.py": base64.b64encode(b"y").decode()}
    reply, closed = exchange(server.http_port, _http_load("m", {"config": "{}", **files}), TIMEOUT)
    assert check_replies(reply, closed) == [400], reply[:400]
    assert b"cannot write 'file:" in reply, reply[:400]
