"""200 slowloris connections against a real `naiad serve`, on both HTTP transports: half
dribble a request head, half a request body, one byte every 0.25 s. Clients beside them
(tritonclient) keep their latency, and the server closes every slow connection once its
head or body timeout (small here) runs out."""

from __future__ import annotations

import selectors
import socket
import statistics
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

from support.load import write_identity
from support.naiad_process import http_get

SLOW = 200
TIMEOUT = 1.5  # header_timeout_secs and body_timeout_secs
HEAD = b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"v" * 4096
BODY_HEAD = b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n"


def _p50_ms(client: httpclient.InferenceServerClient, seconds: float) -> float:
    """Median latency of back-to-back inferences for `seconds`."""
    x = httpclient.InferInput("INPUT0", [1], "INT32")
    x.set_data_from_numpy(np.array([5], dtype=np.int32))
    took = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sent = time.monotonic()
        assert client.infer("echo", [x]).as_numpy("OUTPUT0").tolist() == [5]
        took.append(time.monotonic() - sent)
    return statistics.median(took) * 1000


class Slowloris:
    """SLOW connections that each send one more byte every 0.25 s, on one thread; records
    when the server ended each (closed it, or answered and closed)."""

    def __init__(self, port: int) -> None:
        self.socks = []
        for i in range(SLOW):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setblocking(False)
            # Half send their head slowly; half a whole head, then their body slowly.
            sock.sendall(b"P" if i % 2 == 0 else BODY_HEAD)
            self.socks.append(sock)
        self.opened = time.monotonic()
        self.ended: dict[int, float] = {}
        self.replies: dict[int, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dribble, daemon=True)
        self._thread.start()

    def _dribble(self) -> None:
        sel = selectors.DefaultSelector()
        for i, sock in enumerate(self.socks):
            sel.register(sock, selectors.EVENT_READ, i)
        sent = 1
        next_byte = time.monotonic() + 0.25
        while not self._stop.is_set() and len(self.ended) < SLOW:
            for key, _ in sel.select(timeout=max(0.0, next_byte - time.monotonic())):
                i = key.data
                try:
                    data = self.socks[i].recv(4096)
                except OSError:
                    data = b""
                if data:
                    self.replies[i] = self.replies.get(i, b"") + data
                    continue
                self.ended[i] = time.monotonic()
                sel.unregister(self.socks[i])
            if time.monotonic() >= next_byte:
                for i, sock in enumerate(self.socks):
                    if i not in self.ended:
                        try:
                            sock.send(HEAD[sent:sent + 1] if i % 2 == 0 else b"x")
                        except OSError:
                            pass
                sent += 1
                next_byte += 0.25
        sel.close()

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)
        self._stop.set()
        self._thread.join(2)
        for sock in self.socks:
            sock.close()


@pytest.mark.parametrize("transport", ["native", "aiohttp"])
def test_slowloris_neither_slows_others_nor_holds_its_connections(naiad, tmp_path, transport):
    repo = tmp_path / "models"
    write_identity(repo)
    config = (f'[services.http]\ntransport = "{transport}"\nheader_timeout_secs = {TIMEOUT}\n'
              f"body_timeout_secs = {TIMEOUT}\nbody_min_bytes_per_sec = 100\n")
    proc = naiad(f"--model-repository={repo}", config=config)
    client = httpclient.InferenceServerClient(proc.http_address)
    try:
        _p50_ms(client, 0.2)  # warm
        alone = _p50_ms(client, 1.0)
        loris = Slowloris(proc.http_port)
        beside = _p50_ms(client, 1.0)  # a few of their bytes arrive meanwhile
        measured_by = time.monotonic() - loris.opened
        loris.wait(TIMEOUT + 5)
    finally:
        client.close()
    held = sorted(t - loris.opened for t in loris.ended.values())
    answered_408 = sum(1 for r in loris.replies.values() if r.startswith(b"HTTP/1.1 408"))
    print(f"\nslowloris x{SLOW} ({transport}): p50 {alone:.2f} ms alone, {beside:.2f} ms beside them "
          f"(measured within {measured_by:.2f}s of their start); {len(held)} closed by the server "
          f"after {held[0] if held else 0:.2f}-{held[-1] if held else 0:.2f}s ({answered_408} answered 408), "
          f"timeouts {TIMEOUT}s")
    assert measured_by < TIMEOUT  # the latency was measured while all of them were held open
    assert beside < 3 * alone + 2.0
    assert len(held) == SLOW  # every slow connection was ended by the server...
    assert held[0] > TIMEOUT - 0.3  # ...not before its timeout (a byte does not reset it)...
    assert held[-1] < TIMEOUT + 2.5  # ...and soon after it
    assert http_get(proc.url + "/v2/health/ready")[0] == 200
