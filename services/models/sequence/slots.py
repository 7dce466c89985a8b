"""The sequence batcher's bookkeeping: a queued request (`Item`), a slot that a live
sequence holds on one instance, the backlog of sequences that wait for one, and the sink a
backend answers through. `SlotTable` routes requests to slots and frees slots when
sequences end (END, idle, cancelled), handing them to the oldest backlogged sequence."""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from naiad.kernel.inference.backend import ModelInstance
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, ResponseSink, Tensor

from ..recorder import Skipped

if TYPE_CHECKING:
    from .scheduler import SequenceScheduler

log = logging.getLogger("naiad.services.models")

# Where a queued request is (for cancellation).
QUEUED, RUNNING, DONE = 0, 1, 2

# How an execution that ended in RESCHEDULE counts for a non-decoupled model.
_NO_RESPONSE = InferenceError.internal("request released with RESCHEDULE")


class Item:
    """One request in the sequence batcher."""

    __slots__ = ("request", "sink", "corrid", "base_inputs", "client_outputs", "enqueue_ns", "shape_key",
                 "where", "slot", "state", "states", "rescheduled", "owner", "released")

    def __init__(self, request: InferenceRequest, sink: ResponseSink, corrid: Any, owner: bool) -> None:
        self.request = request
        self.sink = sink  # the caller's
        self.corrid = corrid
        self.base_inputs = list(request.inputs)
        self.client_outputs = request.outputs
        self.enqueue_ns = time.monotonic_ns()
        self.shape_key = tuple((t.name, t.shape[1:]) for t in request.inputs)
        self.where: Any = None  # a Slot or Backlog while queued
        self.slot: Any = None  # the slot it last ran in
        self.state = QUEUED
        self.states: dict[str, Tensor] | None = None  # the sequence's implicit state
        self.rescheduled = False
        self.owner = owner  # an iterative sequence ends when this request is released
        self.released = False

class Slot:
    __slots__ = ("batcher", "index", "corrid", "queue", "states", "in_flight", "ending", "order")

    def __init__(self, batcher: Any, index: int, order: int) -> None:
        self.batcher = batcher
        self.index = index
        self.corrid: Any = None
        self.queue: deque[Item] = deque()
        self.states: dict[str, Tensor] | None = None
        self.in_flight = 0
        self.ending = False  # force-ended (idle, cancelled): free it once it drains
        self.order = order

    def __lt__(self, other: "Slot") -> bool:
        return self.order < other.order

class Backlog:
    __slots__ = ("corrid", "queue", "ended")

    def __init__(self, corrid: Any) -> None:
        self.corrid = corrid
        self.queue: deque[Item] = deque()
        self.ended = False

class Leaving:
    """A batcher whose instance a reload removed: the slots its sequences still hold, and
    what closes the instance once they have ended (Triton's pending-removal slots)."""

    __slots__ = ("held", "close")

    def __init__(self, held: set[Slot], close: Callable[[ModelInstance], Awaitable[None]]) -> None:
        self.held = held
        self.close = close


class SeqSink(ResponseSink):
    """The sink a backend sees: captures implicit state, hides state outputs, and hears
    a RESCHEDULE release."""

    __slots__ = ("sched", "item")

    def __init__(self, sched: "SequenceScheduler", item: Item) -> None:
        self.sched = sched
        self.item = item

    def send(self, response: InferenceResponse) -> None:
        item = self.item
        self.sched._on_response(item, response)
        if response.final:
            item.state = DONE
        item.sink.send(response)

    def finish(self, error: InferenceError | None = None) -> None:
        item = self.item
        item.request.outputs = item.client_outputs
        item.state = DONE
        item.sink.finish(error)
        if error is not None and not item.released and self.sched.settings.oldest and item.request.cancel.cancelled:
            # Failed before it ever ran (cancelled in the dynamic batcher's queue).
            self.released()

    def reschedule(self) -> bool:
        if not self.sched.settings.iterative:
            return False
        self.item.rescheduled = True
        return True

    def released(self) -> None:
        item = self.item
        if item.released:
            return
        item.released = True
        self.sched._on_release(item)


class _NullSink(ResponseSink):
    __slots__ = ()

    def send(self, response: InferenceResponse) -> None:
        pass

    def finish(self, error: InferenceError | None = None) -> None:
        pass

    def released(self) -> None:
        pass


NULL_SINK = _NullSink()


class SlotTable:
    """Slots and backlog of one `SequenceScheduler` (a mixin: the batchers call back into
    the scheduler, which owns the slots)."""

    def _init_slots(self) -> None:
        # Free slots, lowest row first across instances (keeps batches dense).
        self._free: list[tuple[int, int, Slot]] = [
            (s.index, b.index, s) for b in self.batchers for s in b.slots]
        heapq.heapify(self._free)
        self.active: dict[Any, Slot] = {}
        self.backlog: deque[Backlog] = deque()
        self.backlog_by_id: dict[Any, Backlog] = {}
        self.last_seen: dict[Any, int] = {}

    def _unknown_sequence(self, corrid: Any) -> InferenceError:
        return InferenceError.invalid(
            f"inference request for sequence {corrid} to model '{self.model_name}' must specify the START "
            f"flag on the first request of the sequence")

    def _place(self, item: Item) -> None:
        """Route a request to its sequence's slot, its backlog, a free slot or a new
        backlog; raises for a sequence that was never started (or has ended)."""
        request = item.request
        corrid = item.corrid
        start, end = request.sequence_start, request.sequence_end
        slot = self.active.get(corrid)
        backlog = self.backlog_by_id.get(corrid)
        if not start and slot is None and backlog is None:
            raise self._unknown_sequence(corrid)
        self.last_seen[corrid] = time.monotonic_ns()
        if start:
            if slot is not None or backlog is not None:
                log.warning("sequence %s for model '%s' has a conflict. The previous sequence did not end before "
                            "this sequence start. Previous sequence will be terminated early.", corrid,
                            self.model_name)
        if slot is None and backlog is None and self._free:
            _, _, slot = heapq.heappop(self._free)
            slot.corrid = corrid
            slot.ending = False
            self.active[corrid] = slot
        if slot is not None:
            if end and self.active.get(corrid) is slot:
                del self.active[corrid]
            item.where = slot
            slot.queue.append(item)
            slot.batcher.wake(slot)
            return
        if backlog is None:
            backlog = Backlog(corrid)
            self.backlog.append(backlog)
            self.backlog_by_id[corrid] = backlog
        item.where = backlog
        backlog.queue.append(item)
        if end:
            backlog.ended = True
            self.backlog_by_id.pop(corrid, None)

    # ------------------------------------------------------------------ release and slots --

    def _on_release(self, item: Item) -> None:
        """The backend released a request (its execute returned, or it never ran)."""
        slot: Slot = item.slot
        slot.in_flight = max(0, slot.in_flight - 1)
        if item.rescheduled:
            self._reschedule(item)
        elif item.owner and slot.corrid == item.corrid:
            self._end_sequence(item.corrid, slot)  # an iterative sequence ends with its request
        if slot.ending and slot.corrid is not None and not slot.queue and not slot.in_flight:
            self._release_slot(slot)
        slot.batcher.released(slot)

    def _reschedule(self, item: Item) -> None:
        request = item.request
        item.rescheduled = False
        request.outputs = item.client_outputs
        request.inputs = list(item.base_inputs)
        request.sequence_start = False
        request.sequence_end = False
        item.state = QUEUED
        # Triton's Python backend reports every execution: one released with RESCHEDULE
        # is a success of a decoupled model, and a failure (no response) of any other.
        self.recorder.request_done(request.arrival_ns, None if self.settings.decoupled else _NO_RESPONSE)
        if request.cancel.cancelled:
            item.sink.finish(Skipped.cancelled("request cancelled"))
            slot = self.active.get(item.corrid)
            if slot is not None and item.owner:
                self._end_sequence(item.corrid, slot)
            return
        item.enqueue_ns = time.monotonic_ns()
        item.released = False
        try:
            self._place(item)
        except InferenceError as exc:
            item.state = DONE
            item.sink.finish(exc)
            return
        self.recorder.queued()

    def _end_sequence(self, corrid: Any, slot: Slot) -> None:
        if self.active.get(corrid) is slot:
            del self.active[corrid]
        self.last_seen.pop(corrid, None)
        if not slot.queue and not slot.in_flight:
            self._release_slot(slot)
        else:
            slot.ending = True

    def _release_slot(self, slot: Slot) -> None:
        """The slot's sequence is over: requests left behind are cancelled, and the slot
        goes to the oldest backlogged sequence or back to the free list."""
        if self.active.get(slot.corrid) is slot:
            del self.active[slot.corrid]
        slot.corrid = None
        slot.ending = False
        leftovers = [i for i in slot.queue]
        slot.queue.clear()
        for item in leftovers:
            self._finish_queued(item, Skipped.cancelled("request cancelled: its sequence was ended"))
        leaving = slot.batcher.leaving
        if leaving is not None:  # its instance was removed by a reload: the slot goes with it
            slot.states = None
            leaving.held.discard(slot)
            if not leaving.held:
                self._spawn(self._retire(slot.batcher), f"{self.model_name}:{self.version}:retire{slot.batcher.index}")
            return
        while self.backlog:
            backlog = self.backlog.popleft()
            if not backlog.queue:
                continue
            corrid = backlog.corrid
            if self.backlog_by_id.get(corrid) is backlog:
                del self.backlog_by_id[corrid]
            slot.corrid = corrid
            if not backlog.ended:
                self.active[corrid] = slot
                # Idle time counts from here: the wait for a slot is not idleness.
                self.last_seen[corrid] = time.monotonic_ns()
            for item in backlog.queue:
                item.where = slot
                slot.queue.append(item)
            slot.states = None
            slot.batcher.wake(slot)
            return
        slot.states = None
        heapq.heappush(self._free, (slot.index, slot.batcher.index, slot))

    def _finish_queued(self, item: Item, error: InferenceError) -> None:
        if item.state != QUEUED:
            return
        item.state = DONE
        item.where = None
        self.recorder.dequeued()
        item.sink.finish(error)

    # ------------------------------------------------------------------ cancellation --

    def _cancel(self, item: Item) -> None:
        """A queued request was cancelled: end its whole sequence, as Triton does."""
        if item.state != QUEUED:
            return
        where = item.where
        err = Skipped.cancelled("request cancelled")
        corrid = item.corrid
        if isinstance(where, Backlog):
            try:
                self.backlog.remove(where)
            except ValueError:
                pass
            if self.backlog_by_id.get(corrid) is where:
                del self.backlog_by_id[corrid]
            self.last_seen.pop(corrid, None)
            for other in list(where.queue):
                self._finish_queued(other, err)
            where.queue.clear()
            return
        if isinstance(where, Slot):
            same = [i for i in where.queue if i.corrid == corrid]
            for other in same:
                where.queue.remove(other)
                self._finish_queued(other, err)
            if where.corrid == corrid:
                self._end_sequence(corrid, where)

    # ------------------------------------------------------------------ idle sequences --

    async def _reap(self) -> None:
        idle_ns = self.settings.idle_ns
        while True:
            now = time.monotonic_ns()
            next_due = idle_ns
            for corrid, seen in list(self.last_seen.items()):
                left = seen + idle_ns - now
                if left > 0:
                    next_due = min(next_due, left)
                    continue
                slot = self.active.get(corrid)
                if slot is not None:
                    log.info("model '%s': sequence %s idle for more than %d us; ending it", self.model_name,
                             corrid, idle_ns // 1000)
                    self._end_sequence(corrid, slot)
                elif corrid in self.backlog_by_id:
                    next_due = min(next_due, 50_000_000)  # waiting for a slot: look again soon
                else:
                    del self.last_seen[corrid]
            await asyncio.sleep(max(next_due, 1_000_000) / 1e9)
