"""The sequence batcher of one model version: its lifecycle, its instances (added and
removed by reloads), enqueueing, and what a request looks like to the model (controls and
implicit state added, state outputs taken back)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import numpy as np

from naiad.kernel.inference.backend import ModelInstance
from naiad.kernel.inference.datatypes import WIRE_TO_NUMPY
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, RequestedOutput, ResponseSink, Tensor

from ..recorder import StatsRecorder
from .direct import DirectBatcher
from .oldest import OldestBatcher
from .settings import END, START, SequenceSettings
from .slots import RUNNING, Item, Leaving, Slot, SlotTable

log = logging.getLogger("naiad.services.models")


class SequenceScheduler(SlotTable):
    """The sequence batcher of one model version (same interface as `Scheduler`)."""

    _iterative_ids = itertools.count(1)

    def __init__(self, model_name: str, version: int, instances: Sequence[ModelInstance], config: Any,
                 model_dir: Path | None, recorder: StatsRecorder, spawn: Callable[[Any, str], asyncio.Task],
                 declared_outputs: Sequence[str] = (), native_batcher: bool = True) -> None:
        self.model_name = model_name
        self.native_batcher = native_batcher  # the oldest strategy's dynamic batchers: native queue
        self.version = version
        self.settings = SequenceSettings(config, model_dir)
        self.recorder = recorder
        self._spawn = spawn
        self.declared_outputs = tuple(declared_outputs)
        self._config = config
        self._order = itertools.count()
        self._batcher_ids = itertools.count()
        self.batchers: list[Any] = [self._new_batcher(inst) for inst in instances]
        self._init_slots()
        self.closing = False
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------------ lifecycle --

    @property
    def size(self) -> int:
        return sum(len(s.queue) for b in self.batchers for s in b.slots) + sum(len(b.queue) for b in self.backlog)

    def _new_batcher(self, instance: ModelInstance) -> Any:
        index = next(self._batcher_ids)
        if self.settings.oldest:
            return OldestBatcher(self, index, instance, self._config, self.recorder, self._spawn, self._order)
        return DirectBatcher(self, index, instance, self.settings.slots_per_instance, self._order)

    def _start_batcher(self, b: Any) -> None:
        if isinstance(b, DirectBatcher):
            b.task = self._spawn(b.run(), f"{self.model_name}:{self.version}:sequence{b.index}")
            self._tasks.append(b.task)
        else:
            b.inner.start()

    def start(self) -> None:
        for b in self.batchers:
            self._start_batcher(b)
        self._tasks.append(self._spawn(self._reap(), f"{self.model_name}:{self.version}:sequence-reaper"))

    async def drain_and_stop(self, timeout: float | None = None) -> None:
        self.closing = True
        for b in self.batchers:
            b.wake()
        deadline = None if timeout is None else time.monotonic() + timeout
        while (self.backlog or any(b.busy() for b in self.batchers)) and (
                deadline is None or time.monotonic() < deadline):
            await asyncio.sleep(0.01)
        err = InferenceError.unavailable(f"model '{self.model_name}' is unloading")
        for b in self.batchers:
            for s in b.slots:
                while s.queue:
                    self._finish_queued(s.queue.popleft(), err)
        while self.backlog:
            for item in self.backlog.popleft().queue:
                self._finish_queued(item, err)
        for b in self.batchers:
            if isinstance(b, OldestBatcher):
                await b.inner.drain_and_stop(timeout)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # ------------------------------------------------------------------ instance updates --

    def add_instances(self, instances: Sequence[ModelInstance]) -> None:
        for inst in instances:
            b = self._new_batcher(inst)
            self.batchers.append(b)
            self._start_batcher(b)
            for slot in b.slots:
                self._release_slot(slot)  # a new slot: to the oldest backlogged sequence, else free

    async def remove_instances(self, instances: Sequence[ModelInstance],
                               close: Callable[[ModelInstance], Awaitable[None]]) -> None:
        """As Triton: the removed instances' free slots go at once; a slot that holds a
        sequence stays until the sequence ends, and an instance is closed when its last
        slot has gone (and its last request has run)."""
        gone = {id(i) for i in instances}
        leaving = [b for b in self.batchers if id(b.instance) in gone]
        for b in leaving:
            b.leaving = Leaving({slot for slot in b.slots if slot.corrid is not None}, close)
        self._free = [e for e in self._free if e[2].batcher.leaving is None]
        heapq.heapify(self._free)
        await asyncio.gather(*(self._retire(b) for b in leaving if not b.leaving.held))

    async def _retire(self, b: Any) -> None:
        """Close a removed batcher's instance once its requests have run."""
        try:
            while b.busy():
                await asyncio.sleep(0.01)
            if b in self.batchers:
                self.batchers.remove(b)
            if isinstance(b, DirectBatcher):
                if b.task is not None:
                    b.task.cancel()
                    await asyncio.gather(b.task, return_exceptions=True)
            else:
                await b.inner.drain_and_stop()
            await b.leaving.close(b.instance)
        except Exception:  # noqa: BLE001 - a spawned task must not take the service down
            log.exception("model '%s': closing a removed instance failed", self.model_name)

    # ------------------------------------------------------------------ enqueue --

    def enqueue(self, request: InferenceRequest, sink: ResponseSink, batch_size: int) -> None:
        if self.closing:
            raise InferenceError.unavailable(
                "Server is stopping, scheduler for model has stopped accepting new inference requests")
        if batch_size > 1:
            raise InferenceError.invalid(
                f"inference request to model '{self.model_name}' must specify batch-size 1 due to requirements "
                f"of sequence batcher")
        corrid = request.sequence_id
        if corrid == 0 or corrid == "":
            if not self.settings.iterative:
                raise InferenceError.invalid(
                    f"inference request to model '{self.model_name}' must specify a non-zero or non-empty "
                    f"correlation ID")
            corrid = request.sequence_id = next(self._iterative_ids)
            request.sequence_start = True
        item = Item(request, sink, corrid, owner=self.settings.iterative and request.sequence_start)
        self._place(item)
        self.recorder.queued()
        if request.trace is not None:
            request.trace.stamp("QUEUE_START", item.enqueue_ns)
        request.cancel.on_cancel(lambda: self._cancel(item))

    # ------------------------------------------------------------------ batch preparation --

    def _take(self, item: Item, slot: Slot) -> None:
        """Turn a queued request into what the model sees: its inputs plus controls and state."""
        settings = self.settings
        request = item.request
        item.where = None
        item.slot = slot
        item.state = RUNNING
        item.released = False
        item.rescheduled = False
        slot.in_flight += 1
        if request.sequence_start or slot.states is None:
            slot.states = settings.initial_states()
        item.states = slot.states
        inputs = list(item.base_inputs)
        start, end = request.sequence_start, request.sequence_end
        for f in settings.flags:
            if f.kind == START:
                inputs.append(f.true if start else f.false)
            elif f.kind == END:
                inputs.append(f.true if end else f.false)
            else:
                inputs.append(f.true)
        if settings.corrid is not None:
            inputs.append(settings.corrid_tensor(item.corrid))
        for st in settings.states:
            inputs.append(slot.states[st.input_name])
        request.inputs = inputs
        if settings.states:
            # State outputs are not config outputs: ask for them by name, or a backend that
            # returns only the config's outputs (Triton's Python backend does) drops them.
            asked = item.client_outputs if item.client_outputs is not None else [
                RequestedOutput(name) for name in self.declared_outputs]
            wanted = {o.name for o in asked}
            request.outputs = list(asked) + [
                RequestedOutput(s.output_name) for s in settings.states if s.output_name not in wanted]

    def _null_request(self, rep: Item, slot: Slot) -> InferenceRequest:
        """A stand-in for an idle slot: a real request's shapes, zeros, READY false."""
        settings = self.settings
        inputs = []
        for t in rep.base_inputs:
            if t.datatype == "BYTES":
                arr = np.full(t.shape, b"", dtype=object)
            else:
                arr = np.zeros(t.shape, dtype=WIRE_TO_NUMPY[t.datatype])
            inputs.append(Tensor(t.name, t.datatype, t.shape, array=arr))
        for f in settings.flags:
            inputs.append(f.false)
        if settings.corrid is not None:
            inputs.append(settings.corrid_tensor(0))
        for st in settings.states:
            inputs.append(st.initial)
        outputs = rep.request.outputs
        return InferenceRequest(self.model_name, inputs, model_version=str(self.version), outputs=outputs,
                                protocol="null")

    def _on_response(self, item: Item, response: InferenceResponse) -> None:
        settings = self.settings
        request = item.request
        if settings.states and response.error is None and response.outputs:
            kept = []
            client = {o.name for o in item.client_outputs} if item.client_outputs is not None else None
            for t in response.outputs:
                st = settings.state_outputs.get(t.name)
                if st is None:
                    kept.append(t)
                    continue
                if item.states is not None:
                    item.states[st.input_name] = Tensor(st.input_name, t.datatype, t.shape, array=t._array, raw=t._raw)
                if t.name in self.declared_outputs and (client is None or t.name in client):
                    kept.append(t)
            response.outputs = kept
        if response.final:
            request.outputs = item.client_outputs
