"""The gRPC service's server options against real `naiad serve` processes: restricted
protocols, TLS, response compression and keepalive flags, graceful shutdown."""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import time

import grpc
import numpy as np
import pytest

from support.grpc_models import add_sub, repeat

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

TIMEOUT = 10.0


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "models"
    add_sub(path)
    repeat(path)
    return path


def add_sub_inputs():
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        inp = grpcclient.InferInput(name, [4], "FP32")
        inp.set_data_from_numpy(np.ones(4, dtype=np.float32))
        inputs.append(inp)
    return inputs


def repeat_inputs(count, delay_ms):
    values = grpcclient.InferInput("IN", [count], "INT32")
    values.set_data_from_numpy(np.arange(count, dtype=np.int32))
    delay = grpcclient.InferInput("DELAY_MS", [1], "UINT32")
    delay.set_data_from_numpy(np.array([delay_ms], dtype=np.uint32))
    return [values, delay]


def test_restricted_protocol(naiad, repo):
    proc = naiad("--model-repository", str(repo), "--grpc-restricted-protocol=health,inference:infer-key=s3cret",
                 "--grpc-restricted-protocol=model-repository:admin=yes")
    expected = "This protocol is restricted, expecting header 'triton-grpc-protocol-infer-key'"
    good = {"triton-grpc-protocol-infer-key": "s3cret"}
    with grpcclient.InferenceServerClient(proc.grpc_address) as client:
        for call in (lambda h: client.is_server_live(headers=h),
                     lambda h: client.is_model_ready("add_sub", headers=h),
                     lambda h: client.infer("add_sub", add_sub_inputs(), headers=h)):
            with pytest.raises(InferenceServerException) as e:
                call(None)
            assert e.value.status() == "StatusCode.UNAVAILABLE" and e.value.message() == expected
            with pytest.raises(InferenceServerException):
                call({"triton-grpc-protocol-infer-key": "wrong"})
            assert call(good)
        with pytest.raises(InferenceServerException) as e:
            client.get_model_repository_index()
        assert e.value.message() == "This protocol is restricted, expecting header 'triton-grpc-protocol-admin'"
        assert client.get_model_repository_index(headers={"triton-grpc-protocol-admin": "yes"}).models
        assert client.get_server_metadata().name == "triton"  # not restricted

        errors: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: errors.put(error))
        try:  # the stream is refused at once, as Triton does before reading a request
            client.async_stream_infer("add_sub", add_sub_inputs())
        except InferenceServerException:
            pass
        error = errors.get(timeout=TIMEOUT)
        assert error is not None and expected in str(error)
        client.stop_stream()
        client.start_stream(callback=lambda result, error: errors.put(error), headers=good)
        client.async_stream_infer("add_sub", add_sub_inputs())
        assert errors.get(timeout=TIMEOUT) is None
        client.stop_stream()

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(proc.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        ok = health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT,
                          metadata=(("triton-grpc-protocol-infer-key", "s3cret"),))
        assert ok.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_and_transport_options(naiad, repo, tmp_path):
    key, cert = tmp_path / "server.key", tmp_path / "server.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    proc = naiad("--model-repository", str(repo), "--grpc-use-ssl=true", f"--grpc-server-cert={cert}",
                 f"--grpc-server-key={key}", "--grpc-infer-response-compression-level=high",
                 "--grpc-keepalive-time=10000", "--grpc-keepalive-timeout=5000",
                 "--grpc-keepalive-permit-without-calls=true", "--grpc-http2-max-pings-without-data=0",
                 "--grpc-max-connection-age=60000", "--grpc-max-connection-age-grace=5000")
    with grpcclient.InferenceServerClient(proc.grpc_address, ssl=True, root_certificates=str(cert)) as client:
        assert client.is_server_live()
        result = client.infer("add_sub", add_sub_inputs(), compression_algorithm="gzip")
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full(4, 2, np.float32))
    with grpcclient.InferenceServerClient(proc.grpc_address) as plain:  # no TLS: refused
        with pytest.raises(InferenceServerException):
            plain.is_server_live(client_timeout=2)


def test_graceful_shutdown_lets_streams_finish(naiad, repo):
    proc = naiad("--model-repository", str(repo), "--exit-timeout-secs=20")
    items: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(proc.grpc_address)
    client.start_stream(callback=lambda result, error: items.put((result, error)))
    client.async_stream_infer("repeat", repeat_inputs(8, 100), request_id="long", enable_empty_final_response=True)
    first, error = items.get(timeout=TIMEOUT)
    assert error is None
    proc.signal(signal.SIGTERM)
    time.sleep(0.3)
    # draining: not ready, new work refused, the stream's request goes on
    with grpcclient.InferenceServerClient(proc.grpc_address) as other:
        assert other.is_server_live() and not other.is_server_ready()
        with pytest.raises(InferenceServerException) as e:
            other.infer("add_sub", add_sub_inputs())
        assert e.value.status() == "StatusCode.UNAVAILABLE"
    client.async_stream_infer("add_sub", add_sub_inputs(), request_id="late")
    got = [first]
    late_error = None
    while True:
        result, error = items.get(timeout=TIMEOUT)
        if error is not None:
            late_error = error
            continue
        got.append(result)
        if result.get_response().parameters["triton_final_response"].bool_param:
            break
    assert [r.get_response().id for r in got] == ["long"] * 9
    assert late_error is not None and "shutting down" in late_error.message()
    client.stop_stream()
    client.close()
    assert proc.wait(30) == 0, proc.logs()
