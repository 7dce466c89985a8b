"""Edge cases of the Python backend: memory growth, lifetimes, threads, misuse."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from naiad.kernel.inference.errors import ErrorCode
from naiad.kernel.inference.types import QueueSink

from support.python_backend import ADD_SUB, ADD_SUB_CONFIG, Harness, request, run

pytestmark = pytest.mark.timeout(120)

ANY_CONFIG = '''
backend: "python"
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
'''
DECOUPLED_CONFIG = ANY_CONFIG + "model_transaction_policy { decoupled: true }\n"

IDENTITY = '''
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(t.name() + "_OUT", t.as_numpy()) for t in r.inputs()])
                for r in requests]
'''

KEEPER = '''
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.kept = None

    def execute(self, requests):
        out = []
        for r in requests:
            previous = self.kept
            self.kept = r.inputs()[0].as_numpy()[1:]   # a view into shared memory, kept
            if previous is None:
                previous = np.zeros(0, np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("PREV", previous.copy())]))
        return out
'''

MISUSE = '''
import json
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        try:
            pb_utils.InferenceRequest(model_name="x", inputs=[], requested_output_names=[]).exec()
            self.bls_in_init = "allowed"
        except pb_utils.TritonModelException as exc:
            self.bls_in_init = str(exc)

    def execute(self, requests):
        out = []
        for r in requests:
            mode = json.loads(r.parameters()).get("mode")
            if mode == "sender":
                r.get_response_sender()
            if mode == "reschedule":
                r.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
                out.append(None)
                continue
            info = np.array([self.bls_in_init.encode()], dtype=np.object_)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("INFO", info)]))
        return out
'''

SENDER_MISUSE = '''
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            s = r.get_response_sender()
            s.send(pb_utils.InferenceResponse([pb_utils.Tensor("A", np.ones(1, np.float32))]),
                   flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            errors = []
            for attempt in (lambda: s.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL),
                            lambda: s.send(None, 0)):
                try:
                    attempt()
                except pb_utils.TritonModelException as exc:
                    errors.append(str(exc))
            pb_utils.Logger.log_info("|".join(errors))
        return None
'''

THREAD_BLS = '''
import threading
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            sender = r.get_response_sender()
            x = r.inputs()[0].as_numpy().copy()
            threading.Thread(target=self._work, args=(sender, x)).start()

    def _work(self, sender, x):
        for k in range(3):
            req = pb_utils.InferenceRequest(
                model_name="add_sub",
                inputs=[pb_utils.Tensor("INPUT0", x + k), pb_utils.Tensor("INPUT1", np.ones(4, np.float32))],
                requested_output_names=["OUTPUT0"])
            resp = req.exec()
            sender.send(pb_utils.InferenceResponse([pb_utils.get_output_tensor_by_name(resp, "OUTPUT0")]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
'''

ASYNC_DECOUPLED = '''
import asyncio
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    async def execute(self, requests):
        for r in requests:
            asyncio.get_running_loop().create_task(self._stream(r.get_response_sender(), r.request_id()))
        return None

    async def _stream(self, sender, rid):
        for i in range(4):
            await asyncio.sleep(0.01)
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("I", np.array([i], np.int32))],
                                                   parameters={"rid": rid}))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
'''

CONTROL = '''
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        pb_utils.load_model("other", config='{"backend": "python"}', files={"file:1/model.py": b"print(1)"})
        pb_utils.unload_model("other", unload_dependents=True)
        try:
            pb_utils.load_model("missing")
            failed = ""
        except pb_utils.TritonModelException as exc:
            failed = str(exc)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("F", np.array([failed.encode()], dtype=np.object_))])
                for _ in requests]
'''


def test_regions_grow_and_big_batches_use_shared_memory(tmp_path: Path) -> None:
    async def scenario() -> None:
        small = {"shm-default-byte-size": "65536", "shm-growth-byte-size": "65536"}
        h = Harness(tmp_path, config=small)
        try:
            inst = await h.load("identity", IDENTITY, ANY_CONFIG)
            arrays = [np.full(30000, i, np.float32) for i in range(6)]  # 120 KB each > a region
            resps = await h.batch("identity", [request("identity", {"IN": a}) for a in arrays])
            for a, r in zip(arrays, resps):
                np.testing.assert_array_equal(r.output("IN_OUT").array, a)
            # 1500 requests in one batch: the metadata is too big for a packet (LARGE)
            reqs = [request("identity", {"IN": np.array([i], np.float32)}, id=f"r{i}") for i in range(1500)]
            resps = await h.batch("identity", reqs)
            assert [float(r.output("IN_OUT").array[0]) for r in resps] == list(range(1500))
            assert [r.id for r in resps] == [f"r{i}" for i in range(1500)]
            assert inst.session.ep.arena.live == 0
            assert max(r.size for r in inst.session.ep.arena.regions.values()) > 65536  # grew to fit
        finally:
            await h.close()

    run(scenario())


def test_inputs_a_model_keeps_stay_valid(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            inst = await h.load("keeper", KEEPER, ANY_CONFIG)
            first = np.arange(5, dtype=np.float32)
            r1 = await h.infer(request("keeper", {"IN": first}))
            assert r1.output("PREV").shape == (0,)
            # the first input's block is still pinned by the model; later batches must not
            # overwrite it
            assert inst.session.ep.arena.live == 1
            for k in range(5):
                r = await h.infer(request("keeper", {"IN": np.full(5, 100 + k, np.float32)}))
                expected = first[1:] if k == 0 else np.full(4, 100 + k - 1, np.float32)
                np.testing.assert_array_equal(r.output("PREV").array, expected)
            # only the block the model still holds stays allocated
            assert inst.session.ep.arena.live == 1
        finally:
            await h.close()

    run(scenario())


def test_api_misuse_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await h.load("misuse", MISUSE, ANY_CONFIG)
            r = await h.infer(request("misuse", {"IN": np.zeros(1, np.float32)}))
            assert r.output("INFO").array[0] == b"BLS is only supported during the 'execute' function."
            r = await h.infer(request("misuse", {"IN": np.zeros(1, np.float32)}, parameters={"mode": "sender"}))
            assert r.error is not None
            assert "'get_response_sender' function must be called only when the model is using the decoupled" in r.error.message
            r = await h.infer(request("misuse", {"IN": np.zeros(1, np.float32)}, parameters={"mode": "reschedule"}))
            assert r.error is not None and "RELEASE_RESCHEDULE" in r.error.message  # needs iterative sequences

            await h.load("sender", SENDER_MISUSE, DECOUPLED_CONFIG)
            sink = QueueSink()
            await h.instances["sender"].execute([request("sender", {"IN": np.zeros(1, np.float32)})], [sink])
            got = [x async for x in sink]
            assert len(got) == 1 and got[0].final
            await asyncio.sleep(0.05)
            logs = [rec.getMessage() for rec in caplog.records if rec.name == "naiad.backends.python"]
            assert any(
                "Unable to send response. Response sender has been closed." in m
                and "|" in m
                for m in logs
            ), logs
        finally:
            await h.close()

    with caplog.at_level("INFO", logger="naiad.backends.python"):
        run(scenario())


def test_bls_from_model_threads_while_main_thread_idles(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await h.load("add_sub", ADD_SUB, ADD_SUB_CONFIG)
            await h.load("tbls", THREAD_BLS, DECOUPLED_CONFIG.replace("[ -1 ]", "[ 4 ]"))
            sinks = [QueueSink() for _ in range(4)]
            reqs = [request("tbls", {"IN": np.full(4, 10 * i, np.float32)}) for i in range(4)]
            await h.instances["tbls"].execute(reqs, sinks)
            for i, sink in enumerate(sinks):
                got = [r.output("OUTPUT0").array.tolist() async for r in sink]
                assert got == [[10 * i + k + 1] * 4 for k in range(3)]
        finally:
            await h.close()

    run(scenario())


def test_async_decoupled_streams(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            inst = await h.load("adec", ASYNC_DECOUPLED, DECOUPLED_CONFIG)
            assert inst.is_async and inst.max_inflight == 4
            sinks = [QueueSink() for _ in range(3)]
            await asyncio.gather(*[
                inst.execute([request("adec", {"IN": np.zeros(1, np.float32)}, id=f"s{i}")], [sinks[i]])
                for i in range(3)
            ])
            for i, sink in enumerate(sinks):
                got = [r async for r in sink]
                assert [int(r.output("I").array[0]) for r in got] == [0, 1, 2, 3]
                assert all(r.parameters == {"rid": f"s{i}"} for r in got)
        finally:
            await h.close()

    run(scenario())


def test_model_control_calls(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            await h.load("control", CONTROL, ANY_CONFIG)
            r = await h.infer(request("control", {"IN": np.zeros(1, np.float32)}))
            assert r.error is None, r.error
            assert r.output("F").array[0] == b"failed to load 'missing'"
            assert h.control_calls[:2] == [
                ("load", "other", '{"backend": "python"}', {"file:1/model.py": b"print(1)"}),
                ("unload", "other", True),
            ]
        finally:
            await h.close()

    run(scenario())


def test_many_instances_and_concurrent_streams(tmp_path: Path) -> None:
    streamer = '''
import threading, time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            n = int(r.inputs()[0].as_numpy()[0])
            s = r.get_response_sender()
            threading.Thread(target=self._go, args=(s, n)).start()

    def _go(self, s, n):
        for i in range(n):
            s.send(pb_utils.InferenceResponse([pb_utils.Tensor("V", np.arange(i, i + 50, dtype=np.int64))]))
        s.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
'''

    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            inst = await h.load("many", streamer, DECOUPLED_CONFIG)
            sinks = [QueueSink() for _ in range(16)]
            reqs = [request("many", {"IN": np.array([200], np.float32)}) for _ in range(16)]
            await inst.execute(reqs, sinks)
            for sink in sinks:
                got = [r.output("V").array[0] async for r in sink]
                assert got == list(range(200))
        finally:
            await h.close()

    run(scenario())


def test_spare_stub_serves_the_next_load(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path, config={"auto_complete": "false"})
        try:
            await h.load("first", IDENTITY, ANY_CONFIG)
            await asyncio.sleep(0.05)  # the refill runs on the loop
            spare = h.backend.spare._spare
            assert spare is not None and spare.exit_status() is None
            second = await h.load("second", IDENTITY, ANY_CONFIG)
            assert second.pid == spare.pid
            r = await h.infer(request("second", {"IN": np.ones(2, np.float32)}))
            np.testing.assert_array_equal(r.output("IN_OUT").array, np.ones(2, np.float32))
            maps = Path(f"/proc/{second.pid}/maps").read_text()
            assert "naiad-test-run-second_0_0-out" in maps  # named for its model once told
        finally:
            await h.close()
        assert spare.exit_status() is not None

        h = Harness(tmp_path, config={"auto_complete": "false", "spare_stub": "false"})
        try:
            await h.load("first", IDENTITY, ANY_CONFIG)
            await asyncio.sleep(0.05)
            assert h.backend.spare._spare is None
        finally:
            await h.close()

    run(scenario())


def test_bf16_passes_through_from_dlpack(tmp_path: Path) -> None:
    source = '''
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            t = r.inputs()[0]
            assert t.triton_dtype() == 14 and t.as_numpy().dtype.name == "uint16"
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack("OUT", t)]))
        return out
'''

    async def scenario() -> None:
        from naiad.kernel.inference.types import InferenceRequest, Tensor

        h = Harness(tmp_path)
        try:
            await h.load("bf16", source, ANY_CONFIG)
            bits = np.array([0x3F80, 0xC000, 0x0000], np.uint16)  # 1.0, -2.0, 0.0 in bfloat16
            resp = await h.infer(InferenceRequest("bf16", [Tensor.from_numpy("IN", bits, "BF16")]))
            assert resp.error is None, resp.error
            out = resp.output("OUT")
            assert out.datatype == "BF16"
            assert bytes(out.raw) == bits.tobytes()
        finally:
            await h.close()

    run(scenario())


def test_auto_complete_stub_is_reused_only_without_auto_complete_config(tmp_path: Path) -> None:
    from naiad.kernel.inference.backend import InstanceSpec, ModelSpec

    from support.python_backend import write_model

    with_ac = IDENTITY.replace(
        "class TritonPythonModel:\n",
        "class TritonPythonModel:\n    @staticmethod\n    def auto_complete_config(c):\n        return c\n\n",
    )

    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            for name, source, reused in (("plain", IDENTITY, True), ("withac", with_ac, False)):
                spec = write_model(tmp_path, name, source, ANY_CONFIG)
                config = await h.backend.auto_complete(spec.model_dir, 1, spec.config)
                primed = h.backend.primed.get(str(spec.model_dir / "1" / "model.py"))
                assert (primed is not None) == reused
                inst = await h.backend.create_instance(
                    ModelSpec(name, 1, spec.repository, spec.model_dir, config), InstanceSpec(f"{name}_0", "CPU"))
                if reused:
                    assert inst.pid == primed.pid
                h.instances[name] = inst
                r = await h.infer(request(name, {"IN": np.ones(3, np.float32)}))
                np.testing.assert_array_equal(r.output("IN_OUT").array, np.ones(3, np.float32))
            assert not h.backend.primed
        finally:
            await h.close()

    run(scenario())
