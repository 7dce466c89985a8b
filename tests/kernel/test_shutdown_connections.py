"""Shutdown as tritonserver 24.04: after SIGTERM the HTTP listener closes (new connections
are refused) while connections already open are served as before until the work in flight
is done, with Triton's log lines; gRPC listens on, as Triton's endpoint does, until the end."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
import textwrap

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from support.models import IDENTITY_MODEL, identity_config, write_model

SLOW_MODEL = '''
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(2.0)
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())]) for r in requests]
'''

INFER_BODY = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [7]}]})


def _infer(conn: http.client.HTTPConnection, model: str) -> tuple[int, dict]:
    conn.request("POST", f"/v2/models/{model}/infer", INFER_BODY, {"Content-Type": "application/json"})
    reply = conn.getresponse()
    return reply.status, json.loads(reply.read())


def _get(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path)
    reply = conn.getresponse()
    reply.read()
    return reply.status


@pytest.mark.parametrize("transport", ["native", "aiohttp"])
def test_open_connections_are_served_during_the_drain_and_new_ones_refused(naiad, tmp_path, transport):
    repo = tmp_path / "models"
    write_model(repo, "slow", identity_config("slow", dims="[ 1 ]"), SLOW_MODEL)
    write_model(repo, "fast", identity_config("fast", dims="[ 1 ]"), IDENTITY_MODEL)
    proc = naiad(f"--model-repository={repo}", "--exit-timeout-secs=10",
                 config=f'[services.http]\ntransport = "{transport}"\n')
    host, port = "127.0.0.1", proc.http_port
    busy = http.client.HTTPConnection(host, port, timeout=30)
    idle = http.client.HTTPConnection(host, port, timeout=30)
    assert _get(idle, "/v2/health/ready") == 200  # open (keep-alive) before the signal
    grpc = grpcclient.InferenceServerClient(proc.grpc_address)
    slow: list = []
    worker = threading.Thread(target=lambda: slow.append(_infer(busy, "slow")))
    worker.start()
    time.sleep(0.5)  # the slow request is in the model by now

    proc.signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(OSError):  # refused (or reset before a reply)
        fresh = http.client.HTTPConnection(host, port, timeout=5)
        _get(fresh, "/v2/health/live")
    # The connection that was open goes on being served: not ready, but inference works.
    assert _get(idle, "/v2/health/ready") == 400
    status, reply = _infer(idle, "fast")
    assert status == 200 and reply["outputs"][0]["data"] == [7.0]
    x = grpcclient.InferInput("INPUT0", [1], "FP32")
    x.set_data_from_numpy(np.array([3], dtype=np.float32))
    assert grpc.infer("fast", [x]).as_numpy("OUTPUT0").tolist() == [3.0]
    grpc.close()

    worker.join(15)
    assert slow and slow[0][0] == 200 and slow[0][1]["outputs"][0]["data"] == [7.0]
    assert proc.wait(30) == 0, proc.logs()
    logs = proc.logs()
    assert "Signal (15) received." in logs
    assert "Timeout 10: Found 2 HTTP service connections" in logs
    assert "Waiting for in-flight requests to complete." in logs
    assert "live models and 0 in-flight non-inference requests" in logs
    assert logs.index("HTTP service connections") < logs.index("Waiting for in-flight requests to complete.")


def test_without_open_connections_the_drain_is_not_held_up(naiad, tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "fast", identity_config("fast", dims="[ 1 ]"), IDENTITY_MODEL)
    proc = naiad(f"--model-repository={repo}", "--exit-timeout-secs=30")
    sent = time.monotonic()
    assert proc.stop(30) == 0
    assert time.monotonic() - sent < 5
    logs = proc.logs()
    assert "HTTP service connections" not in logs
    assert "Timeout 30: Found 1 live models and 0 in-flight non-inference requests" in logs
