"""Hostile HTTP/1.1 framing against a real `naiad serve`, over raw sockets, on both HTTP
transports (the native front end and aiohttp).

Each attack is a byte string a client could send. The test asserts only what is on the
wire — the status line, that nothing after it was read as a second request, that the
connection is closed — and that the server goes on answering well-formed requests on other
connections, so it holds whatever parser frames the requests (RFC 9112 §6.3: a request
whose framing is ambiguous is refused and its connection closed; one with both
Content-Length and chunked is framed by the chunks and its connection closed after it).
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from support.naiad_process import NaiadProcess

TIMEOUT = 5.0
LIMIT = 1 << 30  # the default max_body_bytes
READY = b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
# A request hidden in a body: if it runs, a second status line comes back.
HIDDEN = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"


def post(headers: bytes, body: bytes = b"") -> bytes:
    return b"POST /v2/repository/index HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n" + body


# (id, request bytes, the status it gets)
ATTACKS = [
    ("method-not-utf8", b"G\xffT /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("method-not-token", b"GE(T /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("target-control-byte", b"GET /v2/health/\x01ready HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("duplicate-cl-same", post(b"Content-Length: 2\r\nContent-Length: 2\r\n", b"{}"), 400),
    ("duplicate-cl-differing", post(b"Content-Length: 2\r\nContent-Length: 44\r\n", b"{}" + HIDDEN), 400),
    ("cl-signed", post(b"Content-Length: +2\r\n", b"{}"), 400),
    ("cl-not-digits", post(b"Content-Length: 0x2\r\n", b"{}"), 400),
    ("te-xchunkedx", post(b"Transfer-Encoding: xchunkedx\r\n", b"0\r\n\r\n" + HIDDEN), 400),
    ("te-chunked-not-last", post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n" + HIDDEN), 400),
    ("chunk-size-not-hex", post(b"Transfer-Encoding: chunked\r\n", b"zz\r\n" + HIDDEN), 400),
    ("chunk-data-overruns", post(b"Transfer-Encoding: chunked\r\n", b"2\r\n{}XX\r\n0\r\n\r\n"), 400),
    ("obs-fold", post(b"Content-Length: 2\r\nX-A: b\r\n c\r\n", b"{}"), 400),
    ("space-before-colon", post(b"Content-Length : 2\r\n", b"{}"), 400),
    ("cl-over-limit", post(b"Content-Length: %d\r\n" % (LIMIT + 1)), 413),
    ("chunk-over-limit", post(b"Transfer-Encoding: chunked\r\n", b"%x\r\n" % (LIMIT + 1)), 413),
    ("chunk-size-overflow",
     post(b"Transfer-Encoding: chunked\r\n", b"14\r\n" + b"x" * 20 + b"\r\nffffffffffffffec\r\n" + b"y" * 64), 413),
    ("chunk-size-past-64-bits", post(b"Transfer-Encoding: chunked\r\n", b"10000000000000000\r\n" + b"y" * 64), 413),
    ("cl-past-64-bits", post(b"Content-Length: 99999999999999999999999\r\n", b"{}"), 413),
    ("chunk-size-bare-lf", post(b"Transfer-Encoding: chunked\r\n", b"2\n{}\r\n0\r\n\r\n" + HIDDEN), 400),
    ("chunk-extension-endless", post(b"Transfer-Encoding: chunked\r\n", b"2;a=" + b"b" * 70_000), 400),
    ("trailers-endless", post(b"Transfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\nX-T: " + b"b" * 70_000), 431),
    ("obs-fold-tab", post(b"X-A: b\r\n\tc\r\nContent-Length: 2\r\n", b"{}"), 400),
    ("header-name-empty", post(b": x\r\nContent-Length: 2\r\n", b"{}"), 400),
    ("header-value-bare-cr", post(b"X-A: a\rb\r\nContent-Length: 2\r\n", b"{}"), 400),
    ("request-line-two-spaces", b"GET  /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("request-line-bare-lf", b"GET /v2/health/ready HTTP/1.1\nHost: t\r\n\r\n", 400),
    ("request-line-without-version", b"GET /v2/health/ready\r\n\r\n", 400),
    ("http-0.9", b"GET /v2/health/ready HTTP/0.9\r\nHost: t\r\n\r\n", 505),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("method-unknown", b"FOO /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n", 400),
]
# aiohttp's parser does not show a chunk's declared size: it streams the chunk's bytes and
# the limit applies as they arrive (413 once it is passed). Until then the request waits,
# costing nothing, and the server serves on.
WAITS_ON_AIOHTTP = {"chunk-over-limit", "chunk-size-overflow", "chunk-extension-endless"}
# aiohttp's parser refuses these with a plain 400.
AIOHTTP_STATUS = {"chunk-size-past-64-bits": 400, "cl-past-64-bits": 400, "http2-preface": 400}
# aiohttp's parser serves these (as HTTP/0.9, or skipping the extra space); llhttp does not.
SERVED_BY_AIOHTTP = {"request-line-two-spaces", "request-line-without-version", "http-0.9", "method-unknown"}


def read_reply(sock: socket.socket, timeout: float = TIMEOUT) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or goes quiet for `timeout` (False)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            part = sock.recv(65536)
        except socket.timeout:
            return data, False
        except ConnectionResetError:
            return data, True
        if not part:
            return data, True
        data += part
    return data, False


def status_lines(reply: bytes) -> int:
    """How many replies came back (a second one means a body was read as a request)."""
    return len(re.findall(rb"HTTP/1\.[01] \d{3} ", reply))


def status_of(reply: bytes) -> int:
    # aiohttp answers a request line it could not read as HTTP/1.0.
    assert reply[:9] in (b"HTTP/1.1 ", b"HTTP/1.0 "), reply[:200]
    return int(reply[9:12])


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def ask_ready(port: int) -> int:
    """A well-formed request on a connection of its own: its status."""
    with connect(port) as sock:
        sock.sendall(READY)
        reply, _ = read_reply(sock)
    return status_of(reply)


def memory_kib(pid: int, field: str) -> int:
    """VmRSS or VmSize of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


def start_on(transport: str, tmp_path_factory, settings: str = "") -> NaiadProcess:
    """A started `naiad serve` with no models on one HTTP transport, with more
    `[services.http]` settings lines."""
    if transport == "native":
        pytest.importorskip("naiad.ext._native_http", reason="the native HTTP front end is not built here")
    repo = tmp_path_factory.mktemp("empty_models")
    proc = NaiadProcess(tmp_path_factory.mktemp(f"http_{transport}"), ["--model-repository", str(repo)],
                        config=f'[services.http]\ntransport = "{transport}"\n{settings}')
    proc.transport = transport  # type: ignore[attr-defined]
    proc.start()
    return proc


@pytest.fixture(scope="module", params=["native", "aiohttp"])
def server(request, tmp_path_factory):
    proc = start_on(request.param, tmp_path_factory)
    yield proc
    proc.kill_if_running()


@pytest.mark.parametrize("name,attack,expected", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_refused_and_closed(server, name, attack, expected):
    port = server.http_port
    if server.transport == "aiohttp":
        if name in SERVED_BY_AIOHTTP:
            pytest.skip("aiohttp's parser serves this request line")
        expected = AIOHTTP_STATUS.get(name, expected)
    waits = server.transport == "aiohttp" and name in WAITS_ON_AIOHTTP
    with connect(port) as bystander, connect(port) as sock:
        sock.sendall(attack)
        reply, closed = read_reply(sock, timeout=1.0 if waits else TIMEOUT)
        # A connection open during the attack is served on.
        bystander.sendall(READY)
        ok, _ = read_reply(bystander)
    if waits:
        assert (reply, closed) == (b"", False)
        assert status_of(ok) == 200 and ask_ready(port) == 200
        return
    assert status_of(reply) == expected, reply[:300]
    assert status_lines(reply) == 1, f"a second request was read from the body: {reply!r}"
    assert closed, "the connection stayed open after a refused request"
    assert status_of(ok) == 200
    assert ask_ready(port) == 200


@pytest.mark.parametrize("headers", [b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                                     b"Transfer-Encoding: chunked\r\nContent-Length: 47\r\n"],
                         ids=["cl-then-te", "te-then-cl"])
def test_content_length_with_chunked(server, headers):
    """The native front end frames the body by its chunks, as Triton does, answers, and closes:
    the request hidden after the chunks never runs. aiohttp's parser refuses such a request."""
    with connect(server.http_port) as sock:
        sock.sendall(post(headers, b"0\r\n\r\n" + HIDDEN))
        reply, closed = read_reply(sock)
    assert status_of(reply) == (200 if server.transport == "native" else 400), reply[:300]
    assert status_lines(reply) == 1, f"a second request was read from the body: {reply!r}"
    assert closed
    assert ask_ready(server.http_port) == 200


def test_unknown_transfer_coding_not_implemented(server):
    """A coding before a final chunked that naiad does not implement: RFC 9112 §6.1's 501
    natively (aiohttp's parser answers 400); closed either way."""
    with connect(server.http_port) as sock:
        sock.sendall(post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n" + HIDDEN))
        reply, closed = read_reply(sock)
    assert status_of(reply) in ((501,) if server.transport == "native" else (400, 501))
    assert status_lines(reply) == 1 and closed
    assert ask_ready(server.http_port) == 200


def test_bad_request_does_not_cost_others_in_its_batch(server):
    """Bad and good requests arriving together: every good one is answered, the bad ones
    are refused and closed (a bad method byte once dropped the rest of the batch)."""
    port = server.http_port
    good = [connect(port) for _ in range(8)]
    bad = [connect(port) for _ in range(4)]
    try:
        for i, sock in enumerate(good):
            sock.sendall(READY)
            if i % 2 == 0:
                bad[i // 2].sendall(b"G\xffT /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n")
        for sock in good:
            reply, _ = read_reply(sock)
            assert status_of(reply) == 200
        for sock in bad:
            reply, closed = read_reply(sock)
            assert status_of(reply) == 400 and closed
    finally:
        for sock in good + bad:
            sock.close()
    assert ask_ready(port) == 200


def test_declared_length_is_not_reserved(server):
    """20 connections each declaring a 1 GiB body (within the limit) and sending 10 bytes
    of it: the server's memory does not grow by what they declared."""
    port = server.http_port
    pid = server.proc.pid
    rss, size = memory_kib(pid, "VmRSS"), memory_kib(pid, "VmSize")
    socks = [connect(port) for _ in range(20)]
    try:
        for sock in socks:
            sock.sendall(post(b"Content-Length: %d\r\n" % LIMIT, b"0123456789"))
        time.sleep(1.0)
        assert ask_ready(port) == 200  # the server serves on meanwhile
        rss_mib = (memory_kib(pid, "VmRSS") - rss) / 1024
        size_mib = (memory_kib(pid, "VmSize") - size) / 1024
    finally:
        for sock in socks:
            sock.close()
    assert rss_mib < 64, f"RSS grew {rss_mib:.0f} MiB for 20 declared, unsent bodies"
    # Reserving them would map 20 GiB (a 6 GiB address-space limit once killed the server).
    assert size_mib < 1024, f"virtual memory grew {size_mib:.0f} MiB for 20 declared, unsent bodies"
    assert ask_ready(port) == 200


# A chunked body with a chunk extension and a trailer field: the index route parses it as JSON,
# so any framing byte left in the body (or a chunk lost) makes it a 400.
CHUNKED_INDEX = post(b"Transfer-Encoding: chunked\r\n",
                     b"5;ext=1\r\n{\"rea\r\n" + b"b\r\ndy\": false}\r\n0\r\nX-Trailer: t\r\n\r\n")


def replies(data: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each reply in `data`, in order (each carries a Content-Length)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        out.append((status_of(head), rest[:length]))
        data = rest[length:]
    return out


def test_request_sent_a_byte_at_a_time(server):
    """Every byte in a segment of its own (head, chunk sizes, extension, trailer split
    anywhere): framed as if sent at once."""
    with connect(server.http_port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(CHUNKED_INDEX)):
            sock.sendall(CHUNKED_INDEX[i:i + 1])
            time.sleep(0.001)
        sock.sendall(READY)
        reply, closed = read_reply(sock)
    assert [(s, b) for s, b in replies(reply)] == [(200, b"[]"), (200, b"")] and closed


def test_pipelined_requests_answered_in_order(server):
    """Three requests in one segment (a GET, a chunked POST, a GET that closes): three
    answers in order, then the close."""
    with connect(server.http_port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n" + CHUNKED_INDEX + READY)
        reply, closed = read_reply(sock)
    assert replies(reply) == [(200, b""), (200, b"[]"), (200, b"")] and closed


def test_expect_continue_with_a_chunked_body(server):
    """`Expect: 100-continue`: the interim 100 comes before the body is sent, then the answer."""
    if server.transport == "aiohttp":
        pytest.skip("the aiohttp transport sends no interim 100 for a chunked body")
    head, _, body = post(b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n",
                         b"e\r\n{\"ready\":true}\r\n0\r\n\r\n").partition(b"\r\n\r\n")
    with connect(server.http_port) as sock:
        sock.sendall(head + b"\r\n\r\n")
        sock.settimeout(TIMEOUT)
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim[:100]
        sock.sendall(body)
        reply, closed = read_reply(sock)
    reply = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):] + reply
    assert replies(reply) == [(200, b"[]")] and closed
