"""The infer route's declared fast form (`Router.add(fast=...)`, taken task-less by the
native transport) answers as the awaited route does: the same replies, errors through
the one error table, and restricted APIs still checked. A gzip body makes the route
decline its fast form, so each request below is sent both ways to a real server."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request

import pytest

from support.grpc_models import identity_fp32
from support.naiad_process import NaiadProcess

try:
    from naiad.ext import _native_http  # noqa: F401
except ImportError as exc:
    pytest.skip(f"native HTTP front end not built here ({exc})", allow_module_level=True)

TIMEOUT = 10.0
NATIVE = '[services.http]\ntransport = "native"\n'


def _serve(tmp_path_factory, name: str, config: str) -> NaiadProcess:
    repo = tmp_path_factory.mktemp(f"{name}_models")
    identity_fp32(repo)
    proc = NaiadProcess(tmp_path_factory.mktemp(name), ["--model-repository", str(repo)], config=config)
    proc.start()
    return proc


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = _serve(tmp_path_factory, "fast", NATIVE)
    yield proc
    proc.kill_if_running()


def post(server: NaiadProcess, path: str, body: bytes, gzipped: bool = False,
         headers: dict | None = None) -> tuple[int, bytes]:
    headers = dict(headers or {})
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    req = urllib.request.Request(server.url + path, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def infer_doc(**extra) -> bytes:
    doc = {"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}], **extra}
    return json.dumps(doc).encode()


CASES = {
    "ok": ("identity_fp32", infer_doc(), 200),
    "malformed_json": ("identity_fp32", b"{not json", 500),
    "unknown_model": ("no_such_model", infer_doc(), 404),
    "reserved_parameter": ("identity_fp32", infer_doc(parameters={"triton_x": 1}), 400),
    "shape_mismatch": ("identity_fp32", json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2]}]}).encode(), 500),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_and_awaited_paths_answer_alike(server, case):
    model, body, status = CASES[case]
    path = f"/v2/models/{model}/infer"
    fast = post(server, path, body)
    awaited = post(server, path, body, gzipped=True)
    assert fast[0] == status, fast
    assert fast == awaited
    if status == 200:
        assert json.loads(fast[1])["outputs"][0]["data"] == [1.0, 2.0]
    else:
        assert set(json.loads(fast[1])) == {"error"}


def test_a_restricted_infer_is_checked_on_the_fast_path_too(tmp_path_factory):
    proc = _serve(tmp_path_factory, "restricted",
                  NATIVE + 'restricted_api = ["inference:x-key=open"]\n')
    try:
        path = "/v2/models/identity_fp32/infer"
        for gzipped in (False, True):
            assert post(proc, path, infer_doc(), gzipped) == (
                403, b'{"error":"This API is restricted, expecting header \'x-key\'"}')
            status, body = post(proc, path, infer_doc(), gzipped, headers={"x-key": "open"})
            assert status == 200 and json.loads(body)["outputs"][0]["data"] == [1.0, 2.0]
    finally:
        proc.kill_if_running()


def test_a_restriction_elsewhere_leaves_infer_open(tmp_path_factory):
    proc = _serve(tmp_path_factory, "other_restricted",
                  NATIVE + 'restricted_api = ["model-repository:x-key=open"]\n')
    try:
        status, body = post(proc, "/v2/models/identity_fp32/infer", infer_doc())
        assert status == 200 and json.loads(body)["outputs"][0]["data"] == [1.0, 2.0]
        assert post(proc, "/v2/repository/index", b"")[0] == 403
    finally:
        proc.kill_if_running()
