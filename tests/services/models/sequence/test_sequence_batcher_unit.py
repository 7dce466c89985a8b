"""The sequence batcher's rules with a recording instance standing in for a backend:
slots per sequence, null rows, the backlog, control and state inputs, idle expiry,
cancellation, the oldest strategy and iterative rescheduling."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from naiad.ext import batcher
from naiad.kernel.inference.backend import ExecutionTimes, ModelInstance
from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.model_config import parse_text
from naiad.kernel.inference.types import FutureSink, InferenceRequest, InferenceResponse, Tensor
from naiad.services.models.recorder import StatsRecorder
from naiad.services.models.sequence import SequenceScheduler

CONTROLS = """
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END fp32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY bool_false_true: [ false, true ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
"""


class Recorder(ModelInstance):
    """Answers OUT = INPUT (+ STATE_IN when present, returned as STATE_OUT too) and notes
    each batch as rows of (corrid, start, end, ready)."""

    def __init__(self, delay: float = 0.0, reschedule_until: int = 0) -> None:
        self.batches: list[list[tuple]] = []
        self.delay = delay
        self.reschedule_until = reschedule_until  # iterative: run each request this many times
        self.runs: dict = {}

    async def execute(self, requests, sinks):
        t0 = time.monotonic_ns()
        rows = []
        for r in requests:
            v = {t.name: t.array.reshape(-1)[0] for t in r.inputs if t.name in ("START", "END", "READY", "CORRID")}
            rows.append((int(v.get("CORRID", 0)), int(v.get("START", 0)), int(v.get("END", 0)), bool(v.get("READY", 1))))
        self.batches.append(rows)
        if self.delay:
            await asyncio.sleep(self.delay)
        for r, s in zip(requests, sinks):
            x = r.input("INPUT").array.astype(np.int32)
            state = r.input("STATE_IN")
            total = x + (state.array if state is not None else 0)
            self.runs[r.sequence_id] = self.runs.get(r.sequence_id, 0) + 1
            if self.reschedule_until and self.runs[r.sequence_id] < self.reschedule_until:
                assert s.reschedule()
                continue
            outputs = [Tensor.from_numpy("OUT", total.astype(np.int32))]
            if state is not None:
                outputs.append(Tensor.from_numpy("STATE_OUT", total.astype(np.int32)))
            s.send(InferenceResponse("m", "1", outputs, id=r.id))
        t1 = time.monotonic_ns()
        return ExecutionTimes(t0, t0, t1, t1)

    async def close(self):
        pass


def _make(extra: str, instances, max_batch_size: int = 2, outputs=("OUT",), native_batcher: bool = True):
    text = f'name: "m" backend: "python" max_batch_size: {max_batch_size}\n' + \
        'input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n' + \
        "".join(f'output [ {{ name: "{o}" data_type: TYPE_INT32 dims: [ 1 ] }} ]\n' for o in outputs) + \
        f"sequence_batching {{ {extra} }}"
    tasks = set()

    def spawn(coro, name):
        t = asyncio.get_running_loop().create_task(coro, name=name)
        tasks.add(t)
        return t

    sched = SequenceScheduler("m", 1, instances, parse_text(text), None, StatsRecorder("m", 1), spawn, outputs,
                              native_batcher=native_batcher)
    sched.start()
    return sched


def _send(sched, corrid, x, start=False, end=False, rid=""):
    req = InferenceRequest("m", [Tensor.from_numpy("INPUT", np.array([[x]], np.int32))], id=rid or f"{corrid}:{x}",
                           sequence_id=corrid, sequence_start=start, sequence_end=end)
    fut = asyncio.get_running_loop().create_future()
    sched.enqueue(req, FutureSink(fut), 1)
    return fut, req


async def _out(fut):
    resp = await asyncio.wait_for(fut, 2)
    assert resp.error is None, resp.error
    return {t.name: int(t.array.reshape(-1)[0]) for t in resp.outputs}


def test_controls_slots_and_null_rows():
    inst = Recorder(delay=0.02)

    async def main():
        sched = _make(CONTROLS, [inst])
        a1, _ = _send(sched, 7, 1, start=True)
        b1, _ = _send(sched, 9, 10, start=True)
        await asyncio.gather(a1, b1)
        a2, _ = _send(sched, 7, 2, end=True)
        await a2
        b2, _ = _send(sched, 9, 20, end=True)  # slot 0 is free now: slot 1 gets a null row 0
        await b2
        await sched.drain_and_stop(1)

    asyncio.run(main())
    flat = [row for batch in inst.batches for row in batch]
    assert (7, 1, 0, True) in flat and (9, 1, 0, True) in flat and (7, 0, 1, True) in flat
    assert inst.batches[-1] == [(0, 0, 0, False), (9, 0, 1, True)]  # slot 0 idle: a null row keeps 9 in row 1


def test_unknown_sequence_needs_start_and_ids_are_required():
    async def main():
        sched = _make(CONTROLS, [Recorder()])
        with pytest.raises(InferenceError, match="must specify the START flag on the first request of the sequence"):
            _send(sched, 5, 1)
        with pytest.raises(InferenceError, match="must specify a non-zero or non-empty correlation ID"):
            _send(sched, 0, 1, start=True)
        fut = asyncio.get_running_loop().create_future()
        req = InferenceRequest("m", [Tensor.from_numpy("INPUT", np.zeros((2, 1), np.int32))], sequence_id=3,
                               sequence_start=True)
        with pytest.raises(InferenceError, match="must specify batch-size 1"):
            sched.enqueue(req, FutureSink(fut), 2)
        await sched.drain_and_stop(1)

    asyncio.run(main())


def test_backlog_waits_for_a_free_slot():
    inst = Recorder()

    async def main():
        sched = _make(CONTROLS, [inst], max_batch_size=1)  # one slot
        a1, _ = _send(sched, 1, 1, start=True)
        b1, _ = _send(sched, 2, 5, start=True)  # no slot: backlog
        b2, _ = _send(sched, 2, 6, end=True)
        await a1
        await asyncio.sleep(0.05)
        assert not b1.done() and len(sched.backlog) == 1
        a2, _ = _send(sched, 1, 2, end=True)  # ends sequence 1: sequence 2 takes the slot
        assert (await _out(a2))["OUT"] == 2
        assert (await _out(b1))["OUT"] == 5 and (await _out(b2))["OUT"] == 6
        await sched.drain_and_stop(1)

    asyncio.run(main())
    assert [b[0][0] for b in inst.batches] == [1, 1, 2, 2]


def test_idle_sequence_expires_with_tritons_error():
    async def main():
        sched = _make("max_sequence_idle_microseconds: 100000 " + CONTROLS, [Recorder()])
        f, _ = _send(sched, 4, 1, start=True)
        await f
        await asyncio.sleep(0.3)
        assert not sched.active
        with pytest.raises(InferenceError) as err:
            _send(sched, 4, 2)
        assert err.value.message == ("inference request for sequence 4 to model 'm' must specify the START flag "
                                     "on the first request of the sequence")
        await sched.drain_and_stop(1)

    asyncio.run(main())


def test_implicit_state_is_carried_and_reset_at_start():
    state = ('state [ { input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_INT32 dims: [ 1 ] '
             'initial_state { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true name: "zero" } } ]')

    async def main():
        sched = _make(state, [Recorder()])
        outs = []
        for i, x in enumerate([1, 2, 3]):
            f, _ = _send(sched, 8, x, start=i == 0, end=i == 2)
            outs.append(await _out(f))
        f, _ = _send(sched, 8, 10, start=True)
        outs.append(await _out(f))
        await sched.drain_and_stop(1)
        return outs

    outs = asyncio.run(main())
    assert [o["OUT"] for o in outs] == [1, 3, 6, 10]
    assert all("STATE_OUT" not in o for o in outs)  # state outputs stay inside


def test_cancelling_a_queued_request_ends_its_sequence():
    inst = Recorder(delay=0.2)

    async def main():
        sched = _make(CONTROLS, [inst], max_batch_size=1)
        a1, _ = _send(sched, 1, 1, start=True)  # executing for 0.2 s
        await asyncio.sleep(0.05)
        a2, req = _send(sched, 1, 2)
        b1, _ = _send(sched, 2, 7, start=True)  # backlog
        req.cancel.cancel()
        with pytest.raises(InferenceError) as err:
            await asyncio.wait_for(a2, 1)
        assert err.value.code == ErrorCode.CANCELLED
        await a1
        assert (await _out(b1))["OUT"] == 7  # the slot went to the backlogged sequence
        with pytest.raises(InferenceError, match="START flag"):
            _send(sched, 1, 3)
        await sched.drain_and_stop(1)

    asyncio.run(main())


@pytest.mark.parametrize("native", [
    pytest.param(True, id="native", marks=pytest.mark.skipif(not batcher.NATIVE, reason="_batcher is not built")),
    pytest.param(False, id="python")])
def test_oldest_keeps_one_request_per_sequence_in_flight_and_batches_sequences(native):
    inst = Recorder(delay=0.05)

    async def main():
        sched = _make("oldest { max_candidate_sequences: 4 max_queue_delay_microseconds: 20000 } " + CONTROLS,
                      [inst], max_batch_size=4, native_batcher=native)
        assert [b.inner.native for b in sched.batchers] == [native]  # the queue the switch asked for
        futs = []
        for cid in (1, 2, 3):
            for i in range(3):
                futs.append(_send(sched, cid, 10 * cid + i, start=i == 0, end=i == 2)[0])
        outs = [await _out(f) for f in futs]
        await sched.drain_and_stop(1)
        return outs

    outs = asyncio.run(main())
    assert [o["OUT"] for o in outs] == [10, 11, 12, 20, 21, 22, 30, 31, 32]
    for batch in inst.batches:
        ids = [row[0] for row in batch]
        assert len(ids) == len(set(ids))  # never two requests of one sequence in a batch
    assert max(len(b) for b in inst.batches) > 1


def test_iterative_sequence_reschedules_and_ends_on_release():
    inst = Recorder(reschedule_until=3)

    async def main():
        sched = _make("iterative_sequence: true " + CONTROLS, [inst])
        f, req = _send(sched, 0, 4)  # no correlation id: a sequence of its own
        out = await _out(f)
        assert req.sequence_id != 0
        await asyncio.sleep(0.01)
        assert not sched.active  # released without RESCHEDULE: the sequence is over
        await sched.drain_and_stop(1)
        return out, req.sequence_id

    out, cid = asyncio.run(main())
    assert out["OUT"] == 4 and inst.runs[cid] == 3
    rows = [row for batch in inst.batches for row in batch if row[3]]
    assert [r[1] for r in rows] == [1, 0, 0]  # START only on the first execution


def test_reschedule_is_refused_without_iterative_sequence():
    class Asks(Recorder):
        async def execute(self, requests, sinks):
            self.answers = [s.reschedule() for s in sinks]
            for r, s in zip(requests, sinks):
                s.send(InferenceResponse("m", "1", [], id=r.id))
            return ExecutionTimes(0, 0, 0, 0)

    inst = Asks()

    async def main():
        sched = _make(CONTROLS, [inst])
        f, _ = _send(sched, 3, 1, start=True, end=True)
        await f
        await sched.drain_and_stop(1)

    asyncio.run(main())
    assert inst.answers == [False]
