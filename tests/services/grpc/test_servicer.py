"""The servicer's stream logic (ordering, empty finals, errors, cancellation, drain) with a
scripted bus and call: pure logic, no network. Everything on the wire is tested against a
real server in test_grpc_service.py."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from naiad.kernel.bus import Bus
from naiad.kernel.inference import messages as m
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, Tensor
from naiad.kernel.lifecycle import Lifecycle, Phase
from naiad.protos import grpc_service_pb2 as pb
from naiad.services.grpc.config import GrpcConfig
from naiad.services.grpc.servicer import SHUTTING_DOWN, Servicer


class ScriptedCall:
    """A StreamCall whose requests the test pushes and whose writes it reads."""

    def __init__(self, metadata=()):
        self._metadata = list(metadata)
        self.requests: asyncio.Queue = asyncio.Queue()
        self.written: list = []

    def metadata(self):
        return self._metadata

    async def read(self):
        return await self.requests.get()

    async def write(self, reply):
        self.written.append(reply.to_pb())

    def send(self, model: str, rid: str, **params) -> None:
        msg = pb.ModelInferRequest(model_name=model, id=rid)
        for k, v in params.items():
            msg.parameters[k].bool_param = v
        self.requests.put_nowait(msg)

    def close(self) -> None:
        self.requests.put_nowait(None)


class Harness:
    def __init__(self, **config):
        self.bus = Bus()
        self.lifecycle = Lifecycle()
        self.lifecycle.phase = Phase.RUNNING
        self.submitted: dict[str, tuple[InferenceRequest, object]] = {}
        self.arrived = asyncio.Event()
        self.decoupled_queries = 0

        async def is_decoupled(q: m.ModelIsDecoupledQuery) -> bool:
            self.decoupled_queries += 1
            if q.name == "unknown":
                raise InferenceError.not_found("Request for unknown model: 'unknown' is not found")
            return q.name.startswith("dec")

        async def stream_infer(msg: m.StreamInfer) -> None:
            if msg.request.model_name == "unknown":
                raise InferenceError.not_found("Request for unknown model: 'unknown' is not found")
            self.submitted[msg.request.id] = (msg.request, msg.sink)
            self.arrived.set()

        self.bus.handle(m.ModelIsDecoupledQuery, is_decoupled)
        self.bus.handle(m.StreamInfer, stream_infer)
        self.servicer = Servicer(self.bus, self.lifecycle, GrpcConfig(**config))

    async def wait_for(self, *ids: str) -> None:
        for _ in range(200):
            if all(i in self.submitted for i in ids):
                return
            await asyncio.sleep(0.001)
        raise AssertionError(f"requests {ids} never reached the bus")

    def respond(self, rid: str, value: int, final: bool = True) -> None:
        request, sink = self.submitted[rid]
        sink.send(InferenceResponse(request.model_name, "1", [Tensor.from_numpy("OUT", np.array([value], np.int32))],
                                    id=rid, final=final))


def summary(written):
    out = []
    for r in written:
        if r.error_message:
            out.append((r.infer_response.id, "error", r.error_message))
            continue
        resp = r.infer_response
        value = np.frombuffer(resp.raw_output_contents[0], np.int32)[0] if resp.raw_output_contents else None
        out.append((resp.id, value, resp.parameters["triton_final_response"].bool_param))
    return out


async def _settle():
    for _ in range(5):
        await asyncio.sleep(0)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_non_decoupled_responses_keep_request_order():
    async def main():
        h = Harness()
        call = ScriptedCall()
        task = asyncio.ensure_future(h.servicer.ModelStreamInfer(call))
        for rid in "abc":
            call.send("plain", rid)
        await h.wait_for("a", "b", "c")
        h.respond("c", 3)
        h.respond("b", 2)
        await _settle()
        assert call.written == []  # "a" has not answered yet
        h.respond("a", 1)
        call.close()
        await task
        assert summary(call.written) == [("a", 1, True), ("b", 2, True), ("c", 3, True)]
        assert h.lifecycle.inflight == 0
        assert h.decoupled_queries == 1  # asked once per model on a stream

    run(main())


def test_decoupled_responses_interleave_in_order_per_request():
    async def main():
        h = Harness()
        call = ScriptedCall()
        task = asyncio.ensure_future(h.servicer.ModelStreamInfer(call))
        call.send("dec", "a")
        call.send("dec", "b")
        await h.wait_for("a", "b")
        h.respond("b", 10, final=False)
        h.respond("a", 20, final=False)
        h.respond("b", 11, final=True)
        h.respond("a", 21, final=True)
        call.close()
        await task
        assert summary(call.written) == [("b", 10, False), ("a", 20, False), ("b", 11, True), ("a", 21, True)]

    run(main())


@pytest.mark.parametrize("how", ["config", "metadata"])
def test_ordered_streams_hold_later_requests(how):
    async def main():
        h = Harness(ordered_streams=(how == "config"))
        call = ScriptedCall(metadata=[("naiad-ordered-stream", "true")] if how == "metadata" else [])
        task = asyncio.ensure_future(h.servicer.ModelStreamInfer(call))
        call.send("dec", "a")
        call.send("dec", "b")
        await h.wait_for("a", "b")
        h.respond("b", 10, final=False)
        h.respond("a", 20, final=False)
        h.respond("b", 11, final=True)
        await _settle()
        assert summary(call.written) == [("a", 20, False)]
        h.respond("a", 21, final=True)
        call.close()
        await task
        assert summary(call.written) == [("a", 20, False), ("a", 21, True), ("b", 10, False), ("b", 11, True)]
        assert h.decoupled_queries == 0

    run(main())


def test_empty_final_response_only_when_asked():
    async def main():
        h = Harness()
        call = ScriptedCall()
        task = asyncio.ensure_future(h.servicer.ModelStreamInfer(call))
        call.send("dec", "quiet")
        call.send("dec", "asks", triton_enable_empty_final_response=True)
        await h.wait_for("quiet", "asks")
        h.respond("quiet", 1, final=False)
        h.submitted["quiet"][1].finish()
        h.respond("asks", 2, final=False)
        h.submitted["asks"][1].finish()
        call.close()
        await task
        written = call.written
        assert summary(written) == [("quiet", 1, False), ("asks", 2, False), ("asks", None, True)]
        last = written[-1].infer_response
        assert (last.model_name, last.id, list(last.outputs)) == ("dec", "asks", [])
        assert h.lifecycle.inflight == 0

    run(main())


def test_errors_are_messages_and_the_stream_goes_on():
    async def main():
        h = Harness()
        call = ScriptedCall()
        task = asyncio.ensure_future(h.servicer.ModelStreamInfer(call))
        call.send("unknown", "u")  # refused on submission
        msg = pb.ModelInferRequest(model_name="plain", id="bad")
        msg.parameters["triton_x"].bool_param = True  # refused by the converter
        call.requests.put_nowait(msg)
        call.send("plain", "ok")
        await h.wait_for("ok")
        request, sink = h.submitted["ok"]
        sink.send(InferenceResponse("plain", "1", id="ok", error=InferenceError.invalid("bad shape")))
        call.close()
        await task
        got = summary(call.written)
        assert got[0] == ("u", "error", "Request for unknown model: 'unknown' is not found")
        assert got[1][0:2] == ("bad", "error") and "reserved for Triton usage" in got[1][2]
        assert got[2] == ("ok", "error", "bad shape")
        assert call.written[2].infer_response.parameters["triton_final_response"].bool_param is True
        assert h.lifecycle.inflight == 0

    run(main())


def test_cancelling_the_stream_cancels_its_requests():
    async def main():
        h = Harness()
        call = ScriptedCall()
        task = asyncio.ensure_future(h.servicer.ModelStreamInfer(call))
        call.send("dec", "a")
        call.send("plain", "b")
        await h.wait_for("a", "b")
        assert h.lifecycle.inflight == 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert h.submitted["a"][0].cancel.cancelled and h.submitted["b"][0].cancel.cancelled
        assert h.lifecycle.inflight == 0
        h.respond("a", 1)  # a late response after the stream closed goes nowhere
        assert call.written == []

    run(main())


def test_drain_refuses_new_requests_and_ends_idle_streams():
    async def main():
        h = Harness()
        call = ScriptedCall()
        task = asyncio.ensure_future(h.servicer.ModelStreamInfer(call))
        call.send("plain", "a")
        await h.wait_for("a")
        h.lifecycle.phase = Phase.DRAINING
        h.servicer.drain()
        call.send("plain", "late")
        await _settle()
        assert not task.done()  # "a" still runs
        h.respond("a", 1)
        await task  # ends without the client closing
        assert summary(call.written) == [("late", "error", SHUTTING_DOWN), ("a", 1, True)] or \
            summary(call.written) == [("a", 1, True), ("late", "error", SHUTTING_DOWN)]
        assert h.lifecycle.inflight == 0
        with pytest.raises(InferenceError) as e:
            await h.servicer.ModelStreamInfer(ScriptedCall())
        assert e.value.message == SHUTTING_DOWN

    run(main())


def test_restricted_protocol_and_guards():
    async def main():
        h = Harness(restricted_protocol=["inference,health:key=secret"])
        with pytest.raises(InferenceError) as e:
            await h.servicer.ModelStreamInfer(ScriptedCall())
        assert e.value.message == "This protocol is restricted, expecting header 'triton-grpc-protocol-key'"

        async def live(_):
            return True

        from naiad.kernel.messages import ServerLiveQuery
        h.bus.handle(ServerLiveQuery, live)
        handler = h.servicer.handler("ServerLive")
        with pytest.raises(InferenceError, match="restricted"):
            await handler(pb.ServerLiveRequest(), ScriptedCall())
        ok = await handler(pb.ServerLiveRequest(), ScriptedCall([("triton-grpc-protocol-key", "secret")]))
        assert ok.live is True
        h.lifecycle.phase = Phase.DRAINING
        ok = await handler(pb.ServerLiveRequest(), ScriptedCall([("triton-grpc-protocol-key", "secret")]))
        assert ok.live is True  # health answers while draining
        with pytest.raises(InferenceError, match="shutting down"):
            await h.servicer.handler("ServerMetadata")(pb.ServerMetadataRequest(), ScriptedCall())

    run(main())
