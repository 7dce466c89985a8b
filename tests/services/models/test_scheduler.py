"""The scheduler's batching rules (pure logic, with a recording instance standing in for a
backend): batches never exceed max_batch_size, shapes must match, preferred sizes go at
once, the queue delay bounds waiting, priorities order service, queue policies reject or
delay timed-out requests, cancelled requests never execute, a drain finishes what is
queued. Every rule runs against both batch queues: the native one (naiad.ext._batcher)
and its Python twin."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from naiad.kernel.inference.backend import ExecutionTimes, ModelInstance
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.model_config import parse_text
from naiad.kernel.inference.types import FutureSink, InferenceRequest, InferenceResponse, Tensor
from naiad.kernel.loop import run
from naiad.services.models.recorder import StatsRecorder
from naiad.ext import batcher
from naiad.services.models.scheduler import BatchingConfig, Scheduler

IMPLS = [
    pytest.param(True, id="native", marks=pytest.mark.skipif(not batcher.NATIVE, reason="_batcher is not built")),
    pytest.param(False, id="python"),
]


class RecordingInstance(ModelInstance):
    def __init__(self, delay: float = 0.0, gate: asyncio.Event | None = None):
        self.batches: list[list[str]] = []
        self.delay = delay
        self.gate = gate

    async def execute(self, requests, sinks):
        t0 = time.monotonic_ns()
        if self.gate is not None:
            await self.gate.wait()
        self.batches.append([r.id for r in requests])
        if self.delay:
            await asyncio.sleep(self.delay)
        for r, s in zip(requests, sinks):
            s.send(InferenceResponse(r.model_name, "1", [], id=r.id))
        t1 = time.monotonic_ns()
        return ExecutionTimes(t0, t0, t1, t1)

    async def close(self):
        pass


def _config(text: str):
    return parse_text('name: "m"\nbackend: "python"\n' + text)


def _request(i, rows=1, cols=4, priority=0, timeout_us=0):
    x = np.zeros((rows, cols), np.float32)
    return InferenceRequest("m", [Tensor.from_numpy("IN", x)], id=str(i), priority=priority, timeout_us=timeout_us)


def _make(config_text: str, instance: RecordingInstance | list[RecordingInstance], native: bool):
    tasks: set = set()

    def spawn(coro, name):
        t = asyncio.get_running_loop().create_task(coro, name=name)
        tasks.add(t)
        return t

    instances = instance if isinstance(instance, list) else [instance]
    sched = Scheduler("m", 1, instances, BatchingConfig(_config(config_text)), StatsRecorder("m", 1), spawn,
                      native=native)
    assert sched.native == native
    sched.start()
    return sched


def _submit(sched, req, batch=1):
    fut = asyncio.get_running_loop().create_future()
    sched.enqueue(req, FutureSink(fut), batch)
    return fut


@pytest.mark.parametrize("native", IMPLS)
class TestScheduler:
    """Each rule, once per batch queue."""

    def test_no_batching_runs_one_request_at_a_time(self, native):
        inst = RecordingInstance()

        async def main():
            sched = _make("max_batch_size: 0", inst, native)
            futs = [_submit(sched, _request(i)) for i in range(5)]
            await asyncio.gather(*futs)
            await sched.drain_and_stop()

        run(main())
        assert inst.batches == [[str(i)] for i in range(5)]

    def test_batches_never_exceed_max_batch_size_and_respect_shapes(self, native):
        gate = asyncio.Event()
        inst = RecordingInstance(gate=gate)

        async def main():
            sched = _make("max_batch_size: 4\ndynamic_batching { }", inst, native)
            first = _submit(sched, _request("first"))
            await asyncio.sleep(0.01)  # the worker holds "first" at the gate
            futs = [_submit(sched, _request(i, rows=1 if i != 3 else 2), batch=1 if i != 3 else 2) for i in range(6)]
            futs.append(_submit(sched, _request("other-shape", cols=5)))
            gate.set()
            await asyncio.gather(first, *futs)
            await sched.drain_and_stop()

        run(main())
        assert inst.batches[0] == ["first"]
        sizes = {"3": 2}
        for batch in inst.batches:
            assert sum(sizes.get(i, 1) for i in batch) <= 4
        assert ["other-shape"] in inst.batches  # never batched with 4-column requests
        assert sum(len(b) for b in inst.batches) == 8
        assert max(len(b) for b in inst.batches) > 1  # concurrent requests were batched

    def test_preferred_size_is_sent_at_once_and_delay_bounds_the_rest(self, native):
        inst = RecordingInstance()

        async def main():
            sched = _make("max_batch_size: 8\ndynamic_batching { preferred_batch_size: [ 4 ] "
                          "max_queue_delay_microseconds: 300000 }", inst, native)
            t0 = time.monotonic()
            futs = [_submit(sched, _request(i)) for i in range(6)]
            await asyncio.gather(*futs[:4])
            first_done = time.monotonic() - t0
            await asyncio.gather(*futs)
            all_done = time.monotonic() - t0
            await sched.drain_and_stop()
            return first_done, all_done

        first_done, all_done = run(main())
        assert inst.batches[0] == ["0", "1", "2", "3"]
        assert inst.batches[1] == ["4", "5"]
        assert first_done < 0.2  # did not wait for the queue delay
        assert all_done >= 0.25  # the remainder waited for more requests, up to the delay

    def test_priorities_are_served_in_order(self, native):
        gate = asyncio.Event()
        inst = RecordingInstance(gate=gate)

        async def main():
            sched = _make("max_batch_size: 1\ndynamic_batching { priority_levels: 3 default_priority_level: 2 }",
                          inst, native)
            hold = _submit(sched, _request("hold"))
            await asyncio.sleep(0.01)
            futs = [_submit(sched, _request("low", priority=3)), _submit(sched, _request("default")),
                    _submit(sched, _request("high", priority=1))]
            gate.set()
            await asyncio.gather(hold, *futs)
            await sched.drain_and_stop()

        run(main())
        assert inst.batches == [["hold"], ["high"], ["default"], ["low"]]

    def test_queue_policy_reject_vs_delay_and_max_queue_size(self, native):
        gate = asyncio.Event()
        inst = RecordingInstance(gate=gate)

        async def main():
            sched = _make(
                "max_batch_size: 1\ndynamic_batching { priority_levels: 2 default_priority_level: 1\n"
                " priority_queue_policy { key: 1 value: { timeout_action: REJECT default_timeout_microseconds: 50000 "
                "max_queue_size: 2 } }\n"
                " priority_queue_policy { key: 2 value: { timeout_action: DELAY default_timeout_microseconds: 50000 } } }",
                inst, native)
            hold = _submit(sched, _request("hold"))
            await asyncio.sleep(0.01)
            rejected = _submit(sched, _request("reject-me", priority=1))
            delayed = _submit(sched, _request("delay-me", priority=2))
            _submit(sched, _request("fill", priority=1))
            with pytest.raises(InferenceError, match="Exceeds maximum queue size"):
                _submit(sched, _request("overflow", priority=1))
            await asyncio.sleep(0.15)  # both timed out while the instance was busy
            gate.set()
            with pytest.raises(InferenceError, match="Request timeout expired"):
                await rejected
            response = await delayed  # DELAY: still served, after the others
            assert response.id == "delay-me"
            await hold
            await sched.drain_and_stop()

        run(main())
        flat = [i for b in inst.batches for i in b]
        assert "reject-me" not in flat and "fill" not in flat  # fill timed out too (REJECT level)
        assert flat[-1] == "delay-me"

    def test_cancelled_request_never_executes(self, native):
        gate = asyncio.Event()
        inst = RecordingInstance(gate=gate)

        async def main():
            sched = _make("max_batch_size: 0", inst, native)
            hold = _submit(sched, _request("hold"))
            await asyncio.sleep(0.01)
            req = _request("cancel-me")
            fut = _submit(sched, req)
            req.cancel.cancel()
            gate.set()
            await hold
            with pytest.raises(InferenceError, match="cancelled"):
                await fut
            await sched.drain_and_stop()

        run(main())
        assert inst.batches == [["hold"]]

    def test_drain_finishes_what_is_queued_then_refuses(self, native):
        gate = asyncio.Event()
        inst = RecordingInstance(gate=gate)

        async def main():
            sched = _make("max_batch_size: 2\ndynamic_batching { max_queue_delay_microseconds: 5000000 }", inst, native)
            futs = [_submit(sched, _request(i)) for i in range(5)]
            await asyncio.sleep(0.01)
            drain = asyncio.ensure_future(sched.drain_and_stop(timeout=10))
            await asyncio.sleep(0.01)
            with pytest.raises(InferenceError, match="unloading"):
                _submit(sched, _request("late"))
            t0 = time.monotonic()
            gate.set()
            await drain
            assert time.monotonic() - t0 < 2  # closing: the 5 s queue delay no longer holds a batch back
            return [f.result().id for f in futs]

        assert run(main()) == ["0", "1", "2", "3", "4"]
        assert sorted(i for b in inst.batches for i in b) == ["0", "1", "2", "3", "4"]
        assert max(len(b) for b in inst.batches) == 2

    def test_a_second_idle_instance_does_not_wait_for_the_delay(self, native):
        one, two = RecordingInstance(delay=0.2), RecordingInstance(delay=0.2)

        async def main():
            sched = _make("max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 3000000 }",
                          [one, two], native)
            await asyncio.sleep(0.01)
            t0 = time.monotonic()
            await asyncio.gather(*[_submit(sched, _request(i)) for i in range(3)])
            elapsed = time.monotonic() - t0
            await sched.drain_and_stop()
            return elapsed

        assert run(main()) < 1.5  # not the 3 s delay
        assert sorted(i for b in one.batches + two.batches for i in b) == ["0", "1", "2"]

    def test_removed_instance_takes_no_more_batches(self, native):
        gate = asyncio.Event()
        keep, gone = RecordingInstance(), RecordingInstance(gate=gate)
        closed = []

        async def main():
            async def close(inst):
                closed.append(inst)

            sched = _make("max_batch_size: 0", gone, native)
            busy = _submit(sched, _request("busy"))  # `gone` holds it at the gate
            await asyncio.sleep(0.01)
            queued = [_submit(sched, _request(i)) for i in range(3)]
            sched.add_instances([keep])
            removal = asyncio.ensure_future(sched.remove_instances([gone], close))
            await asyncio.gather(*queued)
            gate.set()
            await removal
            await busy
            await sched.drain_and_stop()

        run(main())
        assert gone.batches == [["busy"]]
        assert keep.batches == [["0"], ["1"], ["2"]]
        assert closed == [gone]
