"""Native lanes on the HTTP front end (ext/frontend/http_lane.h, services/http/native.py):
a plain infer request (tensors in binary or JSON) for a model with a lane is answered
without Python, and its reply is byte for byte what the Python path sends. Two real servers serve the same
repository, one with lanes (the default) and one with `native_lanes = false`; each
request goes to both over raw sockets and tritonclient, and the raw replies must match.
The lanes-on server runs in this process so that its `lane_served` counter is read."""

from __future__ import annotations

import json
import socket
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

try:
    from naiad.ext import _native_http
except ImportError as exc:
    pytest.skip(f"native HTTP front end not built here ({exc})", allow_module_level=True)
if not _native_http.Server.lanes_supported:
    pytest.skip("native HTTP front end built without lanes (no RapidJSON)", allow_module_level=True)

import tritonclient.http as httpclient  # noqa: E402

from naiad import Server  # noqa: E402
from support.fuzzing import exchange as fuzz_exchange, responses as fuzz_responses, run_target  # noqa: E402
from support.models import ADD_SUB_MODEL, DELAYED_IDENTITY_MODEL, IDENTITY_MODEL, write_model  # noqa: E402
from support.naiad_process import NaiadProcess  # noqa: E402

TIMEOUT = 10.0

# Refuses every request, in words to escape (json.dumps writes error replies in ASCII).
REFUSE = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError('refused: caf\\u00e9 "q" \\U0001f600'))
                for _ in requests]
"""

# Sets response parameters of each kind (floats in orjson's two notations, a string to escape).
WITH_PARAMS = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        params = {"flag": True, "count": -7, "ratio": 0.1, "tiny": 2.5e-05, "huge": 1e16,
                  "note": "caf\\u00e9 \\"q\\" \\\\ \\n"}
        return [pb_utils.InferenceResponse(
            [pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())],
            parameters=params) for r in requests]
'''


# INT32 in; OUTPUT0 BYTES (the numbers as text, a byte that is not UTF-8 for a negative
# one), OUTPUT1 FP32 (a third of each, inf for zero).
TEXT = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            text = np.array([(str(v) + ('"\\xe9' if v % 2 else "")).encode() + (b"\\xff" if v < 0 else b"")
                             for v in x.flat], dtype=object).reshape(x.shape)
            with np.errstate(divide="ignore"):
                third = np.where(x == 0, np.inf, x / 3.0).astype(np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", text), pb_utils.Tensor("OUTPUT1", third)]))
        return out
"""


def _config(name: str, inputs: list[tuple[str, str, str]], outputs: list[tuple[str, str, str]],
            max_batch_size: int = 4, extra: str = "") -> str:
    def tensors(items: list[tuple[str, str, str]]) -> str:
        return ", ".join(f'{{ name: "{n}" data_type: {t} dims: {d} }}' for n, t, d in items)

    return textwrap.dedent(f"""
        name: "{name}"
        backend: "python"
        max_batch_size: {max_batch_size}
        input [ {tensors(inputs)} ]
        output [ {tensors(outputs)} ]
        dynamic_batching {{ max_queue_delay_microseconds: 2000 }}
        """) + extra


def _repository(root: Path) -> Path:
    repo = root / "models"
    two = [("INPUT0", "TYPE_FP32", "[ -1 ]"), ("INPUT1", "TYPE_FP32", "[ -1 ]")]
    outs = [(n.replace("IN", "OUT"), t, d) for n, t, d in two]
    write_model(repo, "lane_add_sub", _config("lane_add_sub", two, outs, extra="version_policy: { all { } }\n"),
                ADD_SUB_MODEL, versions=(1, 2))
    write_model(repo, "lane_refuse", _config("lane_refuse", two, outs), REFUSE)
    write_model(repo, "lane_text", _config("lane_text", [("INPUT0", "TYPE_INT32", "[ -1 ]")],
                                           [("OUTPUT0", "TYPE_STRING", "[ -1 ]"), ("OUTPUT1", "TYPE_FP32", "[ -1 ]")]),
                TEXT)
    half = [("INPUT0", "TYPE_FP16", "[ 2 ]")]
    write_model(repo, "lane_half", _config("lane_half", half, [("OUTPUT0", "TYPE_FP16", "[ 2 ]")]), IDENTITY_MODEL)
    one = [("INPUT0", "TYPE_INT32", "[ 2, 3 ]")]
    write_model(repo, "lane_params", _config("lane_params", one, [("OUTPUT0", "TYPE_INT32", "[ 2, 3 ]")]),
                WITH_PARAMS)
    return repo


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("lane")
    repo = _repository(root)
    off_config = root / "off.toml"
    off_config.write_text("[services.http]\nnative_lanes = false\n")
    on_config = root / "on.toml"  # lanes on (the default); where traces go when a test turns tracing on
    on_config.write_text(f'[services.tracing]\ntrace_config = ["triton,file={root / "trace.json"}"]\n')
    on = Server(repo, services=["http"], config=str(on_config)).start()
    try:
        off = Server(repo, services=["http"], config=str(off_config)).start()
    except BaseException:
        on.stop()
        raise
    try:
        native = on.kernel.services.get("http")._native  # type: ignore[union-attr]
        assert native is not None, "the lanes-on server is not on the native transport"
        deadline = time.monotonic() + TIMEOUT
        while native.server.lane_count < 11 and time.monotonic() < deadline:  # add_sub 1, 2, ""; 4 x (1, "")
            time.sleep(0.02)
        assert native.server.lanes_enabled
        off_native = off.kernel.services.get("http")._native  # type: ignore[union-attr]
        assert off_native.server.lane_count == 0 and not off_native.server.lanes_enabled
        yield on, off, native.server
    finally:
        off.stop()
        on.stop()


# ------------------------------------------------------------------ raw HTTP --


def infer_bytes(path: str, doc: dict, blobs: list[bytes], *, keep_alive: bool = True, http10: bool = False,
                headers: dict[str, str] | None = None, edit: tuple[bytes, bytes] = (b"", b"")) -> bytes:
    """The request; `edit` replaces one text of the JSON header by another (what json.dumps
    cannot write)."""
    header = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    if edit[0]:
        header = header.replace(*edit)
    body = header + b"".join(blobs)
    lines = [f"POST {path} HTTP/{'1.0' if http10 else '1.1'}", "Host: 127.0.0.1",
             f"Content-Length: {len(body)}", f"Inference-Header-Content-Length: {len(header)}"]
    if not keep_alive and not http10:
        lines.append("Connection: close")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_reply(f) -> bytes:
    """One whole HTTP/1.1 reply, as sent (head and Content-Length body)."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = f.readline()
        if not line:
            raise ConnectionError(f"connection closed mid-reply: {head!r}")
        head += line
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + f.read(length)


def exchange(port: int, *requests: bytes) -> list[bytes]:
    """Send `requests` in one write on one connection (pipelined) and read their replies."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"".join(requests))
        f = sock.makefile("rb")
        return [read_reply(f) for _ in requests]


def both(servers, *requests: bytes) -> tuple[list[bytes], list[bytes], int]:
    """The replies of the lanes-on and the lanes-off server, and how many the lanes answered."""
    on, off, native = servers
    before = native.lane_served
    got_on = exchange(on.http_port, *requests)
    got_off = exchange(off.http_port, *requests)
    return got_on, got_off, native.lane_served - before


def add_sub_request(shape: tuple[int, ...], *, request_id: str | None = None, outputs: list[str] | None = None,
                    version: str = "", seed: int = 0, **kw) -> bytes:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(shape).astype(np.float32)
    doc: dict = {}
    if request_id is not None:
        doc["id"] = request_id
    doc["inputs"] = [{"name": n, "shape": list(shape), "datatype": "FP32",
                      "parameters": {"binary_data_size": x.nbytes}} for n, x in (("INPUT0", a), ("INPUT1", b))]
    if outputs is None:
        doc["parameters"] = {"binary_data_output": True}
    else:
        doc["outputs"] = [{"name": o, "parameters": {"binary_data": True}} for o in outputs]
    path = "/v2/models/lane_add_sub" + (f"/versions/{version}" if version else "") + "/infer"
    return infer_bytes(path, doc, [a.tobytes(), b.tobytes()], **kw)


# ------------------------------------------------------------------ same bytes --

IDS = [None, "", "plain-1", 'q"uote\\back/slash', "ünï€😀", "ctl\x01\t\n\x7f", "nul\x00"]


@pytest.mark.parametrize("batch", [1, 2, 3, 4])
def test_replies_are_byte_identical_across_shapes_and_ids(servers, batch):
    requests = [add_sub_request((batch, width), request_id=rid, seed=batch * 10 + k)
                for k, (width, rid) in enumerate(zip((1, 3, 8, 5, 2, 16, 7), IDS))]
    got_on, got_off, served = both(servers, *requests)
    assert got_on == got_off
    assert served == len(requests)
    for reply in got_on:
        assert reply.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n")


def test_requested_outputs_versions_and_connection_close(servers):
    requests = [
        add_sub_request((2, 4), outputs=["OUTPUT1"], request_id="one output"),
        add_sub_request((2, 4), outputs=["OUTPUT1", "OUTPUT0"], seed=1),
        add_sub_request((1, 4), version="1", seed=2),
        add_sub_request((1, 4), version="002", seed=3),
    ]
    got_on, got_off, served = both(servers, *requests)
    assert got_on == got_off and served == len(requests)
    assert b'"model_version":"1"' in got_on[2] and b'"model_version":"2"' in got_on[3]
    for last in (add_sub_request((1, 2), keep_alive=False), add_sub_request((1, 2), http10=True)):
        got_on, got_off, served = both(servers, last)
        assert got_on == got_off and served == 1
        assert b"\r\nConnection: close\r\n" in got_on[0]


def test_response_parameters_and_empty_outputs(servers):
    x = np.arange(6, dtype=np.int32).reshape(1, 2, 3)
    doc = {"id": "p", "inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 2, 3],
                                  "parameters": {"binary_data_size": x.nbytes}}],
           "parameters": {"binary_data_output": True}}
    got_on, got_off, served = both(servers, infer_bytes("/v2/models/lane_params/infer", doc, [x.tobytes()]))
    assert got_on == got_off and served == 1
    assert b'"tiny":0.000025' in got_on[0] and b'"huge":1e+16' in got_on[0]
    # Zero-sized tensors: no output bytes, so the reply is JSON alone (as the Python path sends it).
    empty = add_sub_request((1, 0), request_id="empty")
    got_on, got_off, served = both(servers, empty)
    assert got_on == got_off and served == 1
    assert b"Content-Type: application/json\r\n" in got_on[0]


def test_model_errors_are_worded_alike(servers):
    a = np.ones((1, 2), dtype=np.float32)
    doc = {"inputs": [{"name": n, "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}
                      for n in ("INPUT0", "INPUT1")], "parameters": {"binary_data_output": True}}
    got_on, got_off, served = both(servers, infer_bytes("/v2/models/lane_refuse/infer", doc, [a.tobytes()] * 2))
    assert got_on == got_off and served == 1
    status = got_on[0].split(b"\r\n", 1)[0]
    assert status.startswith(b"HTTP/1.1 4") or status.startswith(b"HTTP/1.1 5"), got_on[0]
    assert b'{"error":' in got_on[0] and b"caf\\u00e9 \\\"q\\\" \\ud83d\\ude00" in got_on[0]


# ------------------------------------------------------------------ declined to Python --


def _bad(inputs: list[dict], blobs: list[bytes], outputs: list[dict] | None = None, path: str = "lane_add_sub",
         edit: tuple[bytes, bytes] = (b"", b""), **extra) -> bytes:
    doc: dict = {"inputs": inputs, **extra}
    if outputs is not None:
        doc["outputs"] = outputs
    else:
        doc.setdefault("parameters", {"binary_data_output": True})
    return infer_bytes(f"/v2/models/{path}/infer", doc, blobs, edit=edit)


def _inp(name: str = "INPUT0", shape=(1, 2), datatype: str = "FP32", size: int | None = None) -> dict:
    n = size if size is not None else int(np.prod(shape)) * 4
    return {"name": name, "shape": list(shape), "datatype": datatype, "parameters": {"binary_data_size": n}}


_B = b"\0" * 8
BAD = {
    "unknown_input": _bad([_inp(), _inp("INPUT9")], [_B, _B]),
    "wrong_datatype": _bad([_inp(), _inp("INPUT1", datatype="INT32")], [_B, _B]),
    "wrong_shape": _bad([_inp("INPUT0", shape=(2, 3, 4), datatype="INT32", size=96)], [b"\0" * 96],
                        path="lane_params"),
    "wrong_byte_size": _bad([_inp(), _inp("INPUT1", size=4)], [_B, b"\0" * 4]),
    "missing_input": _bad([_inp()], [_B]),
    "unknown_output": _bad([_inp(), _inp("INPUT1")], [_B, _B], outputs=[{"name": "OUTPUT7",
                                                                         "parameters": {"binary_data": True}}]),
    "batch_over_max": _bad([_inp(shape=(5, 2)), _inp("INPUT1", shape=(5, 2))], [b"\0" * 40] * 2),
    "batch_mismatch": _bad([_inp(shape=(1, 2)), _inp("INPUT1", shape=(2, 1))], [_B, _B]),
    "extra_bytes": _bad([_inp(), _inp("INPUT1")], [_B, _B + b"\0"]),
    "reserved_parameter": _bad([_inp(), _inp("INPUT1")], [_B, _B], parameters={"triton_x": 1}),
    "unknown_model": _bad([_inp()], [_B], path="no_such_model"),
    # A lone surrogate escape: text Python holds differently (orjson refuses it, json takes it).
    "lone_surrogate_id": _bad([_inp(), _inp("INPUT1")], [_B, _B], id="@", edit=(b'"@"', b'"\\udc00"')),
    "duplicate_key": _bad([_inp(), _inp("INPUT1")], [_B, _B], id="@", edit=(b'"id":"@"', b'"id":"a","id":"b"')),
}
ANSWERED = ("duplicate_key",)  # answered 200 by the Python path, as it reads them


@pytest.mark.parametrize("case", sorted(BAD))
def test_requests_a_lane_declines_are_answered_by_python_alike(servers, case):
    got_on, got_off, served = both(servers, BAD[case])
    assert got_on == got_off
    assert served == 0
    if case != "lone_surrogate_id":  # (whatever Python makes of it, the same on both)
        assert got_on[0].startswith(b"HTTP/1.1 200") == (case in ANSWERED), got_on[0]


def test_compression_and_query_strings_take_the_python_path(servers):
    plain = add_sub_request((1, 3), request_id="gz")
    variants = [add_sub_request((1, 3), headers={"Accept-Encoding": "gzip"}),
                plain.replace(b"/infer HTTP/1.1", b"/infer?x=1 HTTP/1.1")]
    got_on, got_off, served = both(servers, *variants)
    assert got_on == got_off and served == 0
    assert b"Content-Encoding: gzip" in got_on[0]
    got_on, got_off, served = both(servers, add_sub_request((1, 3), headers={"Accept-Encoding": "identity"}))
    assert got_on == got_off and served == 1


# ------------------------------------------------------------------ connections --


def test_pipelined_requests_on_one_connection(servers):
    requests = [add_sub_request((1 + k % 4, 2 + k), request_id=f"p{k}", seed=k) for k in range(8)]
    requests.insert(3, BAD["unknown_input"])  # a Python-path request between lane requests
    got_on, got_off, served = both(servers, *requests)
    assert got_on == got_off
    assert served == len(requests) - 1
    ids = [r.split(b'"id":"', 1)[1].split(b'"', 1)[0] for r in got_on if b'"id":"' in r]
    assert ids == [f"p{k}".encode() for k in range(8)]  # in request order


def test_a_client_that_leaves_before_its_answer(servers):
    on, _, native = servers
    before = native.lane_served
    for k in range(5):
        with socket.create_connection(("127.0.0.1", on.http_port), timeout=TIMEOUT) as sock:
            sock.sendall(add_sub_request((4, 64), seed=k))
    deadline = time.monotonic() + TIMEOUT
    while (native.lane_served - before < 5 or native.lane_inflight) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert native.lane_served - before == 5 and native.lane_inflight == 0
    got = exchange(on.http_port, add_sub_request((1, 2), request_id="after"))
    assert got[0].startswith(b"HTTP/1.1 200 OK") and b'"id":"after"' in got[0]


# ------------------------------------------------------------------ tritonclient --


def test_tritonclient_infer_goes_through_the_lane(servers):
    on, off, native = servers
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.full((3, 4), 0.5, dtype=np.float32)
    results = {}
    for name, server in (("on", on), ("off", off)):
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        try:
            inputs = [httpclient.InferInput("INPUT0", [3, 4], "FP32"), httpclient.InferInput("INPUT1", [3, 4], "FP32")]
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(b)
            before = native.lane_served
            outs = [httpclient.InferRequestedOutput("OUTPUT0"), httpclient.InferRequestedOutput("OUTPUT1")]
            r1 = client.infer("lane_add_sub", inputs, request_id="tc")
            r2 = client.infer("lane_add_sub", inputs, outputs=outs, model_version="1")
            results[name] = (r1.get_response(), r2.get_response(), native.lane_served - before)
            np.testing.assert_array_equal(r1.as_numpy("OUTPUT0"), a + b)
            np.testing.assert_array_equal(r2.as_numpy("OUTPUT1"), a - b)
        finally:
            client.close()
    assert results["on"][:2] == results["off"][:2]
    assert results["on"][2] == 2 and results["off"][2] == 0


# ------------------------------------------------------------------ the gate --


def _trace_setting(port: int, body: dict) -> dict:
    data = json.dumps(body).encode()
    request = (f"POST /v2/trace/setting HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n\r\n"
               ).encode() + data
    reply = exchange(port, request)[0]
    assert reply.startswith(b"HTTP/1.1 200"), reply
    return json.loads(reply.split(b"\r\n\r\n", 1)[1])


def _wait_gate(native, on: bool) -> None:
    deadline = time.monotonic() + TIMEOUT
    while native.lanes_enabled != on and time.monotonic() < deadline:
        time.sleep(0.01)
    assert native.lanes_enabled == on


def test_tracing_turns_lanes_off_and_back_on(servers):
    on, _, native = servers
    _trace_setting(on.http_port, {"trace_level": ["TIMESTAMPS"], "trace_rate": "1"})
    try:
        assert not native.lanes_enabled  # off before the setting's reply left
        before = native.lane_served
        got = exchange(on.http_port, add_sub_request((1, 2), request_id="traced"))
        assert got[0].startswith(b"HTTP/1.1 200 OK") and native.lane_served == before
    finally:
        _trace_setting(on.http_port, {"trace_level": ["OFF"]})
    _wait_gate(native, True)
    before = native.lane_served
    exchange(on.http_port, add_sub_request((1, 2)))
    assert native.lane_served == before + 1


def test_shutdown_turns_lanes_off_at_its_first_step(tmp_path):
    server = Server(_repository(tmp_path), services=["http"]).start()
    try:
        native = server.kernel.services.get("http")._native.server  # type: ignore[union-attr]
        _wait_gate(native, True)
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=TIMEOUT) as sock:
            f = sock.makefile("rb")
            sock.sendall(add_sub_request((1, 2)))
            assert read_reply(f).startswith(b"HTTP/1.1 200 OK")
            served = native.lane_served
            assert served >= 1
            closed = threading.Event()

            def close_listeners() -> None:  # the kernel's first step at SIGTERM
                server.kernel.lifecycle.close_listeners()
                closed.set()

            server._loop.call_soon_threadsafe(close_listeners)
            assert closed.wait(TIMEOUT)
            assert not native.lanes_enabled
            # The open connection is still served, by the Python path now.
            sock.sendall(add_sub_request((1, 2), request_id="late"))
            reply = read_reply(f)
            assert reply.startswith(b"HTTP/1.1 200 OK") and b'"id":"late"' in reply
            assert native.lane_served == served
    finally:
        server.stop()


# ------------------------------------------------------------------ differential fuzz --


@st.composite
def near_plain_requests(draw) -> bytes:
    """An infer request for lane_add_sub in a plain form (tensors in binary or as JSON
    data), each part of it a little off now and then (one time in `ODDS`): names,
    datatypes, shapes, sizes, ids, outputs, parameters, extra keys, the header length, the
    version."""
    def odd() -> bool:
        return draw(st.integers(0, ODDS - 1)) == 0

    def pick(plain, *others):
        return draw(st.sampled_from(others)) if odd() else plain

    batch, width = draw(st.integers(1, 4)), draw(st.integers(0, 5))
    batch = pick(batch, 0, 5, 6)
    inputs, payload = [], b""
    for name in pick(["INPUT0", "INPUT1"], ["INPUT1", "INPUT0"], ["INPUT0"], ["INPUT0", "INPUT0"],
                     ["INPUT0", "INPUT1", "INPUT2"]):
        shape = pick([batch, width], [batch], [batch, width, 1], [width], [batch, -1])
        datatype = pick("FP32", "INT32", "FP64", "fp32")
        n = int(np.prod([max(d, 0) for d in shape])) * (8 if datatype == "FP64" else 4)
        data = draw(st.binary(min_size=n, max_size=n))
        size: object = pick(len(data), len(data) + 1, max(len(data) - 1, 0), -1, 1.0, "8", None)
        tensor: dict = {"name": name, "datatype": datatype, "shape": shape}
        if draw(st.booleans()):  # as JSON data (finite values: NaN is not JSON)
            values = np.nan_to_num(np.frombuffer(data, dtype=np.float64 if datatype == "FP64" else
                                                 np.int32 if datatype == "INT32" else np.float32)).tolist()
            tensor["data"] = pick(values, values[:-1], [values], [True] * len(values))
        else:
            tensor["parameters"] = {"binary_data_size": size}
            payload += data
        if odd():
            tensor[draw(st.sampled_from(["data", "x"]))] = [1]
        inputs.append(tensor)
    doc: dict = {}
    if draw(st.booleans()):
        doc["id"] = draw(st.text(max_size=8)) if not odd() else draw(st.integers(0, 3))
    doc["inputs"] = inputs
    if draw(st.booleans()):
        doc["outputs"] = [{"name": o, "parameters": {"binary_data": draw(st.booleans()) if not odd() else 1}}
                          if draw(st.booleans()) else {"name": o}
                          for o in pick(["OUTPUT0"], ["OUTPUT1", "OUTPUT0"], ["OUTPUT2"], ["OUTPUT0", "OUTPUT0"])]
    if "outputs" not in doc or odd():
        doc["parameters"] = pick({"binary_data_output": True}, {"binary_data_output": False}, {"priority": 1}, {})
    header = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()
    hlen = pick(len(header), len(header) - 1, len(header) + 1, 0)
    version = pick("", "/versions/1", "/versions/2", "/versions/3", "/versions/02")
    body = header + payload
    length = f"Inference-Header-Content-Length: {hlen}\r\n" if payload or odd() else ""
    return (f"POST /v2/models/lane_add_sub{version}/infer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n{length}\r\n").encode() + body


ODDS = 16


def test_fuzz_lane_and_python_answer_alike(servers):
    """Every input (and its byte-level mutations) gets the same first reply from both
    servers. (Only the first: when a mutation leaves bytes after a request on a half-closed
    connection, whether they are answered too depends on whether the reply or the client's
    FIN reaches the native thread first, lanes or not.)"""
    on, off, native = servers
    before = native.lane_served

    def check(raw: bytes) -> None:
        got_on, closed_on = fuzz_exchange(on.http_port, raw, TIMEOUT)
        got_off, closed_off = fuzz_exchange(off.http_port, raw, TIMEOUT)
        assert closed_on and closed_off, (got_on[:300], got_off[:300])
        assert fuzz_responses(got_on)[:1] == fuzz_responses(got_off)[:1], (got_on[:600], got_off[:600])

    run_target("http-lane-differential", near_plain_requests(), check, 320)
    assert native.lane_served - before >= 5  # the lanes took their share (the plain bases)


# ------------------------------------------------------------------ concurrency --


def _outputs(reply: bytes) -> dict[str, np.ndarray]:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), reply[:300]
    hlen = int(head.split(b"Inference-Header-Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
    doc, offset, out = json.loads(body[:hlen]), hlen, {}
    for o in doc["outputs"]:
        n = o["parameters"]["binary_data_size"]
        out[o["name"]] = np.frombuffer(body[offset:offset + n], dtype=np.float32).reshape(o["shape"])
        offset += n
    return out


def test_concurrent_clients_get_their_own_answers(servers):
    """Requests of many connections at once are batched together on the lane and each
    answer goes back to its own connection."""
    on, _, native = servers
    before = native.lane_served
    clients, per_client = 8, 20
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            rng = np.random.default_rng(k)
            with socket.create_connection(("127.0.0.1", on.http_port), timeout=TIMEOUT) as sock:
                f = sock.makefile("rb")
                for i in range(per_client):
                    shape = (int(rng.integers(1, 5)), 3)
                    a = np.full(shape, k * 1000 + i, dtype=np.float32)
                    b = rng.standard_normal(shape).astype(np.float32)
                    doc = {"id": f"{k}-{i}", "inputs": [
                        {"name": n, "shape": list(shape), "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
                        for n, x in (("INPUT0", a), ("INPUT1", b))], "parameters": {"binary_data_output": True}}
                    sock.sendall(infer_bytes("/v2/models/lane_add_sub/infer", doc, [a.tobytes(), b.tobytes()]))
                    reply = read_reply(f)
                    assert f'"id":"{k}-{i}"'.encode() in reply, reply[:200]
                    out = _outputs(reply)
                    np.testing.assert_array_equal(out["OUTPUT0"], a + b)
                    np.testing.assert_array_equal(out["OUTPUT1"], a - b)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def counts() -> tuple[int, int]:
        reply = exchange(on.http_port, b"GET /v2/models/lane_add_sub/versions/2/stats HTTP/1.1\r\nHost: t\r\n\r\n")[0]
        stats = json.loads(reply.split(b"\r\n\r\n", 1)[1])["model_stats"][0]
        return stats["inference_count"], stats["execution_count"]

    inferences, executions = counts()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 3)
    assert not errors, errors[0]
    assert native.lane_served - before == clients * per_client
    after = counts()
    assert after[0] - inferences >= clients * per_client  # (batch sizes summed)
    assert after[1] - executions < clients * per_client  # some executions took several requests


# ------------------------------------------------------------------ JSON bodies --


def json_bytes(path: str, doc: dict, **kw) -> bytes:
    """A JSON-only infer request, as curl users send it (no Inference-Header-Content-Length)."""
    body = json.dumps(doc).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "\r\n").encode() + body


def test_json_bodies_are_byte_identical(servers):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((2, 3)).round(3)
    requests = [
        json_bytes("/v2/models/lane_add_sub/infer", {"id": "j1", "inputs": [
            {"name": "INPUT0", "shape": [2, 3], "datatype": "FP32", "data": a.tolist()},
            {"name": "INPUT1", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4.5, 1e-7, -0.0]}]}),
        json_bytes("/v2/models/lane_add_sub/versions/1/infer", {"inputs": [
            {"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [0.1, 1e16], "parameters": {}},
            {"name": "INPUT1", "shape": [1, 2], "datatype": "FP32", "data": [[0.2, 3]]}],
            "outputs": [{"name": "OUTPUT1"}, {"name": "OUTPUT0", "parameters": {"binary_data": True}}]}),
        json_bytes("/v2/models/lane_params/infer", {"inputs": [
            {"name": "INPUT0", "shape": [1, 2, 3], "datatype": "INT32", "data": [1, -2, 3, 2**31 - 1, -2**31, 0]}]}),
        json_bytes("/v2/models/lane_text/infer", {"inputs": [
            {"name": "INPUT0", "shape": [1, 3], "datatype": "INT32", "data": [3, 1, 2]}]}),
        json_bytes("/v2/models/lane_text/infer", {"inputs": [  # a zero: inf, so json.dumps' floats
            {"name": "INPUT0", "shape": [1, 3], "datatype": "INT32", "data": [3, 0, 2]}]}),
        json_bytes("/v2/models/lane_text/infer", {"inputs": [  # a negative: not UTF-8, json.dumps' floats
            {"name": "INPUT0", "shape": [2, 1], "datatype": "INT32", "data": [4, -7]}]}),
        json_bytes("/v2/models/lane_half/infer", {"inputs": [  # FP16 data as JSON: Python refuses it
            {"name": "INPUT0", "shape": [1, 2], "datatype": "FP16", "data": [1, 2]}]}),
    ]
    got_on, got_off, served = both(servers, *requests)
    assert got_on == got_off
    assert served == len(requests) - 1  # (FP16 data in JSON: declined, the Python path refuses it)
    assert b'"data":[' in got_on[0] and b"Content-Type: application/json" in got_on[0]
    assert b"Infinity" in got_on[4] and b"\xff" in got_on[5]
    x = np.array([[1.5, -2.0]], dtype=np.float16)
    half_binary_in = infer_bytes("/v2/models/lane_half/infer", {"inputs": [
        {"name": "INPUT0", "shape": [1, 2], "datatype": "FP16", "parameters": {"binary_data_size": 4}}],
        "outputs": [{"name": "OUTPUT0"}]}, [x.tobytes()])
    got_on, got_off, served = both(servers, half_binary_in)
    assert got_on == got_off and served == 1
    assert got_on[0].startswith(b"HTTP/1.1 400") and b"sending FP16 data via JSON" in got_on[0]


def test_large_tensors_wanted_as_json_are_left_to_python(servers):
    """Outputs written as JSON are written on the event loop: past 1 MiB of input the lane
    leaves such a request to Python (which writes it off the loop); binary goes on."""
    a = np.ones((1, 300_000), dtype=np.float32)
    got_on, got_off, served = both(servers, add_sub_request(a.shape, seed=1))
    assert got_on == got_off and served == 1
    doc = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": "FP32",
                       "parameters": {"binary_data_size": a.nbytes}} for n in ("INPUT0", "INPUT1")],
           "outputs": [{"name": "OUTPUT0"}]}
    got_on, got_off, served = both(servers, infer_bytes("/v2/models/lane_add_sub/infer", doc, [a.tobytes()] * 2))
    assert got_on == got_off and served == 0
    assert b'"data":[2.0,2.0,' in got_on[0]


def test_expect_continue_and_chunked_bodies_take_the_lane(servers):
    """What curl sends for a large body (Expect: 100-continue) and a chunked body are framed
    first, then taken by the lane like any other."""
    plain = add_sub_request((2, 300), request_id="big", seed=5)
    head, _, body = plain.partition(b"\r\n\r\n")
    chunked_head = head.replace(f"Content-Length: {len(body)}".encode(), b"Transfer-Encoding: chunked")
    chunked = chunked_head + b"\r\n\r\n" + b"".join(
        b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000]) for i in range(0, len(body), 1000)) + b"0\r\n\r\n"
    on, off, native = servers
    for server in (on, off):
        before = native.lane_served
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=TIMEOUT) as sock:
            f = sock.makefile("rb")
            sock.sendall(head + b"\r\nExpect: 100-continue\r\n\r\n")
            assert f.readline() == b"HTTP/1.1 100 Continue\r\n" and f.readline() == b"\r\n"
            sock.sendall(body)
            expect_reply = read_reply(f)
            sock.sendall(chunked)
            chunked_reply = read_reply(f)
        assert expect_reply == chunked_reply == exchange(server.http_port, plain)[0]
        assert native.lane_served - before == (3 if server is on else 0)


@pytest.mark.parametrize("setting", ['header_forward_pattern = "^x-"', 'restricted_api = ["inference:key=v"]'])
def test_settings_python_applies_per_request_keep_lanes_off(tmp_path, setting):
    repo = tmp_path / "models"
    write_model(repo, "lane_params", _config("lane_params", [("INPUT0", "TYPE_INT32", "[ 2, 3 ]")],
                                             [("OUTPUT0", "TYPE_INT32", "[ 2, 3 ]")]), IDENTITY_MODEL)
    config = tmp_path / "naiad.toml"
    config.write_text(f"[services.http]\n{setting}\n")
    server = Server(repo, services=["http"], config=str(config)).start()
    try:
        native = server.kernel.services.get("http")._native  # type: ignore[union-attr]
        x = np.zeros((1, 2, 3), dtype=np.int32)
        doc = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 2, 3],
                           "parameters": {"binary_data_size": x.nbytes}}], "parameters": {"binary_data_output": True}}
        reply = exchange(server.http_port, infer_bytes("/v2/models/lane_params/infer", doc, [x.tobytes()],
                                                       headers={"key": "v", "x-a": "1"}))[0]
        assert reply.startswith(b"HTTP/1.1 200 OK"), reply[:300]
        assert native.lanes is None and not native.server.lanes_enabled and native.server.lane_served == 0
    finally:
        server.stop()


def test_shutdown_waits_for_requests_on_lanes(tmp_path):
    """SIGTERM while a request is on a lane: the kernel's drain counts it and waits for its
    answer, which the client gets; the server exits cleanly."""
    repo = tmp_path / "models"
    write_model(repo, "slow", _config("slow", [("INPUT0", "TYPE_FP32", "[ -1 ]")], [("OUTPUT0", "TYPE_FP32", "[ -1 ]")],
                                      extra='parameters { key: "delay" value: { string_value: "0.6" } }\n'),
                DELAYED_IDENTITY_MODEL)
    proc = NaiadProcess(tmp_path / "server", ["--model-repository", str(repo)])
    proc.start()
    try:
        x = np.array([[1.5, -2.0]], dtype=np.float32)
        doc = {"id": "drained", "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2],
                                            "parameters": {"binary_data_size": x.nbytes}}],
               "parameters": {"binary_data_output": True}}
        with socket.create_connection(("127.0.0.1", proc.http_port), timeout=TIMEOUT) as sock:
            sock.sendall(infer_bytes("/v2/models/slow/infer", doc, [x.tobytes()]))
            time.sleep(0.2)
            proc.signal()
            reply = read_reply(sock.makefile("rb"))
        assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(x.tobytes()), reply[:300]
        assert b'"id":"drained"' in reply
        assert proc.wait(30) == 0
        logs = proc.logs()
        # Counted in flight: the kernel waited for it with the listener closed, or in its drain.
        assert ("Found 1 HTTP service connections" in logs
                or "Found 1 live models and 1 in-flight" in logs), logs[-3000:]
        assert "HTTP: 1 infer request(s) answered on native lanes" in logs
    finally:
        proc.kill_if_running()
