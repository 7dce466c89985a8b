"""`nv_inference_request_failure{reason=...}` as Triton (24.07+) classifies failures, scraped
from a real server: REJECTED for a request that timed out in the queue, CANCELED for one
cancelled there, BACKEND for a model that raises, and nothing at all for a request refused
by a full queue (Triton fails it at enqueue, before any statistic sees it)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.metrics import scrape, value
from support.models import DELAYED_IDENTITY_MODEL, identity_config, write_model

RAISING_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        raise RuntimeError("this model always fails")
'''


def _queued_config(name: str, policy: str) -> str:
    # One request per execution (max_batch_size 1), each taking 0.6 s: a second request waits.
    return identity_config(name, dims="[ 1 ]", max_batch_size=1, extra=f"""
        dynamic_batching {{ default_queue_policy {{ {policy} }} }}
        parameters {{ key: "delay" value {{ string_value: "0.6" }} }}
        """)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from support.naiad_process import NaiadProcess

    tmp = tmp_path_factory.mktemp("reasons")
    repo = tmp / "repo"
    write_model(repo, "timed", _queued_config("timed", "timeout_action: REJECT default_timeout_microseconds: 100000"),
                DELAYED_IDENTITY_MODEL)
    write_model(repo, "bounded", _queued_config("bounded", "max_queue_size: 1"), DELAYED_IDENTITY_MODEL)
    write_model(repo, "raiser", identity_config("raiser", dims="[ 1 ]"), RAISING_MODEL)
    proc = NaiadProcess(tmp / "naiad", [f"--model-repository={repo}"])
    proc.start()
    yield proc
    proc.kill_if_running()


def _inputs(module):
    inp = module.InferInput("INPUT0", [1, 1], "FP32")
    inp.set_data_from_numpy(np.ones((1, 1), np.float32))
    return [inp]


def _infer_in_thread(server, model: str, results: list) -> threading.Thread:
    def run() -> None:
        client = httpclient.InferenceServerClient(server.http_address, network_timeout=30)
        try:
            client.infer(model, _inputs(httpclient))
            results.append("ok")
        except InferenceServerException as exc:
            results.append(exc.message())

    t = threading.Thread(target=run)
    t.start()
    return t


def _reasons(samples: dict, model: str) -> dict[str, float]:
    return {r: value(samples, "nv_inference_request_failure_total", model=model, version="1", reason=r)
            for r in ("REJECTED", "CANCELED", "BACKEND", "OTHER")}


def test_timed_out_in_queue_is_rejected(server) -> None:
    results: list = []
    first = _infer_in_thread(server, "timed", results)
    time.sleep(0.2)  # the first is executing
    second = _infer_in_thread(server, "timed", results)
    first.join(30)
    second.join(30)
    assert sorted(results) == ["Request timeout expired", "ok"]
    samples = scrape(server)
    assert _reasons(samples, "timed") == {"REJECTED": 1, "CANCELED": 0, "BACKEND": 0, "OTHER": 0}
    assert value(samples, "nv_inference_request_success_total", model="timed", version="1") == 1


def test_full_queue_counts_nowhere_and_cancelled_in_queue_is_canceled(server) -> None:
    results: list = []
    executing = _infer_in_thread(server, "bounded", results)
    time.sleep(0.2)
    grpc = grpcclient.InferenceServerClient(server.grpc_address)
    answers: list = []
    queued = grpc.async_infer("bounded", _inputs(grpcclient), lambda result, error: answers.append(error))
    time.sleep(0.1)  # the second waits in the queue (size 1) ...
    with pytest.raises(InferenceServerException, match="Exceeds maximum queue size"):
        httpclient.InferenceServerClient(server.http_address).infer("bounded", _inputs(httpclient))
    queued.cancel()  # ... and is cancelled there
    executing.join(30)
    deadline = time.monotonic() + 10
    while not answers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert results == ["ok"]
    assert answers and answers[0] is not None and "CANCELLED" in str(answers[0]).upper()
    deadline = time.monotonic() + 10
    while True:  # the server learns of the cancellation asynchronously
        reasons = _reasons(scrape(server), "bounded")
        if reasons["CANCELED"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert reasons == {"REJECTED": 0, "CANCELED": 1, "BACKEND": 0, "OTHER": 0}
    grpc.close()


def test_model_that_raises_is_a_backend_failure(server) -> None:
    client = httpclient.InferenceServerClient(server.http_address)
    for _ in range(2):
        with pytest.raises(InferenceServerException, match="this model always fails"):
            client.infer("raiser", [_one(httpclient)])
    samples = scrape(server)
    assert _reasons(samples, "raiser") == {"REJECTED": 0, "CANCELED": 0, "BACKEND": 2, "OTHER": 0}
    assert value(samples, "nv_inference_request_success_total", model="raiser", version="1") == 0


def _one(module):
    inp = module.InferInput("INPUT0", [1], "FP32")
    inp.set_data_from_numpy(np.ones(1, np.float32))
    return inp
