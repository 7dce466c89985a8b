"""Resources a client controls, against a real `naiad serve` over raw sockets, on both HTTP
transports: a half-closed client still gets its answer, and running out of file
descriptors neither spins the server nor costs it a service."""

from __future__ import annotations

import functools
import resource
import socket
import time
import zlib
from pathlib import Path

import pytest

# `server`: a `naiad serve` per transport (native, aiohttp), as the hardening tests start it.
from test_http_hardening import (  # noqa: F401
    READY, ask_ready, connect, memory_kib, read_reply, server, start_on, status_of)

GET_KEEPALIVE = b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n"
POST_INDEX = b"POST /v2/repository/index HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"


@pytest.mark.parametrize("request_bytes", [GET_KEEPALIVE, POST_INDEX, GET_KEEPALIVE * 2],
                         ids=["get", "post-with-body", "two-pipelined"])
def test_half_close_is_answered_then_closed(server, request_bytes):
    """A client that sends its request and shuts its writing side gets the reply (Triton
    answers), then the server closes."""
    with connect(server.http_port) as sock:
        sock.sendall(request_bytes)
        sock.shutdown(socket.SHUT_WR)
        reply, closed = read_reply(sock)
    assert status_of(reply) == 200, reply[:200]
    assert closed, "the connection stays open after the half-closed client's reply"


def test_half_close_before_a_whole_request_closes(server):
    with connect(server.http_port) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHo")
        sock.shutdown(socket.SHUT_WR)
        reply, closed = read_reply(sock)
    assert closed
    assert b"HTTP/1.1 200" not in reply
    assert ask_ready(server.http_port) == 200


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, clock ticks


def test_out_of_descriptors_backs_off_and_recovers(server):
    pid = server.proc.pid
    in_use = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 8, old[1]))
    held: list[socket.socket] = []
    try:
        for _ in range(40):  # more than the server may open: the rest wait in the backlog
            held.append(connect(server.http_port))
        time.sleep(0.5)
        before = cpu_seconds(pid)
        time.sleep(2.0)
        spent = cpu_seconds(pid) - before
        assert spent < 0.5, f"the server spent {spent:.2f} s of CPU in 2 s with accept() failing"
    finally:
        for sock in held:
            sock.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline and status != 200:
        try:
            status = ask_ready(server.http_port)
        except OSError:
            time.sleep(0.2)
    assert status == 200, "HTTP is not served again once descriptors are free"
    with socket.create_connection(("127.0.0.1", server.metrics_port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        reply, _ = read_reply(sock)
    assert status_of(reply) == 200, "the metrics service was given up"


LIMITS = """max_headers = 20
max_url_bytes = 1024
max_header_bytes = 4096
header_timeout_secs = 1.0
body_timeout_secs = 1.0
body_min_bytes_per_sec = 100
max_connections = 16
"""


@pytest.fixture(scope="module", params=["native", "aiohttp"])
def limited(request, tmp_path_factory):
    """A server with small limits and short timeouts."""
    proc = start_on(request.param, tmp_path_factory, LIMITS)
    yield proc
    proc.kill_if_running()


def refused(port: int, data: bytes, wait: float = 5.0) -> tuple[int, bool]:
    with connect(port) as sock:
        sock.sendall(data)
        reply, closed = read_reply(sock, wait)
    return (status_of(reply) if reply else 0), closed


@pytest.mark.parametrize("data,status", [
    (b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(21)) + b"\r\n", 431),
    (b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 5000 + b"\r\n\r\n", 431),
    (b"GET /v2/health/ready?" + b"q" * 2000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    (b"GET /" + b"q" * 100_000, 414),  # never ends its line
], ids=["header-count", "header-bytes", "url-length", "url-without-end"])
def test_head_limits(limited, data, status):
    assert refused(limited.http_port, data) == (status, True)
    assert ask_ready(limited.http_port) == 200


def test_slow_head_times_out(limited):
    """One byte every 0.3 s never finishes the head: 408 after the head's deadline, not
    reset by each byte."""
    with connect(limited.http_port) as sock:
        start = time.monotonic()
        sock.settimeout(0.3)
        reply = b""
        for byte in b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"v" * 100:
            try:
                sock.sendall(bytes([byte]))
                reply = sock.recv(4096)
                break
            except socket.timeout:
                continue
            except OSError:
                break
            if time.monotonic() - start > 8:
                break
    assert status_of(reply) == 408, reply[:200]
    assert time.monotonic() - start < 4


def test_slow_body_times_out(limited):
    with connect(limited.http_port) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /v2/repository/index HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        sock.settimeout(0.3)
        reply = b""
        while time.monotonic() - start < 8 and not reply:
            try:
                sock.sendall(b" ")
                reply = sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
    assert status_of(reply) == 408, reply[:200]
    assert time.monotonic() - start < 4


def test_connection_limit(limited):
    held = [connect(limited.http_port) for _ in range(16)]
    try:
        time.sleep(0.3)
        status, closed = refused(limited.http_port, READY)
        assert status == 503 and closed
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while ask_ready(limited.http_port) != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ask_ready(limited.http_port) == 200


@functools.cache
def gzip_bomb() -> bytes:
    """About 1 MiB of gzip that inflates to 1 GiB of zeros."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 24)
    return b"".join([c.compress(zeros) for _ in range(64)] + [c.flush()])


def test_gzip_bomb_refused_with_bounded_memory(server):
    """1 MiB of gzip that inflates to 1 GiB: 413 once the default inflate limit is passed,
    within seconds and without the server growing by the bomb's size."""
    bomb = gzip_bomb()
    body_head = (b"POST /v2/models/m/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 b"Content-Encoding: gzip\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(bomb))
    pid = server.proc.pid
    before = memory_kib(pid, "VmRSS")
    start = time.monotonic()
    with connect(server.http_port) as sock:
        sock.sendall(body_head + bomb)
        reply, _ = read_reply(sock, 30)
    elapsed = time.monotonic() - start
    assert status_of(reply) == 413, reply[:300]
    assert b"exceeds the limit of 67108864 bytes" in reply
    assert elapsed < 10, f"the bomb took {elapsed:.1f} s to refuse"
    grown = memory_kib(pid, "VmHWM") - before
    assert grown < 256 << 10, f"the server grew by {grown >> 10} MiB inflating the bomb"
