"""End-to-end tests of the Python backend through naiad's Backend interface (real stubs)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.types import FutureSink, QueueSink

from support.python_backend import ADD_SUB, ADD_SUB_CONFIG, Harness, request, run, stub_processes

pytestmark = pytest.mark.timeout(120)

# --------------------------------------------------------------------------- models --

IDENTITY = '''
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            outs = [pb_utils.Tensor(t.name() + "_OUT", t.as_numpy()) for t in request.inputs()]
            responses.append(pb_utils.InferenceResponse(outs))
        return responses
'''

INFO = '''
import json, os
import triton_python_backend_utils as pb_utils
import numpy as np

class TritonPythonModel:
    def initialize(self, args):
        self.args = args

    def execute(self, requests):
        responses = []
        for request in requests:
            info = {
                "args": self.args,
                "id": request.request_id(),
                "correlation_id": request.correlation_id(),
                "flags": request.flags(),
                "parameters": json.loads(request.parameters()),
                "timeout": request.timeout(),
                "requested": request.requested_output_names(),
                "batch": len(requests),
                "pid": os.getpid(),
                "model_dir": pb_utils.get_model_dir(),
            }
            out = np.array([json.dumps(info).encode()], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("INFO", out), pb_utils.Tensor("EXTRA", np.zeros(1, np.int32))],
                parameters={"answered_by": "info", "n": 7}))
        return responses
'''

INFO_CONFIG = '''
backend: "python"
input [ { name: "X" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "INFO" data_type: TYPE_STRING dims: [ 1 ] },
         { name: "EXTRA" data_type: TYPE_INT32 dims: [ 1 ] } ]
'''

STREAMER = '''
import threading
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.config = args["model_config"]

    def execute(self, requests):
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy()[0])
            sender = request.get_response_sender()
            threading.Thread(target=self._respond, args=(sender, n)).start()
        return None

    def _respond(self, sender, n):
        for i in range(n):
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([i], np.int32))]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
'''

STREAMER_CONFIG = '''
backend: "python"
model_transaction_policy { decoupled: true }
input [ { name: "N" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
'''

ASYNC_MODEL = '''
import asyncio
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.active = 0
        self.peak = 0

    async def execute(self, requests):
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.2)
        self.active -= 1
        return [pb_utils.InferenceResponse([pb_utils.Tensor("PEAK", np.array([self.peak], np.int32))])
                for _ in requests]
'''

ASYNC_CONFIG = '''
backend: "python"
input [ { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "PEAK" data_type: TYPE_INT32 dims: [ 1 ] } ]
'''

BLS = '''
import asyncio
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            mode = pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0].decode()
            if mode == "sync":
                out = self._sync()
            elif mode == "async":
                out = asyncio.run(self._async())
            elif mode == "decoupled":
                out = self._decoupled()
            elif mode == "missing":
                req = pb_utils.InferenceRequest(model_name="nope", requested_output_names=["X"], inputs=[])
                resp = req.exec()
                out = np.array([resp.has_error(), "nope" in resp.error().message()], np.int32)
            elif mode == "ready":
                out = np.array([pb_utils.is_model_ready("add_sub"), pb_utils.is_model_ready("nope")], np.int32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", out.astype(np.float32))]))
        return responses

    def _add_sub_request(self, k):
        a = np.full(4, k, np.float32)
        return pb_utils.InferenceRequest(
            model_name="add_sub",
            inputs=[pb_utils.Tensor("INPUT0", a), pb_utils.Tensor("INPUT1", np.ones(4, np.float32))],
            requested_output_names=["OUTPUT0"])

    def _sync(self):
        resp = self._add_sub_request(2).exec()
        if resp.has_error():
            raise pb_utils.TritonModelException(resp.error().message())
        return pb_utils.get_output_tensor_by_name(resp, "OUTPUT0").as_numpy()

    async def _async(self):
        resps = await asyncio.gather(*[self._add_sub_request(k).async_exec() for k in range(4)])
        return np.concatenate([pb_utils.get_output_tensor_by_name(r, "OUTPUT0").as_numpy()[:1] for r in resps])

    def _decoupled(self):
        req = pb_utils.InferenceRequest(
            model_name="streamer", inputs=[pb_utils.Tensor("N", np.array([3], np.int32))],
            requested_output_names=["OUT"])
        values = []
        for resp in req.exec(decoupled=True):
            if resp.has_error():
                raise pb_utils.TritonModelException(resp.error().message())
            t = pb_utils.get_output_tensor_by_name(resp, "OUT")
            values.append(-1 if t is None else int(t.as_numpy()[0]))
        return np.array(values, np.float32)
'''

BLS_CONFIG = '''
backend: "python"
input [ { name: "MODE" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
'''

ASYNC_BLS = '''
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    async def execute(self, requests):
        responses = []
        for request in requests:
            req = pb_utils.InferenceRequest(
                model_name="add_sub",
                inputs=[pb_utils.Tensor("INPUT0", np.full(4, 5, np.float32)),
                        pb_utils.Tensor("INPUT1", np.ones(4, np.float32))],
                requested_output_names=["OUTPUT1"])
            resp = await req.async_exec()
            sync = req.exec()
            stream = await pb_utils.InferenceRequest(
                model_name="streamer", inputs=[pb_utils.Tensor("N", np.array([2], np.int32))],
                requested_output_names=["OUT"]).async_exec(decoupled=True)
            n = 0
            async for r in stream:
                n += 1
            out = np.concatenate([
                pb_utils.get_output_tensor_by_name(resp, "OUTPUT1").as_numpy(),
                pb_utils.get_output_tensor_by_name(sync, "OUTPUT1").as_numpy(),
                np.array([n], np.float32)])
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", out)]))
        return responses
'''

RAISER = '''
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        mode = requests[0].parameters()
        if "wrong_count" in mode:
            return []
        if "not_list" in mode:
            return None
        if "error_response" in mode:
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError("bad input", pb_utils.TritonError.INVALID_ARG))
                    for _ in requests]
        raise ValueError("boom")
'''

CANCELLABLE = '''
import time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            deadline = time.monotonic() + 20
            while not request.is_cancelled() and time.monotonic() < deadline:
                time.sleep(0.005)
            if request.is_cancelled():
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("request cancelled by the model", pb_utils.TritonError.CANCELLED)))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.zeros(1, np.int32))]))
        return responses
'''

DECOUPLED_CANCELLABLE = '''
import threading, time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self._run, args=(request.get_response_sender(),)).start()

    def _run(self, sender):
        i = 0
        deadline = time.monotonic() + 20
        while not sender.is_cancelled() and time.monotonic() < deadline:
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([i], np.int32))]))
            i += 1
            time.sleep(0.01)
        sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError("cancelled", pb_utils.TritonError.CANCELLED)),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
'''

SLEEPER = '''
import os, time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.started = time.time()

    def execute(self, requests):
        responses = []
        for request in requests:
            s = float(pb_utils.get_input_tensor_by_name(request, "SLEEP").as_numpy()[0])
            time.sleep(s)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("PID", np.array([os.getpid()], np.int64))]))
        return responses
'''

SLEEPER_CONFIG = '''
backend: "python"
input [ { name: "SLEEP" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "PID" data_type: TYPE_INT64 dims: [ 1 ] } ]
'''

AUTO = '''
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        auto_complete_model_config.add_input({"name": "IN", "data_type": "TYPE_FP32", "dims": [3]})
        auto_complete_model_config.add_output({"name": "OUT", "data_type": "TYPE_FP32", "dims": [3]})
        auto_complete_model_config.set_max_batch_size(8)
        auto_complete_model_config.set_dynamic_batching()
        return auto_complete_model_config

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", r.inputs()[0].as_numpy() * 2)]) for r in requests]
'''

LOGGER = '''
import triton_python_backend_utils as pb_utils
import numpy as np

class TritonPythonModel:
    def execute(self, requests):
        pb_utils.Logger.log_info("hello from the stub")
        pb_utils.Logger.log_warn("careful")
        pb_utils.Logger.log_error("oops")
        pb_utils.Logger.log_verbose("chatty")
        pb_utils.Logger.log("leveled", pb_utils.Logger.LogLevel.WARNING)
        fam = pb_utils.MetricFamily("naiad_test_counter", "a test", pb_utils.MetricFamily.COUNTER)
        m = fam.Metric(labels={"k": "v"})
        m.increment(2)
        m.increment(3)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("V", np.array([m.value()], np.float32))]) for _ in requests]
'''


def numeric_config(name: str, dtype: str) -> str:
    return f'''
backend: "python"
input [ {{ name: "IN" data_type: {dtype} dims: [ -1 ] }} ]
'''


# ---------------------------------------------------------------------------- tests --


def test_add_sub(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await h.load("add_sub", ADD_SUB, ADD_SUB_CONFIG)
            a = np.array([1, 2, 3, 4], np.float32)
            b = np.array([4, 3, 2, 1], np.float32)
            resp = await h.infer(request("add_sub", {"INPUT0": a, "INPUT1": b}, id="r1"))
            assert resp.error is None
            assert resp.id == "r1" and resp.final
            assert resp.model_name == "add_sub" and resp.model_version == "1"
            np.testing.assert_array_equal(resp.output("OUTPUT0").array, a + b)
            np.testing.assert_array_equal(resp.output("OUTPUT1").array, a - b)
            assert resp.output("OUTPUT0").datatype == "FP32"
            assert resp.output("OUTPUT0").shape == (4,)
        finally:
            await h.close()

    run(scenario())


@pytest.mark.parametrize(
    "wire,array",
    [
        ("BOOL", np.array([True, False, True])),
        ("UINT8", np.arange(5, dtype=np.uint8)),
        ("UINT16", np.arange(5, dtype=np.uint16)),
        ("UINT32", np.arange(5, dtype=np.uint32)),
        ("UINT64", np.array([0, 2**63 + 5], dtype=np.uint64)),
        ("INT8", np.array([-3, 0, 3], dtype=np.int8)),
        ("INT16", np.array([-300, 300], dtype=np.int16)),
        ("INT32", np.arange(-4, 4, dtype=np.int32).reshape(2, 4)),
        ("INT64", np.array([-(2**40), 2**40], dtype=np.int64)),
        ("FP16", np.array([0.5, -1.25, 65504], dtype=np.float16)),
        ("FP32", np.linspace(0, 1, 7, dtype=np.float32)),
        ("FP64", np.array([1e-300, 3.14159], dtype=np.float64)),
        ("BYTES", np.array([b"hello", b"", b"\x00\xffbin", "unicodé".encode()], dtype=np.object_).reshape(2, 2)),
    ],
)
def test_every_datatype_round_trips(tmp_path: Path, wire: str, array: np.ndarray) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await h.load("identity", IDENTITY, numeric_config("identity", "TYPE_FP32"))
            resp = await h.infer(request("identity", {"IN": array}))
            assert resp.error is None, resp.error
            out = resp.output("IN_OUT")
            assert out.datatype == wire
            assert out.shape == array.shape
            if wire == "BYTES":
                assert out.array.tolist() == array.tolist()
            else:
                assert out.array.dtype == array.dtype
                np.testing.assert_array_equal(out.array, array)
        finally:
            await h.close()

    run(scenario())


def test_empty_and_multi_input_tensors(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await h.load("identity", IDENTITY, numeric_config("identity", "TYPE_FP32"))
            big = np.random.default_rng(0).random((300, 1000)).astype(np.float32)  # > 1 MiB
            resp = await h.infer(request("identity", {
                "A": np.zeros((0, 3), np.float32), "B": big, "C": np.array([], dtype=np.object_)}))
            assert resp.error is None, resp.error
            assert resp.output("A_OUT").shape == (0, 3)
            np.testing.assert_array_equal(resp.output("B_OUT").array, big)
            assert resp.output("C_OUT").shape == (0,)
        finally:
            await h.close()

    run(scenario())


def test_batch_is_one_message_each_way(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            inst = await h.load("info", INFO, INFO_CONFIG)
            session = inst.session
            reqs = [request("info", {"X": np.arange(i + 1, dtype=np.int32)}, id=f"q{i}") for i in range(8)]
            await h.batch("info", reqs)  # warm-up: the first batch also announces each side's region
            sent, received = session.ep.sent, session.ep.received
            resps = await h.batch("info", reqs)
            assert session.ep.sent - sent == 1  # one EXECUTE for the whole batch
            assert session.ep.received - received == 1  # one RESPONSES back
            for i, resp in enumerate(resps):
                assert resp.error is None, resp.error
                info = json.loads(resp.output("INFO").array[0])
                assert info["id"] == f"q{i}" and info["batch"] == 8
            # the inputs' block was freed by the stub (riding on its answer)
            assert session.ep.arena.live == 0
            # ... and the outputs' block by the parent, on the next packet down
            await h.batch("info", reqs[:1])
            assert session.ep.received - received == 2
        finally:
            await h.close()

    run(scenario())


def test_request_metadata_reaches_the_model(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await h.load("info", INFO, INFO_CONFIG)
            req = request(
                "info",
                {"X": np.zeros(2, np.int32)},
                id="meta",
                parameters={"a": 1, "b": "two", "c": True},
                sequence_id=42,
                sequence_start=True,
                sequence_end=True,
                timeout_us=1234,
            )
            resp = await h.infer(req)
            info = json.loads(resp.output("INFO").array[0])
            assert info["parameters"] == {"a": 1, "b": "two", "c": True}
            assert info["correlation_id"] == 42
            assert info["flags"] == 3
            assert info["timeout"] == 1234
            assert info["requested"] == ["INFO", "EXTRA"]  # none asked: every config output
            assert resp.parameters == {"answered_by": "info", "n": 7}

            req = request("info", {"X": np.zeros(1, np.int32)}, sequence_id="corr-str", sequence_start=True, outputs=["INFO"])
            resp = await h.infer(req)
            info = json.loads(resp.output("INFO").array[0])
            assert info["correlation_id"] == "corr-str"
            assert info["flags"] == 1
            assert info["requested"] == ["INFO"]
            assert [t.name for t in resp.outputs] == ["INFO"]  # EXTRA was pruned
        finally:
            await h.close()

    run(scenario())


def test_initialize_args(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await h.load("info", INFO, INFO_CONFIG, instance_name="info_gpu_0", kind="GPU")
            resp = await h.infer(request("info", {"X": np.zeros(1, np.int32)}))
            info = json.loads(resp.output("INFO").array[0])
            args = info["args"]
            assert set(args) == {
                "model_config", "model_instance_kind", "model_instance_name",
                "model_instance_device_id", "model_repository", "model_version", "model_name",
            }
            assert all(isinstance(v, str) for v in args.values())
            assert args["model_instance_kind"] == "GPU"
            assert args["model_instance_name"] == "info_gpu_0"
            assert args["model_instance_device_id"] == "0"
            assert args["model_repository"] == str(tmp_path / "info")
            assert args["model_version"] == "1"
            assert args["model_name"] == "info"
            config = json.loads(args["model_config"])
            assert config["backend"] == "python"
            assert config["input"][0]["dims"] == [-1]  # numbers, as Triton writes them
            assert config["max_batch_size"] == 0  # defaults are printed
            assert info["model_dir"] == str(tmp_path / "info" / "1")
        finally:
            await h.close()

    run(scenario())


def test_decoupled_stream_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await h.load("streamer", STREAMER, STREAMER_CONFIG)
            sinks = [QueueSink(), QueueSink()]
            reqs = [request("streamer", {"N": np.array([n], np.int32)}) for n in (5, 3)]
            await h.instances["streamer"].execute(reqs, sinks)
            for sink, n in zip(sinks, (5, 3)):
                got = [int(r.output("OUT").array[0]) async for r in sink]
                assert got == list(range(n))
        finally:
            await h.close()

    run(scenario())


def test_async_execute_runs_batches_concurrently(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path, config={"max_inflight": "3"})
        try:
            inst = await h.load("asyncm", ASYNC_MODEL, ASYNC_CONFIG)
            assert inst.is_async and inst.max_inflight == 3
            resps = await asyncio.gather(*[
                h.infer(request("asyncm", {"X": np.zeros(1, np.int32)})) for _ in range(3)])
            peaks = [int(r.output("PEAK").array[0]) for r in resps]
            assert max(peaks) == 3, peaks  # all three batches were inside execute at once
        finally:
            await h.close()

    run(scenario())


def test_bls_sync_async_decoupled(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await h.load("add_sub", ADD_SUB, ADD_SUB_CONFIG)
            await h.load("streamer", STREAMER, STREAMER_CONFIG)
            await h.load("bls", BLS, BLS_CONFIG)

            async def call(mode: str) -> np.ndarray:
                resp = await h.infer(request("bls", {"MODE": np.array([mode.encode()], np.object_)}))
                assert resp.error is None, resp.error.message
                return resp.output("OUT").array

            np.testing.assert_array_equal(await call("sync"), np.full(4, 3, np.float32))
            np.testing.assert_array_equal(await call("async"), np.array([1, 2, 3, 4], np.float32))
            # three responses, then the empty final one (Triton's ResponseIterator)
            np.testing.assert_array_equal(await call("decoupled"), np.array([0, 1, 2, -1], np.float32))
            np.testing.assert_array_equal(await call("missing"), np.array([1, 1], np.float32))
            np.testing.assert_array_equal(await call("ready"), np.array([1, 0], np.float32))
        finally:
            await h.close()

    run(scenario())


def test_bls_from_async_execute(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await h.load("add_sub", ADD_SUB, ADD_SUB_CONFIG)
            await h.load("streamer", STREAMER, STREAMER_CONFIG)
            await h.load("abls", ASYNC_BLS, BLS_CONFIG.replace("TYPE_STRING", "TYPE_FP32"))
            resp = await h.infer(request("abls", {"MODE": np.zeros(1, np.float32)}))
            assert resp.error is None, resp.error.message
            np.testing.assert_array_equal(resp.output("OUT").array, [4, 4, 4, 4, 4, 4, 4, 4, 3])
        finally:
            await h.close()

    run(scenario())


@pytest.mark.parametrize(
    "mode,needle",
    [
        ("raise", "ValueError: boom"),
        ("wrong_count", "Number of InferenceResponse objects do not match the number of InferenceRequest objects. InferenceRequest(s) size is:2, and InferenceResponse(s) size is:0"),
        ("not_list", "Expected a list in the execute return, found type '<class 'NoneType'>'."),
    ],
)
def test_execute_errors_fail_every_request(tmp_path: Path, mode: str, needle: str) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await h.load("raiser", RAISER, numeric_config("raiser", "TYPE_FP32"))
            reqs = [request("raiser", {"IN": np.zeros(1, np.float32)}, parameters={"mode": mode}) for _ in range(2)]
            resps = await h.batch("raiser", reqs)
            for resp in resps:
                assert resp.error is not None
                assert resp.error.code == ErrorCode.INTERNAL
                assert resp.error.message.startswith(
                    "Failed to process the request(s) for model instance 'raiser_0_0', message: ")
                assert needle in resp.error.message
            # the instance still serves
            resp = await h.infer(request("raiser", {"IN": np.zeros(1, np.float32)}, parameters={"mode": "error_response"}))
            assert resp.error.code == ErrorCode.INVALID_ARG and resp.error.message == "bad input"
        finally:
            await h.close()

    run(scenario())


async def _cancel_while_executing(h: Harness, cancel: Callable[[Any], None]) -> None:
    """Start CANCELLABLE on one request, cancel it with `cancel(request)` while it polls
    `is_cancelled()`, and expect the model's CANCELLED answer."""
    await h.load("cancellable", CANCELLABLE, numeric_config("cancellable", "TYPE_FP32"))
    req = request("cancellable", {"IN": np.zeros(1, np.float32)})
    fut = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(h.instances["cancellable"].execute([req], [FutureSink(fut)]))
    await asyncio.sleep(0.2)
    cancel(req)
    resp = await asyncio.wait_for(fut, 10)
    await task
    assert resp.error is not None and resp.error.code == ErrorCode.CANCELLED


def test_cancellation_is_seen_by_the_model(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await _cancel_while_executing(h, lambda req: req.cancel.cancel())

            await h.load("dcancel", DECOUPLED_CANCELLABLE,
                         numeric_config("dcancel", "TYPE_FP32") + "model_transaction_policy { decoupled: true }\n")
            req = request("dcancel", {"IN": np.zeros(1, np.float32)})
            sink = QueueSink()
            await h.instances["dcancel"].execute([req], [sink])
            seen = 0
            while seen < 3:
                resp = await asyncio.wait_for(sink.queue.get(), 10)
                assert resp.error is None
                seen += 1
            req.cancel.cancel()
            while True:
                item = await asyncio.wait_for(sink.queue.get(), 10)
                if item is None:
                    break
                last = item
            assert last.final and last.error is not None and last.error.code == ErrorCode.CANCELLED
        finally:
            await h.close()

    run(scenario())


def test_is_cancelled_asks_the_server(tmp_path: Path) -> None:
    """As Triton's stub, `is_cancelled()` answers with the server's flag at the moment of the
    query, not with the last cancellation the stub was told about."""
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            # the server's flag only: no message is pushed to the stub
            await _cancel_while_executing(h, lambda req: setattr(req.cancel, "cancelled", True))
        finally:
            await h.close()

    run(scenario())


def test_stub_killed_fails_inflight_and_recovers(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            inst = await h.load("sleeper", SLEEPER, SLEEPER_CONFIG)
            await h.load("add_sub", ADD_SUB, ADD_SUB_CONFIG)
            first_pid = inst.pid
            req = request("sleeper", {"SLEEP": np.array([30], np.float32)})
            pending = asyncio.ensure_future(h.infer(req))
            await asyncio.sleep(0.3)
            os.kill(first_pid, signal.SIGKILL)
            resp = await asyncio.wait_for(pending, 10)
            assert resp.error is not None
            # Triton's words (python_be.cc); how it died goes to the log
            assert resp.error.code == ErrorCode.INTERNAL
            assert resp.error.message == ("Failed to process the request(s) for model instance 'sleeper_0_0', "
                                          "message: Stub process 'sleeper_0_0' is not healthy.")
            # other models are untouched
            other = await h.infer(request("add_sub", {"INPUT0": np.ones(4, np.float32), "INPUT1": np.ones(4, np.float32)}))
            assert other.error is None
            # the instance restarts its stub (initialize runs again) and serves
            resp = await h.infer(request("sleeper", {"SLEEP": np.array([0], np.float32)}))
            assert resp.error is None, resp.error
            new_pid = int(resp.output("PID").array[0])
            assert new_pid != first_pid and new_pid == inst.pid
            assert inst.restarts == 1
        finally:
            await h.close()
        assert not stub_processes()

    run(scenario())


def _shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


def test_close_leaves_no_processes_and_no_shm(tmp_path: Path) -> None:
    before = _shm_entries()

    async def scenario() -> None:
        h = Harness(tmp_path, run_id="leakcheck")
        await h.load("add_sub", ADD_SUB, ADD_SUB_CONFIG)
        inst = await h.load("identity", IDENTITY, numeric_config("identity", "TYPE_FP32"))
        pid = inst.pid
        maps = Path(f"/proc/{pid}/maps").read_text()
        await h.infer(request("identity", {"IN": np.ones(10, np.float32)}))
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "/memfd:naiad-leakcheck-" in maps
        assert len(stub_processes()) == 3  # two instances and the spare
        await h.close()

    run(scenario())
    assert not stub_processes()
    assert _shm_entries() == before


PARENT_SCRIPT = '''
import asyncio
from pathlib import Path
from support.python_backend import ADD_SUB, ADD_SUB_CONFIG, Harness

async def main():
    h = Harness(Path({root!r}))
    inst = await h.load("add_sub", ADD_SUB, ADD_SUB_CONFIG)
    print(inst.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
'''


def test_stub_exits_when_parent_dies(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT_SCRIPT.format(root=str(tmp_path / "models")))
    tests_dir = str(Path(__file__).resolve().parents[2])  # where `support` lives
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": tests_dir})
    try:
        line = parent.stdout.readline()
        stub_pid = int(line.strip())
        assert Path(f"/proc/{stub_pid}").exists()
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(stub_pid):
            time.sleep(0.05)
        assert not _alive(stub_pid), "the stub outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def test_auto_complete_config(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await h.load("auto", AUTO, 'backend: "python"\n')
            config = h.specs["auto"].config
            assert config.max_batch_size == 8
            assert config.HasField("dynamic_batching")
            assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("IN", 11, [3])]
            assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [("OUT", 11, [3])]
            resp = await h.infer(request("auto", {"IN": np.ones((1, 3), np.float32)}))
            np.testing.assert_array_equal(resp.output("OUT").array, np.full((1, 3), 2, np.float32))
        finally:
            await h.close()

        h = Harness(tmp_path, config={"auto_complete": "false"})
        try:
            await h.load("auto", AUTO, 'backend: "python"\n')
            assert h.specs["auto"].config.max_batch_size == 0
            assert len(h.specs["auto"].config.input) == 0
        finally:
            await h.close()

    run(scenario())


def test_auto_complete_conflict_fails_load(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            with pytest.raises(InferenceError) as info:
                await h.load("auto", AUTO, 'backend: "python"\ninput [ { name: "IN" data_type: TYPE_INT32 dims: [3] } ]\n')
            assert "configuration expects datatype TYPE_INT32 for input 'IN', model provides TYPE_FP32" in info.value.message
        finally:
            await h.close()

    run(scenario())


def test_load_failure_is_reported(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            with pytest.raises(InferenceError) as info:
                await h.load("broken", "class TritonPythonModel:\n    def initialize(self, args):\n        raise RuntimeError('nope')\n",
                             'backend: "python"\n')
            assert "RuntimeError: nope" in info.value.message
        finally:
            await h.close()
        assert not stub_processes()

    run(scenario())


def test_two_backends_with_different_run_ids(tmp_path: Path) -> None:
    async def scenario() -> None:
        h1 = Harness(tmp_path / "a", run_id="server-one")
        h2 = Harness(tmp_path / "b", run_id="server-two")
        try:
            i1 = await h1.load("add_sub", ADD_SUB, ADD_SUB_CONFIG)
            i2 = await h2.load("add_sub", ADD_SUB, ADD_SUB_CONFIG)
            a = np.ones(4, np.float32)
            r1, r2 = await asyncio.gather(
                h1.infer(request("add_sub", {"INPUT0": a, "INPUT1": a})),
                h2.infer(request("add_sub", {"INPUT0": a * 3, "INPUT1": a})),
            )
            np.testing.assert_array_equal(r1.output("OUTPUT0").array, a * 2)
            np.testing.assert_array_equal(r2.output("OUTPUT0").array, a * 4)
            maps1 = Path(f"/proc/{i1.pid}/maps").read_text()
            maps2 = Path(f"/proc/{i2.pid}/maps").read_text()
            assert "naiad-server-one-" in maps1 and "naiad-server-two-" not in maps1
            assert "naiad-server-two-" in maps2 and "naiad-server-one-" not in maps2
        finally:
            await h1.close()
            await h2.close()

    run(scenario())


def test_logger_and_metrics(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await h.load("logger", LOGGER, numeric_config("logger", "TYPE_FP32"))
            with caplog.at_level(logging.DEBUG, logger="naiad.backends.python"):
                resp = await h.infer(request("logger", {"IN": np.zeros(1, np.float32)}))
                await asyncio.sleep(0.05)
            assert resp.output("V").array[0] == 5.0
            got = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "naiad.backends.python"]
            assert (logging.INFO, "hello from the stub") in got
            assert (logging.WARNING, "careful") in got
            assert (logging.ERROR, "oops") in got
            assert (logging.WARNING, "leveled") in got
            # a verbose line reaches the parent, whose live log settings decide (kernel.logs)
            assert (logging.DEBUG, "chatty") in got
            record = next(r for r in caplog.records if r.getMessage() == "hello from the stub")
            assert record.pathname.endswith("model.py") and record.lineno == 7
        finally:
            await h.close()

    run(scenario())


def test_decoupled_execute_error_and_wrong_return(tmp_path: Path) -> None:
    source = '''
import triton_python_backend_utils as pb_utils
class TritonPythonModel:
    def execute(self, requests):
        if "raise" in requests[0].parameters():
            raise RuntimeError("decoupled boom")
        return []
'''
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await h.load("dec", source, numeric_config("dec", "TYPE_FP32") + "model_transaction_policy { decoupled: true }\n")
            for mode, needle in (("raise", "RuntimeError: decoupled boom"), ("list", "must return None")):
                sink = QueueSink()
                await h.instances["dec"].execute([request("dec", {"IN": np.zeros(1, np.float32)}, parameters={mode: 1})], [sink])
                resp = await asyncio.wait_for(sink.queue.get(), 5)
                assert resp.error is not None and needle in resp.error.message
                assert resp.final
        finally:
            await h.close()

    run(scenario())
