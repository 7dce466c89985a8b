"""Shared pieces of the fuzz tests: hypothesis settings whose example count an environment
variable raises (`make fuzz`), and the checks every reply of a fuzzed request must pass.

The normal suite runs each fuzz target for a few hundred inputs (all of them together stay
under a minute); `NAIAD_FUZZ_INPUTS=100000` (`make fuzz`) turns every target into a long run.
"""

from __future__ import annotations

import builtins
import os
import random
import re
import socket
import time
from pathlib import Path
from typing import Callable

import h11
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from .naiad_process import NaiadProcess

FUZZ_ENV = "NAIAD_FUZZ_INPUTS"

# Builtin exception names: one of them in a reply body means a Python exception's text
# leaked out where Triton's wording belongs ("ValueError: ...", "RecursionError").
_PY_EXCEPTIONS = sorted(n for n, v in vars(builtins).items()
                        if isinstance(v, type) and issubclass(v, BaseException) and n != "Exception")
_LEAK = re.compile(r"\b(Traceback \(most recent call last\)|(?:%s)\b:?)" % "|".join(_PY_EXCEPTIONS))


# The errors Triton itself answers with 500 (TritonJson's INTERNAL status on a malformed or
# mistyped JSON member, `server:src/http_server.cc`; a model folder it cannot poll); any
# other 500 is a bug.
TRITON_INTERNAL = re.compile(
    r"failed to parse the \w+ JSON buffer|attempt to access |Unable to parse '|"
    r"attempt to get members for non-object|unexpected error on creating Triton parameter|"
    r"failed to poll from model repository")  # model_repository_manager's INTERNAL

# 5xx answers that are HTTP's own words for a request the server will not take (RFC 9110
# §15.6.2, §15.6.6), not failures.
PROTOCOL_5XX = frozenset({501, 505})


# Each input hypothesis builds is sent as is and as VARIANTS cheap byte-level mutations of it:
# hypothesis gives the structure (a request near the protocol), the mutator the volume that
# a long run needs (building one input with hypothesis costs ~10 ms on a busy 2-core box).
VARIANTS = int(os.environ.get("NAIAD_FUZZ_VARIANTS", 15))  # `make fuzz`: more, to reach 10^5 in minutes
_NASTY = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b":", b"\xff", b"\x80", b"%", b"%00", b"/..", b"\\",
          b"0", b"-1", b"18446744073709551616", b"9" * 40, b"\r\n\r\n", b"\"", b"{", b"[", b"}", b"]", b",",
          b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x7f"]


def inputs(short: int) -> int:
    """How many inputs a target runs: `short` in the normal suite, the env var's in `make fuzz`."""
    return int(os.environ.get(FUZZ_ENV, short))


def fuzz_settings(short: int) -> settings:
    """Settings for one fuzz target of `short` inputs (each example is 1 + VARIANTS inputs):
    no deadline (a reply may take a server round trip), no example database (targets run
    against live servers)."""
    return settings(
        max_examples=max(1, -(-inputs(short) // (1 + VARIANTS))),
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                               HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=True,
        # The normal suite replays the same inputs on every run (CI stays repeatable);
        # `make fuzz` (FUZZ_ENV set) explores new ones each time.
        derandomize=FUZZ_ENV not in os.environ,
    )


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One cheap mutation of `data`: a few inserted, deleted, replaced or duplicated spans,
    or a cut; nasty bytes (CR, LF, NUL, invalid UTF-8, huge numbers) are favoured."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randint(0, len(buf))
        op = rng.randrange(6)
        piece = rng.choice(_NASTY) if rng.random() < 0.6 else rng.randbytes(rng.randint(1, 8))
        if op == 0:
            buf[pos:pos] = piece
        elif op == 1:
            del buf[pos:pos + rng.randint(1, 16)]
        elif op == 2:
            buf[pos:pos + len(piece)] = piece
        elif op == 3:
            buf[pos:pos] = buf[pos:pos + rng.randint(1, 64)]
        elif op == 4 and buf:
            buf[pos - 1 if pos else 0] ^= 1 << rng.randrange(8)
        else:
            del buf[pos:]
    return bytes(buf)


def variants(data: bytes, seed: int) -> list[bytes]:
    """`data` and its VARIANTS mutations, from `seed` (so hypothesis can replay a failure)."""
    rng = random.Random(seed)
    return [data] + [mutate(data, rng) for _ in range(VARIANTS)]


def run_target(target: str, strategy: st.SearchStrategy[bytes], check: Callable[[bytes], None],
               short: int) -> int:
    """Run one fuzz target: every input `strategy` builds, and its mutations, goes through
    `check` (which sends it and asserts the property). Prints and returns how many inputs
    ran; `make fuzz` collects the line (and the file `NAIAD_FUZZ_REPORT` names gets a row)."""
    count = 0

    @fuzz_settings(short)
    @given(data=strategy, seed=st.integers(0, 2**32 - 1))
    def one(data: bytes, seed: int) -> None:
        nonlocal count
        for raw in variants(data, seed):
            count += 1
            try:
                check(raw)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n  input: {raw[:600]!r}") from None

    one()
    print(f"fuzz {target}: {count} inputs, 0 failures")
    path = os.environ.get("NAIAD_FUZZ_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(f"{target},{count},0\n")
    return count


def serve(tmp_path_factory, repo: Path, service: str, transport: str, native_module: str) -> NaiadProcess:
    """A started `naiad serve` of `repo` whose `service` (http, grpc) runs on `transport`
    (skipped when that is the native front end and `native_module` was not built)."""
    if transport == "native":
        pytest.importorskip(native_module, reason=f"the native {service} front end is not built here")
    proc = NaiadProcess(tmp_path_factory.mktemp(f"fuzz_{service}_{transport}"), ["--model-repository", str(repo)],
                        config=f'[services.{service}]\ntransport = "{transport}"\n')
    proc.transport = transport  # type: ignore[attr-defined]
    proc.start()
    return proc


def python_leak(text: str) -> str | None:
    """The Python exception name found in an error text, or None."""
    m = _LEAK.search(text)
    return m.group(1) if m else None


# ------------------------------------------------------------------ raw HTTP exchange --


def exchange(port: int, data: bytes, timeout: float, half_close: bool = True) -> tuple[bytes, bool]:
    """Send `data` on a fresh loopback connection (then half-close it, as a client that has
    said everything) and read until the server closes (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused and closed before reading everything: what it sent still counts
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got, False
            sock.settimeout(left)
            try:
                part = sock.recv(65536)
            except socket.timeout:
                return got, False
            except ConnectionResetError:
                return got, True
            if not part:
                return got, True
            got += part


def responses(data: bytes, head: bool = False) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """The HTTP/1.x responses in `data`, parsed by h11 as a client would: (status, headers,
    body) each. Anything h11 cannot read as a whole response raises AssertionError."""
    if not data:
        return []
    conn = h11.Connection(h11.CLIENT)
    out: list[tuple[int, dict[bytes, bytes], bytes]] = []
    conn.receive_data(data)
    closed = False
    while True:
        # h11 reads a response only as the answer to a request; this one only moves its state.
        conn.send(h11.Request(method="HEAD" if head else "GET", target="/", headers=[("Host", "t")]))
        conn.send(h11.EndOfMessage())
        status, headers, body = 0, {}, b""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise AssertionError(f"a malformed HTTP response ({exc}): {data[:400]!r}") from None
            if isinstance(event, h11.Response):
                status, headers = event.status_code, {k.lower(): v for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                out.append((status, headers, body))
                break
            elif event is h11.NEED_DATA:
                if not status and not conn.trailing_data[0]:
                    return out  # every byte was read as whole responses
                if closed:
                    raise AssertionError(f"a response cut short: {data[:400]!r}")
                conn.receive_data(b"")  # the server closed: a body delimited by the close ends here
                closed = True
            elif isinstance(event, h11.ConnectionClosed):
                return out
            # h11.InformationalResponse (100 Continue) and PAUSED need nothing
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
            return out
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return out


def check_replies(data: bytes, closed: bool, head: bool = False) -> list[int]:
    """The property every fuzzed HTTP request must hold: the server answered (or closed) in
    time, what it sent is well-formed HTTP, no status is 5xx (but 501/505 and the 500s Triton
    answers on malformed JSON) and no body carries a Python exception's text. Returns the statuses."""
    assert data or closed, "no reply and the connection still open: the server hangs on this input"
    replies = responses(data, head)
    assert replies or not data, f"bytes that are not an HTTP response: {data[:400]!r}"
    for status, _, body in replies:
        text = body.decode("utf-8", "replace")
        assert status < 500 or status in PROTOCOL_5XX or (status == 500 and TRITON_INTERNAL.search(text)), \
            f"{status}: {body[:400]!r}"
        leak = python_leak(text)
        assert leak is None, f"a Python exception's text ({leak}) in a {status} reply: {body[:400]!r}"
    return [s for s, _, _ in replies]
