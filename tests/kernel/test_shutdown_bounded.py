"""Shutdown is bounded: `naiad serve` exits within `exit_timeout_secs` plus a fixed stop
time (STOP_GRACE_SECS, 2 s) whatever a model or a service does. A Python stub stuck in
`execute` is stopped (SIGTERM, then SIGKILL) when the timeout runs out, and the requests
it held are answered UNAVAILABLE / 503 "Server exiting: ..." over gRPC and HTTP.

Before this, with `--exit-timeout-secs 3` the process took 9.4 s to exit behind a 10 s
model and 65 s behind a stuck one, and the cut requests got no reply."""

from __future__ import annotations

import http.client
import json
import signal
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from support.models import empty_repository, identity_config, write_model

EXIT_TIMEOUT = 2
STOP_GRACE = 2.0  # kernel.STOP_GRACE_SECS: the bound this file holds naiad to

# Stuck for two minutes in execute; with `ignore_term`, it also ignores SIGTERM.
STUCK_MODEL = '''
import signal
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        if {ignore_term}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def execute(self, requests):
        time.sleep(120)
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())]) for r in requests]
'''

# Takes a minute to initialize (a load in flight at the signal).
SLOW_INIT_MODEL = '''
import time


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(60)

    def execute(self, requests):
        return []
'''

# A decoupled model that never answers (a stream in flight at the signal).
SILENT_DECOUPLED_MODEL = '''
import time


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(120)
        return None
'''

# A plug-in service whose stop() blocks the event loop: only the watchdog can end the process.
HANGING_SERVICE = '''
import time

from naiad.kernel.service import Service


class HangingService(Service):
    essential = False

    async def stop(self):
        time.sleep(60)
'''

INFER_BODY = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [7]}]})


def _stuck_repository(tmp_path, ignore_term: bool):
    repo = tmp_path / "models"
    config = identity_config("stuck", dims="[ 1 ]", extra="instance_group [ { count: 2 kind: KIND_CPU } ]\n")
    write_model(repo, "stuck", config, STUCK_MODEL.format(ignore_term=ignore_term))
    return repo


def _http_infer(port: int, out: list) -> threading.Thread:
    def go() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("POST", "/v2/models/stuck/infer", INFER_BODY, {"Content-Type": "application/json"})
            reply = conn.getresponse()
            out.append((reply.status, json.loads(reply.read())))
        except OSError as exc:
            out.append(exc)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def _input() -> grpcclient.InferInput:
    x = grpcclient.InferInput("INPUT0", [1], "FP32")
    x.set_data_from_numpy(np.array([7], dtype=np.float32))
    return x


def _grpc_call(address: str, call, out: list) -> threading.Thread:
    """`call(client)` on a thread; `out` gets "answered" or the error's (status, message)."""
    def go() -> None:
        client = grpcclient.InferenceServerClient(address)
        try:
            call(client)
            out.append("answered")
        except InferenceServerException as exc:
            out.append((exc.status(), exc.message()))
        finally:
            client.close()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def _stubs(proc) -> list[psutil.Process]:
    return psutil.Process(proc.proc.pid).children(recursive=True)


def _sigterm_and_time(proc) -> tuple[int, float]:
    sent = time.monotonic()
    proc.signal(signal.SIGTERM)
    code = proc.wait(EXIT_TIMEOUT + 30)  # fails the test (and kills it) well past the bound
    return code, time.monotonic() - sent


@pytest.mark.parametrize("ignore_term", [False, True], ids=["stuck", "stuck-ignoring-sigterm"])
def test_stuck_model_is_stopped_at_the_exit_timeout_and_its_requests_answered(naiad, tmp_path, ignore_term):
    proc = naiad(f"--model-repository={_stuck_repository(tmp_path, ignore_term)}",
                 f"--exit-timeout-secs={EXIT_TIMEOUT}")
    stubs = _stubs(proc)
    assert stubs
    http_out: list = []
    grpc_out: list = []
    threads = [_http_infer(proc.http_port, http_out), _grpc_call(proc.grpc_address, lambda c: c.infer("stuck", [_input()], client_timeout=60), grpc_out)]
    time.sleep(0.5)  # both requests are in the model's execute by now (two instances)

    code, took = _sigterm_and_time(proc)
    for t in threads:
        t.join(5)
    print(f"\nexit after SIGTERM: {took:.2f}s (exit timeout {EXIT_TIMEOUT}s, ignore SIGTERM: {ignore_term})")
    assert code == 1, proc.logs()
    assert took < EXIT_TIMEOUT + STOP_GRACE, proc.logs()
    # The cut requests are answered, not dropped: 503 over HTTP, UNAVAILABLE over gRPC.
    cut = f"Server exiting: the {EXIT_TIMEOUT}s exit timeout cut this request off"
    assert http_out == [(503, {"error": cut})]
    assert grpc_out == [("StatusCode.UNAVAILABLE", cut)]
    # No stub outlives the server.
    gone, alive = psutil.wait_procs(stubs, timeout=1.0)
    assert not alive, [p.pid for p in alive]
    logs = proc.logs()
    assert "was still executing at the exit timeout: stopping its stub" in logs
    assert "the 2s exit timeout cut off 2 in-flight request(s)" in logs


def test_a_load_and_a_stream_cut_by_the_exit_timeout_are_answered_unavailable(naiad, tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "slow_init", identity_config("slow_init", dims="[ 1 ]"), SLOW_INIT_MODEL)
    write_model(repo, "silent", identity_config("silent", dims="[ 1 ]", extra="model_transaction_policy { decoupled: true }\n"),
                SILENT_DECOUPLED_MODEL)
    proc = naiad(f"--model-repository={repo}", f"--exit-timeout-secs={EXIT_TIMEOUT}",
                 "--model-control-mode=explicit", "--load-model=silent")
    loaded: list = []
    loader = _grpc_call(proc.grpc_address, lambda c: c.load_model("slow_init"), loaded)
    streamed: list = []
    stream = grpcclient.InferenceServerClient(proc.grpc_address)
    stream.start_stream(callback=lambda result, error: streamed.append(str(error) if error else "answered"))
    stream.async_stream_infer("silent", [_input()])
    time.sleep(0.7)  # the load is in initialize, the stream's request in execute

    code, took = _sigterm_and_time(proc)
    loader.join(5)
    stream.stop_stream()
    stream.close()
    print(f"\nexit after SIGTERM with a load and a stream in flight: {took:.2f}s")
    cut = f"Server exiting: the {EXIT_TIMEOUT}s exit timeout cut this request off"
    assert code == 1
    assert took < EXIT_TIMEOUT + STOP_GRACE
    assert loaded == [("StatusCode.UNAVAILABLE", cut)]
    assert streamed == [cut]
    assert "was still initializing at the exit timeout: stopping its stub" in proc.logs()


def test_a_service_that_blocks_at_stop_cannot_hold_the_exit(naiad, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "hanging_service.py").write_text(textwrap.dedent(HANGING_SERVICE))
    proc = naiad(f"--model-repository={empty_repository(tmp_path)}", f"--exit-timeout-secs={EXIT_TIMEOUT}",
                 config='[services.hanging]\nmodule = "hanging_service:HangingService"\n',
                 env={"PYTHONPATH": str(plugins)})
    code, took = _sigterm_and_time(proc)
    print(f"\nexit after SIGTERM with a service blocking its stop: {took:.2f}s")
    assert code == 1
    assert took < EXIT_TIMEOUT + STOP_GRACE
    assert "after the exit timeout; exiting now" in proc.logs()
