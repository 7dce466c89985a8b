"""Fuzzing the HTTP front ends of a real `naiad serve` over raw sockets, on both transports
(the native front end and aiohttp): request heads, binary-tensor bodies and JSON infer
bodies built by hypothesis near the protocol, each also sent mangled byte by byte.

Property, for every input: the server answers or closes within a few seconds, what it sends
is well-formed HTTP (h11 reads it as a client would), no status is a 5xx but the 500s Triton
itself answers on malformed JSON, and no error carries a Python exception's text. After each
target, the server process is alive and a well-formed inference still returns the right
tensor. `NAIAD_FUZZ_INPUTS` (`make fuzz`) raises the number of inputs per target.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import strategies as st

from naiad_http_models import build_repository
from support.fuzzing import check_replies, exchange, run_target, serve
from support.naiad_process import NaiadProcess

TIMEOUT = 5.0  # seconds a reply may take
SHORT = 320  # inputs per target in the normal suite
MODELS = ["identity_all"]  # one Python stub: every datatype, each input optional
WIRE_TYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
              "FP16", "FP32", "FP64", "BYTES", "BF16"]
ITEM_SIZE = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
             "UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}


@pytest.fixture(scope="module", params=["native", "aiohttp"])
def server(request, tmp_path_factory):
    proc = serve(tmp_path_factory, build_repository(tmp_path_factory.mktemp("fuzz_models"), MODELS), "http",
                 request.param, "naiad.ext._native_http")
    yield proc
    proc.kill_if_running()


def assert_still_serving(server: NaiadProcess) -> None:
    """The process lives and a well-formed binary-tensor inference gets its tensor back."""
    assert server.proc.poll() is None, f"naiad died during the fuzz run:\n{server.logs()[-4000:]}"
    values = np.arange(8, dtype=np.float32)
    header = json.dumps({"inputs": [{"name": "IN_FP32", "datatype": "FP32", "shape": [8],
                                     "parameters": {"binary_data_size": 32}}],
                         "outputs": [{"name": "OUT_FP32", "parameters": {"binary_data": True}}]}).encode()
    body = header + values.tobytes()
    reply, closed = exchange(server.http_port, (
        b"POST /v2/models/identity_all/infer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Content-Length: %d\r\nInference-Header-Content-Length: %d\r\n\r\n" % (len(body), len(header))) + body,
        TIMEOUT)
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), reply[:400]
    assert payload.endswith(values.tobytes()), reply[:400]


# ------------------------------------------------------------------ request heads --

_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ROUTES = ["/", "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/identity_all",
           "/v2/models/identity_all/ready", "/v2/models/identity_all/config", "/v2/models/identity_all/stats",
           "/v2/models/identity_all/infer", "/v2/models/identity_all/versions/1/infer",
           "/v2/models/identity_all/infer", "/v2/models/nope/infer", "/v2/models/identity_all/generate",
           "/v2/repository/index", "/v2/repository/models/identity_all/load", "/v2/models/stats",
           "/v2/systemsharedmemory/status", "/v2/cudasharedmemory/status", "/v2/trace/setting", "/v2/logging",
           "/v2/systemsharedmemory/region/r/register", "/v2/models/identity_all/trace/setting"]
_HEADER_NAMES = ["Host", "Content-Length", "Transfer-Encoding", "Connection", "Content-Type", "Content-Encoding",
                 "Accept-Encoding", "Inference-Header-Content-Length", "Expect", "Upgrade", "Keep-Alive",
                 "Authorization", "Trailer", "TE", "Range", "X-Forwarded-For", "traceparent"]
_HEADER_VALUES = ["0", "1", "5", "-1", "+5", "0x10", "5, 5", "chunked", "gzip", "deflate", "identity",
                  "chunked, identity", "gzip, chunked", "close", "keep-alive", "Upgrade", "100-continue",
                  "application/json", "h2c", "websocket", "*", "", " ", "18446744073709551616"]


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, at = b"", 0
    for n in sizes:
        piece = body[at:at + n]
        at += len(piece)
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n\r\n"


@st.composite
def request_heads(draw) -> bytes:
    method = draw(st.one_of(
        st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE"]),
        st.text(_TOKEN_CHARS, min_size=1, max_size=12).map(str.encode),
        st.binary(min_size=1, max_size=8)))
    target = draw(st.one_of(
        st.sampled_from(_ROUTES).map(str.encode),
        st.tuples(st.sampled_from(_ROUTES), st.text(max_size=20)).map(lambda t: (t[0] + t[1]).encode("utf-8", "surrogatepass")),
        st.tuples(st.sampled_from(_ROUTES), st.sampled_from(["?", "#", "%", "%2F..%2F", "//", "/../../", ";"]),
                  st.text(max_size=10)).map(lambda t: "".join(t).encode("utf-8", "surrogatepass")),
        st.sampled_from([b"*", b"http://t/v2", b"t:80", b""]),
        st.binary(max_size=24)))
    version = draw(st.one_of(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9",
                                              b"http/1.1", b"HTTP/1", b""]), st.binary(max_size=10)))
    headers = draw(st.lists(st.tuples(
        st.one_of(st.sampled_from(_HEADER_NAMES).map(str.encode), st.text(_TOKEN_CHARS, min_size=1, max_size=16).map(str.encode),
                  st.binary(max_size=12)),
        st.one_of(st.sampled_from(_HEADER_VALUES).map(str.encode), st.binary(max_size=40),
                  st.integers(-10, 1 << 70).map(lambda n: str(n).encode()))), max_size=8))
    body = draw(st.binary(max_size=64))
    framing = draw(st.sampled_from(["length", "chunked", "none", "as-drawn"]))
    lines = [method + b" " + target + b" " + version, b"Host: t"] + [n + b": " + v for n, v in headers]
    if framing == "length":
        lines.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        body = _chunked(body, draw(st.lists(st.integers(1, 32), max_size=4)))
    elif framing == "none":
        body = b""
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
    if draw(st.booleans()):  # a well-formed request pipelined behind it
        raw += b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n"
    return raw


def send(server: NaiadProcess):
    def check(raw: bytes) -> None:
        check_replies(*exchange(server.http_port, raw, TIMEOUT), head=raw.startswith(b"HEAD "))
    return check


def test_fuzz_request_head(server):
    run_target(f"http-head-{server.transport}", request_heads(), send(server), SHORT)
    assert_still_serving(server)


# ------------------------------------------------------------------ infer bodies --


def _post_infer(model: str, body: bytes, header_length: bytes | None) -> bytes:
    extra = b"" if header_length is None else b"Inference-Header-Content-Length: " + header_length + b"\r\n"
    return (b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n"
            % (model.encode(), len(body))) + extra + b"\r\n" + body


_names = st.one_of(st.sampled_from([f"IN_{t}" for t in WIRE_TYPES] + ["INPUT0", "OUT_FP32", ""]),
                   st.text(max_size=8))
_datatypes = st.one_of(st.sampled_from(WIRE_TYPES), st.text(max_size=6))
_shapes = st.lists(st.one_of(st.integers(-2, 6), st.sampled_from([1 << 31, 1 << 62, (1 << 63) - 1, 1 << 64])),
                   max_size=4)
_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
                          st.floats(allow_nan=False), st.text(max_size=8))
_json_values = st.recursive(_json_scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=6), kids, max_size=4)), max_leaves=12)


@st.composite
def bytes_elements(draw) -> bytes:
    """A BYTES tensor's binary form: 4-byte little-endian lengths, each before its bytes, the
    lengths sometimes lying."""
    out = b""
    for item in draw(st.lists(st.binary(max_size=12), max_size=4)):
        n = draw(st.one_of(st.just(len(item)), st.integers(0, 0xFFFFFFFF)))
        out += struct.pack("<I", n) + item
    return out


@st.composite
def binary_bodies(draw) -> bytes:
    """A binary-tensor request: a JSON header whose inputs declare `binary_data_size`, then
    the tensors' bytes; sizes, shapes, types and the header length right or off."""
    inputs, payload = [], b""
    for _ in range(draw(st.integers(0, 3))):
        dt = draw(_datatypes)
        shape = draw(_shapes)
        if dt == "BYTES":
            data = draw(bytes_elements())
        else:
            count = int(np.prod([max(d, 0) for d in shape])) if all(0 <= d < 64 for d in shape) else 1
            data = draw(st.binary(min_size=0, max_size=64)) if draw(st.booleans()) else bytes(
                count * ITEM_SIZE.get(dt, 1))
        size = draw(st.one_of(st.just(len(data)), st.integers(-2, 80), st.sampled_from([1 << 32, 1 << 63, 1 << 64]),
                              st.sampled_from(["8", 1.5, None, True])))
        params = {"binary_data_size": size}
        if draw(st.integers(0, 5)) == 0:
            params.update(draw(st.dictionaries(st.sampled_from(["shared_memory_region", "shared_memory_byte_size",
                                                                "shared_memory_offset", "x"]), _json_scalars,
                                               max_size=2)))
        tensor = {"name": draw(_names), "datatype": dt, "shape": shape, "parameters": params}
        if draw(st.integers(0, 7)) == 0:
            tensor["data"] = draw(_json_values)
        inputs.append(tensor)
        payload += data
    doc: dict = {"inputs": inputs}
    if draw(st.booleans()):
        doc["outputs"] = [{"name": draw(_names), "parameters": draw(st.dictionaries(
            st.sampled_from(["binary_data", "classification", "x"]), _json_scalars, max_size=2))}]
    if draw(st.booleans()):
        doc["parameters"] = draw(st.dictionaries(st.sampled_from(
            ["binary_data_output", "sequence_id", "priority", "timeout", "triton_x", "p"]), _json_scalars, max_size=3))
    header = json.dumps(doc).encode()
    hlen = draw(st.one_of(st.just(str(len(header)).encode()), st.integers(-5, len(header) + len(payload) + 5).map(
        lambda n: str(n).encode()), st.sampled_from([b"", b"x", b" 7", b"+3", b"18446744073709551617"])))
    model = draw(st.sampled_from(["identity_all", "nope"]))
    return _post_infer(model, header + payload, hlen)


def test_fuzz_binary_tensor_body(server):
    run_target(f"http-binary-{server.transport}", binary_bodies(), send(server), SHORT)
    assert_still_serving(server)


def _deep(depth: int, open_: str, close: str) -> bytes:
    return (open_ * depth + close * depth).encode()


@st.composite
def json_bodies(draw) -> bytes:
    """A JSON /infer body: near a real request (data as nested arrays, parameters), any JSON
    value, deeply nested arrays or objects, or JSON text cut and mangled."""
    kind = draw(st.sampled_from(["request", "request", "any", "deep", "text"]))
    if kind == "deep":
        depth = draw(st.sampled_from([100, 1000, 3000]))
        nest = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        inner = _deep(depth, *nest) if nest[0] == "[" else (nest[0] * depth + "1" + nest[1] * depth).encode()
        body = draw(st.sampled_from([
            inner,
            b'{"inputs":[{"name":"IN_FP32","datatype":"FP32","shape":[1],"data":' + inner + b"}]}",
            b'{"inputs":[{"name":"IN_FP32","datatype":"FP32","shape":[1],"data":[1],"parameters":' + inner + b"}]}",
            b'{"parameters":' + inner + b',"inputs":[]}']))
    elif kind == "any":
        body = json.dumps(draw(_json_values)).encode()
    else:
        doc = {"inputs": [{"name": draw(_names), "datatype": draw(_datatypes), "shape": draw(_shapes),
                           "data": draw(st.one_of(_json_values, st.lists(_json_scalars, max_size=8)))}
                          for _ in range(draw(st.integers(0, 3)))]}
        if draw(st.booleans()):
            doc["id"] = draw(_json_values)
        if draw(st.booleans()):
            doc["parameters"] = draw(_json_values)
        if draw(st.booleans()):
            doc["outputs"] = draw(_json_values)
        body = json.dumps(doc).encode()
        if kind == "text":
            body = body[:draw(st.integers(0, len(body)))] + draw(st.sampled_from([b"", b"NaN", b"\xff", b"}", b"\x00"]))
    model = draw(st.sampled_from(["identity_all", "nope"]))
    return _post_infer(model, body, None)


def test_fuzz_json_infer_body(server):
    run_target(f"http-json-{server.transport}", json_bodies(), send(server), SHORT)
    assert_still_serving(server)


# ------------------------------------------------------------------ regressions --
# Inputs the fuzz runs found mis-handled, kept as plain tests (each failed before its fix).
DEEP = b"[" * 3000 + b"]" * 3000
REGRESSIONS = [
    # JSON nested past Python's stack: was a 500 with "RecursionError: maximum recursion depth".
    ("deep-json-body", _post_infer("identity_all", DEEP, None)),
    ("deep-json-data", _post_infer("identity_all", b'{"inputs":[{"name":"IN_FP32","datatype":"FP32","shape":[1],'
                                   b'"data":' + DEEP + b"}]}", None)),
    # An empty tensor (a 0 dimension) beside a dimension numpy cannot index: was a 500 with
    # "ValueError: array is too big" / "Maximum allowed dimension exceeded" (long fuzz run).
    ("empty-huge-shape", _post_infer("identity_all", b'{"inputs":[{"name":"IN_UINT16","datatype":"UINT16",'
                                     b'"shape":[0,4611686018427387904],"data":null}]}', None)),
    ("empty-huge-shape-bool", _post_infer("identity_all", b'{"inputs":[{"name":"IN_BOOL","datatype":"BOOL",'
                                          b'"shape":[0,9223372037854775807],"data":null}]}', None)),
    # aiohttp: a client that half-closes before any byte, or mid-body, was never closed.
    ("half-close-first", b""),
    ("half-close-mid-body", b"POST /v2/models/identity_all/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 66\r\n"
                            b"Inference-Header-Content-Length: 66\r\n\r\n{\"inputs\": []"),
]


@pytest.mark.parametrize("name,raw", REGRESSIONS, ids=[r[0] for r in REGRESSIONS])
def test_fuzz_regression(server, name, raw):
    reply, closed = exchange(server.http_port, raw, TIMEOUT)
    statuses = check_replies(reply, closed)
    assert closed, "the connection stayed open"
    if name.startswith("deep-json"):
        assert statuses == [500] and b"failed to parse the request JSON buffer" in reply, reply[:300]
    if name.startswith("empty-huge-shape"):
        assert statuses == [400] and b"a shape no tensor can take" in reply, reply[:300]
