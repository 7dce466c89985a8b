"""The oldest strategy: each sequence has at most one request in flight, and the in-flight
requests of different sequences are batched by a dynamic batcher per instance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from naiad.kernel.inference.backend import ExecutionTimes, ModelInstance
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, ResponseSink

from ..recorder import StatsRecorder
from ..scheduler import BatchingConfig, Scheduler
from .slots import DONE, Leaving, SeqSink, Slot

if TYPE_CHECKING:
    from .scheduler import SequenceScheduler


class ReleasingInstance(ModelInstance):
    """Tells the sequence batcher when each request of a batch is released (execute
    returned), so that a sequence's next request can be issued."""

    def __init__(self, inner: ModelInstance) -> None:
        self.inner = inner
        self.max_inflight = int(getattr(inner, "max_inflight", 1))

    async def execute(self, requests: Sequence[InferenceRequest], sinks: Sequence[ResponseSink]) -> ExecutionTimes:
        try:
            return await self.inner.execute(requests, sinks)
        finally:
            for s in sinks:
                released = getattr(s, "released", None)
                if released is not None:
                    released()

    async def close(self) -> None:
        await self.inner.close()

class OldestBatcher:
    """One instance's slots (max_candidate_sequences, as Triton's); each sequence keeps at
    most one request in the instance's dynamic batcher."""

    def __init__(self, sched: "SequenceScheduler", index: int, instance: ModelInstance, config: Any,
                 recorder: StatsRecorder, spawn: Callable, order) -> None:
        self.sched = sched
        self.index = index
        self.instance = instance
        self.leaving: Leaving | None = None  # its instance was removed by a reload
        self.slots = [Slot(self, i, next(order)) for i in range(sched.settings.slots_per_instance)]
        synthetic = type(config)()
        synthetic.CopyFrom(config)
        synthetic.ClearField("sequence_batching")
        oldest = config.sequence_batching.oldest
        db = synthetic.dynamic_batching
        db.preferred_batch_size.extend(oldest.preferred_batch_size)
        db.max_queue_delay_microseconds = oldest.max_queue_delay_microseconds
        db.preserve_ordering = oldest.preserve_ordering
        self.inner = Scheduler(sched.model_name, sched.version, [ReleasingInstance(instance)],
                               BatchingConfig(synthetic), recorder, spawn, native=sched.native_batcher)

    def busy(self) -> bool:
        return any(s.queue or s.in_flight for s in self.slots)

    def wake(self, slot: Slot | None = None) -> None:
        if slot is not None:
            self.issue(slot)

    def issue(self, slot: Slot) -> None:
        sched = self.sched
        while not slot.in_flight and slot.queue:
            item = slot.queue.popleft()
            sched.recorder.dequeued()
            sched._take(item, slot)
            if item.request.sequence_end or (slot.ending and not slot.queue):
                sched._release_slot(slot)
            try:
                # Its queue time counts from when the sequence batcher got it, as Triton's.
                self.inner.enqueue(item.request, SeqSink(sched, item), 1, item.enqueue_ns)
            except InferenceError as exc:
                item.state = DONE
                item.released = True
                slot.in_flight -= 1
                item.sink.finish(exc)

    def released(self, slot: Slot) -> None:
        self.issue(slot)
