"""Every RPC of the gRPC service, success and error, against a real `naiad serve` with the
real tritonclient (sync, asyncio and streaming) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import time

import grpc
import numpy as np
import pytest

from support.grpc_models import (
    CONFIG_TYPE,
    add_sub,
    echo_params,
    identity_all,
    identity_fp32,
    repeat,
    slow,
)
from support.naiad_process import NaiadProcess
from support.shared_memory import shared_memory_module

grpcclient = pytest.importorskip("tritonclient.grpc")
import tritonclient.grpc.aio as aioclient  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException, triton_to_np_dtype  # noqa: E402

TIMEOUT = 10.0  # seconds any single wait may take


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("grpc_models")
    for make in (identity_all, echo_params, add_sub, identity_fp32, repeat, slow):
        make(repo)
    add_sub(repo, "spare")
    proc = NaiadProcess(tmp_path_factory.mktemp("grpc_server"),
                        ["--model-repository", str(repo), "--model-control-mode=explicit", "--load-model=*",
                         "--grpc-header-forward-pattern=^x-fwd-"])
    proc.repo = repo  # type: ignore[attr-defined]
    proc.start()
    yield proc
    proc.kill_if_running()


@pytest.fixture(scope="module")
def client(server):
    c = grpcclient.InferenceServerClient(server.grpc_address)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(server):
    """tritonclient's generated stub, for messages its client does not build."""
    channel = grpc.insecure_channel(server.grpc_address)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def wait_for_file(path, timeout=TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.02)
    return False


def fp32_input(name, values):
    inp = grpcclient.InferInput(name, list(np.shape(values)), "FP32")
    inp.set_data_from_numpy(np.asarray(values, dtype=np.float32))
    return inp


def add_sub_inputs(a, b):
    return [fp32_input("INPUT0", a), fp32_input("INPUT1", b)]


class Collector:
    """A stream callback that queues (result, error) pairs."""

    def __init__(self):
        self.items: queue.Queue = queue.Queue()

    def __call__(self, result, error):
        self.items.put((result, error))

    def take(self, n):
        return [self.items.get(timeout=TIMEOUT) for _ in range(n)]


def final_flag(result) -> bool:
    return result.get_response().parameters["triton_final_response"].bool_param


# ------------------------------------------------------------------ health and metadata --

def test_health_rpcs(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("add_sub")
    assert client.is_model_ready("add_sub", "1")
    assert not client.is_model_ready("add_sub", "7")
    assert not client.is_model_ready("no_such_model")


def test_standard_health_check(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(server.grpc_address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_server_metadata(client):
    meta = client.get_server_metadata()
    assert (meta.name, meta.version) == ("triton", "2.45.0")
    assert "system_shared_memory" in meta.extensions
    as_json = client.get_server_metadata(as_json=True)
    assert as_json["name"] == "triton"


def test_model_metadata_and_config(client):
    meta = client.get_model_metadata("add_sub")
    assert (meta.name, list(meta.versions), meta.platform) == ("add_sub", ["1"], "python")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == \
        [("INPUT0", "FP32", [4]), ("INPUT1", "FP32", [4])]
    batched = client.get_model_metadata("identity_fp32")
    assert list(batched.inputs[0].shape) == [-1, -1]
    config = client.get_model_config("repeat").config
    assert config.name == "repeat" and config.model_transaction_policy.decoupled
    assert client.get_model_config("identity_fp32", as_json=True)["config"]["max_batch_size"] == 64
    for call in (lambda: client.get_model_metadata("no_such_model"),
                 lambda: client.get_model_config("no_such_model")):
        with pytest.raises(InferenceServerException) as e:
            call()
        assert e.value.status() == "StatusCode.NOT_FOUND"
        assert "no_such_model" in e.value.message()


# ------------------------------------------------------------------ ModelInfer --

def _all_types_data():
    data = {}
    for dt in CONFIG_TYPE:
        if dt == "BYTES":
            data[dt] = np.array([b"x", b"", "é".encode()], dtype=object)
        elif dt == "BOOL":
            data[dt] = np.array([True, False, True])
        else:
            data[dt] = (np.arange(3) + 1).astype(triton_to_np_dtype(dt))
    return data


def test_infer_every_datatype(client):
    data = _all_types_data()
    inputs = []
    for dt, values in data.items():
        inp = grpcclient.InferInput(f"IN_{dt}", [3], dt)
        inp.set_data_from_numpy(values)
        inputs.append(inp)
    result = client.infer("identity_all", inputs, request_id="all-types")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("identity_all", "1", "all-types")
    # Triton returns output data in raw_output_contents, one entry per output.
    assert len(response.raw_output_contents) == len(response.outputs) == len(data)
    for dt, values in data.items():
        np.testing.assert_array_equal(result.as_numpy(f"OUT_{dt}"), values)


def test_infer_requested_outputs_and_large_tensor(client):
    values = np.random.default_rng(1).random(3 * 1024 * 1024).astype(np.float32)  # 12 MiB > gRPC's 4 MiB default
    inp = grpcclient.InferInput("IN_FP32", [values.size], "FP32")
    inp.set_data_from_numpy(values)
    small = grpcclient.InferInput("IN_INT8", [2], "INT8")
    small.set_data_from_numpy(np.array([-1, 1], dtype=np.int8))
    result = client.infer("identity_all", [inp, small], outputs=[grpcclient.InferRequestedOutput("OUT_INT8")])
    assert [o.name for o in result.get_response().outputs] == ["OUT_INT8"]
    assert result.as_numpy("OUT_INT8").tolist() == [-1, 1]
    result = client.infer("identity_all", [inp])
    np.testing.assert_array_equal(result.as_numpy("OUT_FP32"), values)


def test_infer_typed_contents(stub):
    request = service_pb2.ModelInferRequest(model_name="identity_all", id="typed")
    for name, dt, field, values in [("IN_FP32", "FP32", "fp32_contents", [1.5, -2.0]),
                                    ("IN_INT8", "INT8", "int_contents", [-3, 4]),
                                    ("IN_UINT64", "UINT64", "uint64_contents", [2 ** 63, 1]),
                                    ("IN_BYTES", "BYTES", "bytes_contents", [b"ab", b"c"])]:
        t = request.inputs.add(name=name, datatype=dt, shape=[2])
        getattr(t.contents, field).extend(values)
    response = stub.ModelInfer(request, timeout=TIMEOUT)
    result = grpcclient.InferResult(response)
    assert result.as_numpy("OUT_FP32").tolist() == [1.5, -2.0]
    assert result.as_numpy("OUT_INT8").tolist() == [-3, 4]
    assert result.as_numpy("OUT_UINT64").tolist() == [2 ** 63, 1]
    assert result.as_numpy("OUT_BYTES").tolist() == [b"ab", b"c"]
    bad = service_pb2.ModelInferRequest(model_name="identity_all")
    t = bad.inputs.add(name="IN_FP32", datatype="FP32", shape=[1])
    t.contents.fp32_contents.append(1.0)
    bad.raw_input_contents.append(b"\0\0\0\0")
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(bad, timeout=TIMEOUT)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "contents field must not be specified when using raw_input_contents" in e.value.details()


def test_infer_parameters_and_forwarded_headers(client):
    inp = grpcclient.InferInput("IN", [1], "INT32")
    inp.set_data_from_numpy(np.array([0], dtype=np.int32))
    result = client.infer("echo_params", [inp], request_id="p1",
                          parameters={"s": "text", "i": 3, "b": True, "f": 0.5},
                          headers={"x-fwd-user": "ann", "x-other": "kept-out"})
    info = json.loads(result.as_numpy("INFO")[0])
    assert info["id"] == "p1"
    assert info["parameters"] == {"s": "text", "i": 3, "b": True, "f": 0.5, "x-fwd-user": "ann"}


def test_infer_errors(client):
    def status(call):
        with pytest.raises(InferenceServerException) as e:
            call()
        return e.value.status(), e.value.message()

    code, message = status(lambda: client.infer("no_such_model", add_sub_inputs([1] * 4, [1] * 4)))
    assert code == "StatusCode.NOT_FOUND" and message == "Request for unknown model: 'no_such_model' is not found"
    code, _ = status(lambda: client.infer("add_sub", [fp32_input("INPUT0", [1] * 4)]))
    assert code == "StatusCode.INVALID_ARGUMENT"
    wrong = grpcclient.InferInput("INPUT0", [4], "INT32")
    wrong.set_data_from_numpy(np.ones(4, dtype=np.int32))
    code, _ = status(lambda: client.infer("add_sub", [wrong, fp32_input("INPUT1", [1] * 4)]))
    assert code == "StatusCode.INVALID_ARGUMENT"
    code, message = status(lambda: client.infer("add_sub", add_sub_inputs([1] * 4, [1] * 4),
                                                parameters={"triton_secret": 1}))
    assert code == "StatusCode.INVALID_ARGUMENT" and "are reserved for Triton usage" in message
    inp = grpcclient.InferInput("IN", [1], "INT32")
    inp.set_data_from_numpy(np.array([1], dtype=np.int32))
    code, message = status(lambda: client.infer("repeat", [inp]))
    assert code == "StatusCode.UNIMPLEMENTED"
    assert message == "ModelInfer RPC doesn't support models with decoupled transaction policy"


def test_classification(client):
    values = np.array([[0.1, 0.7, 0.2]], dtype=np.float32)
    result = client.infer("identity_fp32", [fp32_input("INPUT0", values)],
                          outputs=[grpcclient.InferRequestedOutput("OUTPUT0", class_count=2)])
    out = result.get_response().outputs[0]
    assert out.datatype == "BYTES" and list(out.shape) == [1, 2]
    assert [v.decode() for v in result.as_numpy("OUTPUT0").reshape(-1)] == ["0.700000:1", "0.200000:2"]


# ------------------------------------------------------------------ shared memory --

def test_system_shared_memory(client, server):
    shm = shared_memory_module()
    key_in, key_out = f"/naiad_grpc_in_{os.getpid()}", f"/naiad_grpc_out_{os.getpid()}"
    region_in = shm.create_shared_memory_region("grpc_in", key_in, 32)
    region_out = shm.create_shared_memory_region("grpc_out", key_out, 48)
    try:
        a = np.array([1, 2, 3, 4], dtype=np.float32)
        b = np.array([10, 20, 30, 40], dtype=np.float32)
        shm.set_shared_memory_region(region_in, [a, b])
        client.register_system_shared_memory("grpc_in", key_in, 32)
        client.register_system_shared_memory("grpc_out", key_out, 48)
        with pytest.raises(InferenceServerException) as e:
            client.register_system_shared_memory("grpc_in", key_in, 32)
        assert e.value.status() == "StatusCode.ALREADY_EXISTS"
        status = client.get_system_shared_memory_status()
        assert {"grpc_in", "grpc_out"} <= set(status.regions)
        assert (status.regions["grpc_in"].key, status.regions["grpc_in"].byte_size) == (key_in, 32)
        one = client.get_system_shared_memory_status("grpc_out")
        assert list(one.regions) == ["grpc_out"]

        in0 = grpcclient.InferInput("INPUT0", [4], "FP32")
        in0.set_shared_memory("grpc_in", 16)
        in1 = grpcclient.InferInput("INPUT1", [4], "FP32")
        in1.set_shared_memory("grpc_in", 16, offset=16)
        out0 = grpcclient.InferRequestedOutput("OUTPUT0")
        out0.set_shared_memory("grpc_out", 16, offset=16)
        out1 = grpcclient.InferRequestedOutput("OUTPUT1")  # this one comes back in the message
        result = client.infer("add_sub", [in0, in1], outputs=[out0, out1])
        response = result.get_response()
        assert [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]
        assert response.raw_output_contents[0] == b""
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
        got = shm.get_contents_as_numpy(region_out, np.float32, [4], offset=16)
        np.testing.assert_array_equal(got, a + b)

        client.unregister_system_shared_memory("grpc_out")
        with pytest.raises(InferenceServerException) as e:
            client.get_system_shared_memory_status("grpc_out")
        assert e.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as e:
            client.infer("add_sub", [in0, in1], outputs=[out0])
        assert e.value.status() == "StatusCode.NOT_FOUND"
        client.unregister_system_shared_memory()  # all
        assert not client.get_system_shared_memory_status().regions
    finally:
        shm.destroy_shared_memory_region(region_in)
        shm.destroy_shared_memory_region(region_out)


def test_cuda_shared_memory_rpcs(client):
    assert not client.get_cuda_shared_memory_status().regions
    with pytest.raises(InferenceServerException):
        client.register_cuda_shared_memory("cuda_r", b"\0" * 64, 0, 16)
    client.unregister_cuda_shared_memory()


# ------------------------------------------------------------------ statistics, repository, settings --

def test_model_statistics(client):
    client.infer("add_sub", add_sub_inputs([1] * 4, [2] * 4))
    stats = client.get_inference_statistics("add_sub").model_stats
    assert [(s.name, s.version) for s in stats] == [("add_sub", "1")]
    assert stats[0].inference_count >= 1 and stats[0].inference_stats.success.count >= 1
    assert stats[0].last_inference > 0
    every = {s.name for s in client.get_inference_statistics().model_stats}
    assert {"add_sub", "repeat", "slow"} <= every
    with pytest.raises(InferenceServerException) as e:
        client.get_inference_statistics("no_such_model")
    assert e.value.status() == "StatusCode.NOT_FOUND"


def test_repository_index_load_unload(client, stub):
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["spare"].state == "READY"
    client.unload_model("spare")
    deadline = time.monotonic() + TIMEOUT
    while client.is_model_ready("spare") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.is_model_ready("spare")
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["spare"].state == "UNAVAILABLE"
    client.load_model("spare")
    assert client.is_model_ready("spare")
    with pytest.raises(InferenceServerException) as e:
        client.load_model("never_there")
    assert e.value.status() in ("StatusCode.NOT_FOUND", "StatusCode.INVALID_ARGUMENT")
    with pytest.raises(grpc.RpcError) as e:
        stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(repository_name="other"), timeout=TIMEOUT)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert e.value.details() == "'repository_name' specification is not supported"
    load = service_pb2.RepositoryModelLoadRequest(model_name="spare")
    load.parameters["bogus"].bool_param = True
    with pytest.raises(grpc.RpcError) as e:
        stub.RepositoryModelLoad(load, timeout=TIMEOUT)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "unrecognized load parameter 'bogus'."


def test_log_settings(client, stub):
    settings = client.get_log_settings(as_json=True)["settings"]
    assert set(settings) == {"log_file", "log_info", "log_warning", "log_error", "log_verbose_level", "log_format"}
    updated = client.update_log_settings({"log_verbose_level": 1}).settings
    assert updated["log_verbose_level"].uint32_param == 1
    client.update_log_settings({"log_verbose_level": 0})
    bad = service_pb2.LogSettingsRequest()
    bad.settings["log_info"].string_param = "yes"
    with pytest.raises(grpc.RpcError) as e:
        stub.LogSettings(bad, timeout=TIMEOUT)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "expect boolean for 'log_info'"


def test_trace_settings(client):
    from naiad.kernel.config import BUILTIN_SERVICES

    if "tracing" in BUILTIN_SERVICES:
        settings = client.get_trace_settings(as_json=True)["settings"]
        assert "trace_level" in settings
    else:
        with pytest.raises(InferenceServerException) as e:
            client.get_trace_settings()
        assert e.value.status() == "StatusCode.UNAVAILABLE"
        assert e.value.message() == "the server does not support trace"


# ------------------------------------------------------------------ ModelStreamInfer --

def test_stream_decoupled_concurrent_requests(server):
    collector = Collector()
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        client.start_stream(callback=collector)
        for rid, count in (("a", 4), ("b", 4), ("c", 3)):
            values = grpcclient.InferInput("IN", [count], "INT32")
            values.set_data_from_numpy(np.arange(count, dtype=np.int32) + 100 * ord(rid))
            delay = grpcclient.InferInput("DELAY_MS", [1], "UINT32")
            delay.set_data_from_numpy(np.array([40], dtype=np.uint32))
            client.async_stream_infer("repeat", [values, delay], request_id=rid,
                                      enable_empty_final_response=(rid != "c"))
        items = collector.take(4 + 1 + 4 + 1 + 3)
        client.stop_stream()
    seen: dict[str, list] = {"a": [], "b": [], "c": []}
    order = []
    for result, error in items:
        assert error is None
        response = result.get_response()
        order.append(response.id)
        if final_flag(result):
            assert list(response.outputs) == [] and response.model_name == "repeat"
            seen[response.id].append("final")
        else:
            seen[response.id].append(int(result.as_numpy("IDX")[0]))
            assert result.as_numpy("OUT")[0] == 100 * ord(response.id) + seen[response.id][-1]
    assert seen == {"a": [0, 1, 2, 3, "final"], "b": [0, 1, 2, 3, "final"], "c": [0, 1, 2]}
    # the three requests ran at once: their responses interleave instead of coming one request after another
    first_done = {rid: max(i for i, r in enumerate(order) if r == rid) for rid in "abc"}
    assert order.index("b") < first_done["a"] and order.index("c") < first_done["a"]


def test_stream_non_decoupled_order_and_errors(server):
    collector = Collector()
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        client.start_stream(callback=collector)
        seconds = grpcclient.InferInput("SECONDS", [1], "FP32")
        seconds.set_data_from_numpy(np.array([0.4], dtype=np.float32))
        client.async_stream_infer("slow", [seconds], request_id="slow-first")
        client.async_stream_infer("add_sub", add_sub_inputs([1] * 4, [1] * 4), request_id="fast")
        client.async_stream_infer("no_such_model", add_sub_inputs([1] * 4, [1] * 4), request_id="missing")
        client.async_stream_infer("add_sub", [fp32_input("INPUT0", [1] * 4)], request_id="bad")
        client.async_stream_infer("add_sub", add_sub_inputs([5] * 4, [1] * 4), request_id="last")
        items = collector.take(5)
        client.stop_stream()
    # a slow non-decoupled request holds back the ones after it, as Triton writes them in order
    assert items[0][1] is None and items[0][0].get_response().id == "slow-first"
    assert items[0][0].as_numpy("DONE").tolist() == [pytest.approx(0.4)]
    assert items[1][0].get_response().id == "fast" and final_flag(items[1][0])
    assert items[2][0] is None and items[2][1].message() == "Request for unknown model: 'no_such_model' is not found"
    assert items[3][0] is None and items[3][1] is not None
    assert items[4][0].get_response().id == "last"
    np.testing.assert_array_equal(items[4][0].as_numpy("OUTPUT1"), np.full(4, 4, np.float32))


def test_stream_ordered_on_request(server):
    collector = Collector()
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        client.start_stream(callback=collector, headers={"naiad-ordered-stream": "true"})
        for rid, delay_ms in (("slow", 60), ("quick", 0)):
            values = grpcclient.InferInput("IN", [3], "INT32")
            values.set_data_from_numpy(np.arange(3, dtype=np.int32))
            delay = grpcclient.InferInput("DELAY_MS", [1], "UINT32")
            delay.set_data_from_numpy(np.array([delay_ms], dtype=np.uint32))
            client.async_stream_infer("repeat", [values, delay], request_id=rid, enable_empty_final_response=True)
        items = collector.take(8)
        client.stop_stream()
    assert [r.get_response().id for r, _ in items] == ["slow"] * 4 + ["quick"] * 4


def test_stream_cancellation_reaches_the_model(server):
    collector = Collector()
    marker = server.repo / "repeat" / "cancelled-to-cancel"
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        client.start_stream(callback=collector)
        values = grpcclient.InferInput("IN", [200], "INT32")
        values.set_data_from_numpy(np.arange(200, dtype=np.int32))
        delay = grpcclient.InferInput("DELAY_MS", [1], "UINT32")
        delay.set_data_from_numpy(np.array([20], dtype=np.uint32))
        client.async_stream_infer("repeat", [values, delay], request_id="to-cancel")
        collector.take(2)
        client.stop_stream(cancel_requests=True)
    assert wait_for_file(marker), "the model never saw is_cancelled()"


def test_unary_cancellation_reaches_the_model(server, client):
    marker = server.repo / "slow" / "cancelled-cancel-sync"
    seconds = grpcclient.InferInput("SECONDS", [1], "FP32")
    seconds.set_data_from_numpy(np.array([20], dtype=np.float32))
    done = queue.Queue()
    ctx = client.async_infer("slow", [seconds], callback=lambda result, error: done.put(error),
                             request_id="cancel-sync")
    time.sleep(0.3)
    ctx.cancel()
    error = done.get(timeout=TIMEOUT)
    assert error is not None and "CANCELLED" in error.status()
    assert wait_for_file(marker), "the model never saw is_cancelled()"


# ------------------------------------------------------------------ asyncio client --

def test_aio_client(server):
    async def main():
        client = aioclient.InferenceServerClient(server.grpc_address)
        try:
            assert await client.is_server_live()
            assert await client.is_model_ready("add_sub")
            result = await client.infer("add_sub", add_sub_inputs([1, 2, 3, 4], [1, 1, 1, 1]))
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [2, 3, 4, 5])
            meta = await client.get_model_metadata("repeat", as_json=True)
            assert meta["name"] == "repeat"

            async def requests():
                for rid in ("x", "y"):
                    values = grpcclient.InferInput("IN", [2], "INT32")
                    values.set_data_from_numpy(np.array([1, 2], dtype=np.int32))
                    yield {"model_name": "repeat", "inputs": [values], "request_id": rid,
                           "enable_empty_final_response": True}

            finals = set()
            counts = {"x": 0, "y": 0}
            async for result, error in client.stream_infer(requests(), stream_timeout=TIMEOUT):
                assert error is None
                response = result.get_response()
                if final_flag(result):
                    finals.add(response.id)
                    if finals == {"x", "y"}:
                        break
                else:
                    counts[response.id] += 1
            assert counts == {"x": 2, "y": 2}

            # cancelling the coroutine cancels the call, and the model sees it
            seconds = grpcclient.InferInput("SECONDS", [1], "FP32")
            seconds.set_data_from_numpy(np.array([20], dtype=np.float32))
            task = asyncio.ensure_future(client.infer("slow", [seconds], request_id="cancel-aio"))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises((asyncio.CancelledError, InferenceServerException)):
                await task
        finally:
            await client.close()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert wait_for_file(server.repo / "slow" / "cancelled-cancel-aio")
