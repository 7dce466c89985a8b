"""execute_batch, the one way schedulers run a batch: the instance's answer passes through;
an instance that raises answers every request with its error (INTERNAL words for a
non-InferenceError), logged once; a scheduler stopped mid-batch answers UNAVAILABLE."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest

from naiad.kernel.inference.backend import ExecutionTimes, ModelInstance
from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.types import FutureSink, InferenceRequest, InferenceResponse, Tensor
from naiad.services.models.execution import execute_batch


class Instance(ModelInstance):
    """Answers each request, or raises `error`, or waits on `gate` (a model still running)."""

    def __init__(self, error: BaseException | None = None, gate: asyncio.Event | None = None) -> None:
        self.error = error
        self.gate = gate

    async def execute(self, requests, sinks):
        t0 = time.monotonic_ns()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        for r, s in zip(requests, sinks):
            s.send(InferenceResponse(r.model_name, "1", [], id=r.id))
        return ExecutionTimes(t0, t0, t0, time.monotonic_ns())

    async def close(self):
        pass


def _batch(n: int):
    loop = asyncio.get_running_loop()
    requests = [InferenceRequest("m", [Tensor.from_numpy("IN", np.zeros(2, np.float32))], id=str(i)) for i in range(n)]
    futures = [loop.create_future() for _ in range(n)]
    return requests, [FutureSink(f) for f in futures], futures


def test_answers_pass_through():
    async def main():
        requests, sinks, futures = _batch(3)
        times = await execute_batch(Instance(), requests, sinks, sinks, "m", "%s failed: %s", "m")
        assert isinstance(times, ExecutionTimes) and times.compute_end >= times.compute_start
        assert [f.result().id for f in futures] == ["0", "1", "2"]

    asyncio.run(main())


@pytest.mark.parametrize("raised, code, words", [
    (ValueError("boom"), ErrorCode.INTERNAL, "model 'm' instance failed: boom"),
    (InferenceError.invalid("bad input"), ErrorCode.INVALID_ARG, "bad input"),
])
def test_a_raising_instance_answers_every_request(caplog, raised, code, words):
    async def main():
        requests, sinks, futures = _batch(2)
        with caplog.at_level(logging.ERROR, logger="naiad.services.models"):
            times = await execute_batch(Instance(raised), requests, sinks, sinks, "m",
                                        "model '%s' version %d: execution failed: %s", "m", 3)
        assert times is None
        for f in futures:
            err = f.exception()
            assert isinstance(err, InferenceError) and err.code == code and err.message == words
        assert [r.getMessage() for r in caplog.records] == [f"model 'm' version 3: execution failed: {words}"]

    asyncio.run(main())


def test_a_stopped_scheduler_answers_unavailable():
    async def main():
        requests, sinks, futures = _batch(2)
        task = asyncio.create_task(execute_batch(Instance(gate=asyncio.Event()), requests, sinks, sinks, "m", "%s"))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for f in futures:
            err = f.exception()
            assert err.code == ErrorCode.UNAVAILABLE and err.message == "model 'm' stopped while executing"

    asyncio.run(main())
