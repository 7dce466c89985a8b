"""The direct strategy: slots are the rows of a batch; one worker per instance takes the
next request of every slot that has one and fills idle rows below the highest busy slot
with null requests."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from naiad.kernel.inference.backend import ExecutionTimes, ModelInstance
from naiad.kernel.inference.types import ResponseSink

from ..execution import execute_batch
from ..recorder import AnswerWatch, Ran
from .slots import NULL_SINK, Item, Leaving, SeqSink, Slot

if TYPE_CHECKING:
    from .scheduler import SequenceScheduler


class DirectBatcher:
    """One instance's slots; its worker forms one batch at a time, a row per slot."""

    def __init__(self, sched: "SequenceScheduler", index: int, instance: ModelInstance, slots: int, order) -> None:
        self.sched = sched
        self.index = index
        self.instance = instance
        self.slots = [Slot(self, i, next(order)) for i in range(slots)]
        self._wake: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.leaving: Leaving | None = None  # its instance was removed by a reload

    def wake(self, slot: Slot | None = None) -> None:
        if self._wake is not None:
            self._wake.set()

    def busy(self) -> bool:
        return any(s.queue or s.in_flight for s in self.slots)

    def released(self, slot: Slot) -> None:
        self.wake(slot)

    async def run(self) -> None:
        self._wake = asyncio.Event()
        sched = self.sched
        settings = sched.settings
        while True:
            self._wake.clear()
            ready = [s for s in self.slots if s.queue]
            if not ready:
                await self._wake.wait()
                continue
            if settings.delay_ns and settings.min_utilization > 0 and not sched.closing:
                earliest = min(s.queue[0].enqueue_ns for s in ready)
                waited = time.monotonic_ns() - earliest
                if waited < settings.delay_ns and len(ready) / settings.max_batch_size < settings.min_utilization:
                    try:
                        await asyncio.wait_for(self._wake.wait(), (settings.delay_ns - waited) / 1e9)
                        continue  # something changed: judge again
                    except asyncio.TimeoutError:
                        pass
                    ready = [s for s in self.slots if s.queue]
                    if not ready:
                        continue
            await self._run_batch(self._form(ready))

    def _form(self, ready: list[Slot]) -> list[Any]:
        sched = self.sched
        top = max(s.index for s in ready)
        rep = ready[0].queue[0]
        batching = sched.settings.batching
        entries: list[Any] = []
        for slot in self.slots[: top + 1]:
            queue = slot.queue
            if queue and (not batching or queue[0].shape_key == rep.shape_key):
                item = queue.popleft()
                sched._take(item, slot)
                entries.append(item)
                if item.request.sequence_end:
                    sched._release_slot(slot)
                elif slot.ending and not queue:
                    sched._release_slot(slot)
            else:
                entries.append(sched._null_request(rep, slot))
        return entries

    async def _run_batch(self, entries: list[Any]) -> None:
        sched = self.sched
        requests = []
        sinks: list[ResponseSink] = []
        real: list[Item] = []
        for e in entries:
            if isinstance(e, Item):
                requests.append(e.request)
                sinks.append(SeqSink(sched, e))
                real.append(e)
            else:
                requests.append(e)
                sinks.append(NULL_SINK)
        sched.recorder.dequeued(len(real))
        start = time.monotonic_ns()
        # Before executing: a request released with RESCHEDULE re-enters the queue (and
        # restarts its queue clock) before execute returns.
        decoupled = sched.settings.decoupled
        watched = sinks if decoupled else [AnswerWatch(s) for s in sinks]
        ran = [Ran(e.request, 1, start - e.enqueue_ns, None if decoupled else w)
               for e, w in zip(entries, watched) if isinstance(e, Item)]
        times: ExecutionTimes | None = None
        try:
            times = await execute_batch(self.instance, requests, watched, sinks, sched.model_name,
                                        "model '%s': sequence batch failed: %s", sched.model_name)
        finally:
            for s in sinks:
                s.released()  # type: ignore[attr-defined]
        if times is not None and ran:
            sched.recorder.executed(times, decoupled, ran)
