"""Graceful shutdown of a real `naiad serve` process: in-flight work completes, readiness
flips first, the deadline cuts off what is left (non-zero exit), a second signal cuts
the drain short. Uses the example plug-in service's slow route as in-flight work."""

from __future__ import annotations

import json
import signal
import threading
import time

import tritonclient.grpc as grpcclient

from support.models import empty_repository
from support.naiad_process import REPO, free_port, http_get

EXAMPLES = str(REPO / "examples" / "services")


def _start(naiad, tmp_path, *flags):
    port = free_port()
    config = f'[services.status]\nmodule = "status_service:StatusService"\nport = {port}\n'
    proc = naiad(f"--model-repository={empty_repository(tmp_path)}", *flags, config=config,
                 env={"PYTHONPATH": EXAMPLES})
    return proc, f"http://127.0.0.1:{port}"


def _slow_request(url: str, ms: int, out: list) -> threading.Thread:
    def go():
        out.append(http_get(f"{url}/work?ms={ms}", timeout=30))

    t = threading.Thread(target=go)
    t.start()
    return t


def _wait_inflight_started():
    time.sleep(0.3)  # the request reaches the server well within this on loopback


def test_sigterm_lets_inflight_request_complete_and_exits_zero(naiad, tmp_path):
    proc, status_url = _start(naiad, tmp_path, "--exit-timeout-secs=10")
    results: list = []
    t = _slow_request(status_url, 1500, results)
    _wait_inflight_started()
    sent = time.monotonic()
    proc.signal(signal.SIGTERM)
    # Readiness flips to not-ready before the drain finishes (gRPC listens on, as Triton's
    # does); new work is refused.
    time.sleep(0.2)
    client = grpcclient.InferenceServerClient(proc.grpc_address)
    assert client.is_server_ready() is False
    client.close()
    assert http_get(status_url + "/work?ms=1")[0] == 503
    code = proc.wait(30)
    t.join(10)
    assert code == 0, proc.logs()
    assert results and results[0][0] == 200 and json.loads(results[0][1]) == {"done": True}
    assert time.monotonic() - sent < 10
    logs = proc.logs()
    assert "Signal (15) received." in logs
    assert "Waiting for in-flight requests to complete." in logs
    assert "Timeout 10: Found 0 live models and 1 in-flight non-inference requests" in logs


def test_deadline_cuts_off_requests_with_nonzero_exit_and_a_count(naiad, tmp_path):
    proc, status_url = _start(naiad, tmp_path, "--exit-timeout-secs=1")
    results: list = []
    threads = [_slow_request(status_url, 8000, results) for _ in range(2)]
    _wait_inflight_started()
    sent = time.monotonic()
    proc.signal(signal.SIGTERM)
    code = proc.wait(30)
    took = time.monotonic() - sent
    for t in threads:
        t.join(15)
    assert code == 1
    assert took < 6
    logs = proc.logs()
    assert "the 1s exit timeout cut off 2 in-flight request(s)" in logs
    assert "failed to stop server: Internal - Exit timeout expired. Exiting immediately." in logs


def test_second_signal_cuts_the_drain_short(naiad, tmp_path):
    proc, status_url = _start(naiad, tmp_path, "--exit-timeout-secs=30")
    results: list = []
    t = _slow_request(status_url, 20000, results)
    _wait_inflight_started()
    proc.signal(signal.SIGTERM)
    time.sleep(0.3)
    sent = time.monotonic()
    proc.signal(signal.SIGINT)
    code = proc.wait(30)
    took = time.monotonic() - sent
    t.join(25)
    assert code == 1
    assert took < 5
    logs = proc.logs()
    assert "received again: cutting the drain short" in logs
    assert "a second signal cut off 1 in-flight request(s)" in logs


def test_idle_server_stops_at_once_with_zero(naiad, tmp_path):
    proc = naiad(f"--model-repository={empty_repository(tmp_path)}")
    sent = time.monotonic()
    assert proc.stop(30) == 0
    assert time.monotonic() - sent < 5
