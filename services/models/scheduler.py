"""Scheduling for one model version: a priority queue of pending requests and one worker
per instance slot that runs the batches it is given.

Workers are long-lived tasks (one per instance × `max_inflight`), so a request costs a
queue push and, at most, one scheduled decision per loop turn — no task per request.
The queue and the batching decisions live in a `BatchQueue` (naiad.ext.batcher: native,
with a Python twin), following Triton's dynamic batcher: FIFO within a priority level,
requests batch only with requests whose non-batch shapes match, a batch never exceeds
`max_batch_size`, a preferred size that can be formed is sent at once, otherwise the
batch waits up to `max_queue_delay_microseconds` for more. Queue policies bound each
level's size and time out requests (REJECT fails them, DELAY moves them behind
everything else). This module keeps what needs Python: the requests themselves (the
queue sees integer handles), sinks, statistics, cancellation, instances and drain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

from naiad.ext.batcher import queue_class
from naiad.ext.batcher_py import BatchQueue
from naiad.kernel.inference.backend import ModelInstance
from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.types import InferenceRequest, ResponseSink

from .execution import execute_batch
from .recorder import AnswerWatch, Ran, Skipped, StatsRecorder

_LANE_BASE: int = getattr(queue_class(True), "LANE_BASE", 1 << 62)  # lane handles start here (ext/_batcher)

log = logging.getLogger("naiad.services.models")


_DECIDE: Any = object()  # what an idle worker is woken with to take its loop turn's decisions


class Pending:
    __slots__ = ("request", "sink", "batch_size", "enqueue_ns", "queue_start_ns")

    def __init__(self, request: InferenceRequest, sink: ResponseSink, batch_size: int,
                 queue_start_ns: int = 0) -> None:
        self.request = request
        self.sink = sink
        self.batch_size = batch_size
        self.enqueue_ns = time.monotonic_ns()  # entered this batcher: its delay and timeouts count from here
        self.queue_start_ns = queue_start_ns or self.enqueue_ns  # its queue time counts from here


@dataclass(frozen=True)
class QueuePolicy:
    reject_on_timeout: bool = True
    default_timeout_us: int = 0
    allow_timeout_override: bool = False
    max_queue_size: int = 0

    def as_tuple(self) -> tuple[bool, int, bool, int]:
        return (self.reject_on_timeout, self.default_timeout_us, self.allow_timeout_override, self.max_queue_size)


def _policy(p: Any) -> QueuePolicy:
    return QueuePolicy(
        reject_on_timeout=(p.timeout_action == 0),
        default_timeout_us=int(p.default_timeout_microseconds),
        allow_timeout_override=bool(p.allow_timeout_override),
        max_queue_size=int(p.max_queue_size),
    )


class BatchingConfig:
    """What the scheduler needs from `dynamic_batching` (or its absence)."""

    def __init__(self, config: Any) -> None:
        self.max_batch_size = int(config.max_batch_size)
        self.decoupled = bool(config.model_transaction_policy.decoupled)
        db = config.dynamic_batching if config.HasField("dynamic_batching") else None
        self.dynamic = db is not None and self.max_batch_size > 0
        self.preferred = sorted({int(p) for p in db.preferred_batch_size if 0 < p <= self.max_batch_size}) if db else []
        self.delay_ns = int(db.max_queue_delay_microseconds) * 1000 if db else 0
        self.preserve_ordering = bool(db.preserve_ordering) if db else False
        levels = int(db.priority_levels) if db else 0
        self.levels = max(levels, 1)
        default_level = int(db.default_priority_level) if db and db.default_priority_level else 0
        self.default_level = default_level if 1 <= default_level <= self.levels else (self.levels + 1) // 2 if levels else 1
        default_policy = _policy(db.default_queue_policy) if db and db.HasField("default_queue_policy") else QueuePolicy()
        self.policies = {lvl: default_policy for lvl in range(1, self.levels + 1)}
        if db:
            for lvl, p in db.priority_queue_policy.items():
                if 1 <= lvl <= self.levels:
                    self.policies[int(lvl)] = _policy(p)
        self.any_timeouts = any(p.default_timeout_us for p in self.policies.values())

    def new_queue(self, native: bool) -> BatchQueue:
        """A BatchQueue with these rules (native when asked for and built)."""
        return queue_class(native)(self.dynamic, self.max_batch_size, self.preferred, self.delay_ns, self.levels,
                                   self.default_level, [self.policies[lvl].as_tuple()
                                                        for lvl in range(1, self.levels + 1)])


class Scheduler:
    def __init__(
        self,
        model_name: str,
        version: int,
        instances: Sequence[ModelInstance],
        batching: BatchingConfig,
        recorder: StatsRecorder,
        spawn: Callable[[Any, str], asyncio.Task],
        native: bool = True,
    ) -> None:
        self.model_name = model_name
        self.version = version
        self.instances = list(instances)
        self.cfg = batching
        self.recorder = recorder
        self._spawn = spawn
        self._queue = batching.new_queue(native)
        self.native = not isinstance(self._queue, BatchQueue)  # the twin is the only Python one
        self._pending: dict[int, Pending] = {}  # queue handle -> request, while queued
        self._next_handle = 0
        self._shape_ids: dict[Any, int] = {}  # shape key -> the int the queue compares
        self._idle: deque[asyncio.Future] = deque()  # workers waiting for a batch, FIFO
        self._orphans: deque[list[Pending]] = deque()  # batches formed for a worker that left
        self._loop: asyncio.AbstractEventLoop | None = None
        self._decide_soon = False
        self._workers: list[asyncio.Task] = []
        self._workers_of: dict[int, list[asyncio.Task]] = {}  # id(instance) -> its workers
        self._removed: set[int] = set()  # id() of instances that take no more batches
        self._started = 0  # instances given workers so far (names them)
        self._running = 0  # batches handed to a worker and not finished
        self._closing = False
        self._drained: asyncio.Event | None = None
        self.lane: Any = None  # the capsule of this queue's native lane, while open

    # ------------------------------------------------------------------ lanes --

    def open_lane(self, schema: tuple) -> Any:
        """Publish a native lane on this queue (ext/frontend/lane.h) for `schema`: the
        capsule front ends submit plain requests to, or None when the queue is the Python
        twin (lanes need the native queue)."""
        if not self.native or self._closing:
            return None
        self.lane = self._queue.open_lane(schema)
        return self.lane

    def close_lane(self) -> None:
        if self.lane is not None:
            self._queue.close_lane()
            self.lane = None

    def _lane_batch(self, handles: list[int]) -> Any:
        return self._queue.take_lane(handles)

    @property
    def size(self) -> int:
        """Requests queued, not yet in a batch."""
        return len(self._pending)

    # ------------------------------------------------------------------ lifecycle --

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue.attach(self._loop, self._decide)
        log.debug("model '%s' version %d: %s batch queue", self.model_name, self.version,
                  "native" if self.native else "Python", extra={"verbose": 1})
        for inst in self.instances:
            self._start_workers(inst)

    async def drain_and_stop(self, timeout: float | None = None) -> None:
        """Finish everything queued and running, then stop the workers."""
        self._closing = True
        self.lane = None
        self._queue.close()  # (closes the lane too: front ends decline from now on)
        self._wake_all()
        self._decide()
        if self._queued() or self._orphans or self._running:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        self.fail_all(InferenceError.unavailable(f"model '{self.model_name}' is unloading"))
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        self._queue.detach()

    def _start_workers(self, inst: ModelInstance) -> None:
        idx, self._started = self._started, self._started + 1
        tasks = [self._spawn(self._worker(inst), f"{self.model_name}:{self.version}:worker{idx}.{slot}")
                 for slot in range(max(1, int(getattr(inst, "max_inflight", 1))))]
        self._workers_of[id(inst)] = tasks
        self._workers.extend(tasks)

    def add_instances(self, instances: Sequence[ModelInstance]) -> None:
        for inst in instances:
            self.instances.append(inst)
            self._start_workers(inst)

    async def remove_instances(self, instances: Sequence[ModelInstance],
                               close: Callable[[ModelInstance], Awaitable[None]]) -> None:
        """The instances finish the batch they run and take no other; then they are closed."""
        gone = {id(inst) for inst in instances}
        self._removed |= gone
        self.instances = [i for i in self.instances if id(i) not in gone]
        self._wake_all()  # idle workers of removed instances see it and leave; the others ask again
        tasks = [t for inst in instances for t in self._workers_of.pop(id(inst), ())]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers = [w for w in self._workers if w not in tasks]
        self._removed -= gone
        await asyncio.gather(*(close(inst) for inst in instances))

    def fail_all(self, error: InferenceError) -> None:
        lane = []
        for h in self._queue.take_all():
            if h >= _LANE_BASE:
                lane.append(h)
                continue
            p = self._pending.pop(h)
            self.recorder.dequeued()
            p.sink.finish(error)
        if lane:
            self._lane_batch(lane).fail(int(error.code), error.message)
        while self._orphans:
            batch = self._orphans.popleft()
            self._running -= 1
            for p in batch:
                p.sink.finish(error)

    # ------------------------------------------------------------------ enqueue --

    def enqueue(self, request: InferenceRequest, sink: ResponseSink, batch_size: int,
                queue_start_ns: int = 0) -> None:
        """Queue `request`. `queue_start_ns`: when an outer batcher (the sequence batcher's
        oldest strategy) queued it, which its queue time counts from, as Triton's."""
        if self._closing:
            raise InferenceError.unavailable(f"model '{self.model_name}' is unloading")
        pending = Pending(request, sink, batch_size, queue_start_ns)
        key = 0
        if self.cfg.dynamic:
            shape = tuple((t.name, t.shape[1:]) for t in request.inputs)
            key = self._shape_ids.get(shape)
            if key is None:
                if len(self._shape_ids) > 4096 and not self._pending:
                    self._shape_ids.clear()  # ids need only be unique among queued requests
                key = self._shape_ids[shape] = len(self._shape_ids)
        handle = self._next_handle
        self._next_handle = handle + 1
        if not self._queue.push(handle, request.priority, request.timeout_us, batch_size, key, pending.enqueue_ns):
            raise InferenceError.unavailable(f"[request id: {request.id or '<id_unknown>'}] Exceeds maximum queue size")
        self._pending[handle] = pending
        if request.trace is not None and not queue_start_ns:  # (the outer batcher stamped it)
            request.trace.stamp("QUEUE_START", pending.enqueue_ns)
        self.recorder.queued()
        # Decide once per loop turn, after every request this turn brought is queued: the
        # longest-idle worker wakes and decides (one loop callback per batch, not two).
        if self._idle and not self._decide_soon:
            idle = self._idle
            while idle:
                fut = idle.popleft()
                if not fut.done():
                    fut.set_result(_DECIDE)
                    self._decide_soon = True
                    break

    def _wake_all(self) -> None:
        """Every idle worker looks again (closing, or instances leaving)."""
        while self._idle:
            fut = self._idle.popleft()
            if not fut.done():
                fut.set_result(None)

    # ------------------------------------------------------------------ batching --

    def _decide(self, caller: bool = False) -> list[Pending] | None:
        """Collect the queue's decisions: batches go to idle workers in the order they
        became idle; requests that timed out under REJECT are answered. `caller`: the
        calling worker wants a batch too, ahead of the idle ones (it returns its batch)."""
        self._decide_soon = False
        batches, expired = self._queue.pump(len(self._idle) + caller)
        pending = self._pending
        lane_expired = None
        for h in expired:
            if h >= _LANE_BASE:
                (lane_expired := lane_expired or []).append(h)
                continue
            p = pending.pop(h)
            self.recorder.dequeued()
            p.sink.finish(Skipped.unavailable("Request timeout expired"))
        if lane_expired:
            self._lane_batch(lane_expired).fail(int(ErrorCode.UNAVAILABLE), "Request timeout expired")
            self.recorder.skipped("REJECTED", len(lane_expired))
        mine = None
        for handles in batches:
            if handles[0] >= _LANE_BASE:  # a batch is all lane requests or none (ext/_batcher shape keys)
                batch: Any = self._lane_batch(handles)
            else:
                batch = [pending.pop(h) for h in handles]
                self.recorder.dequeued(len(batch))
            self._running += 1
            if caller and mine is None:
                mine = batch
                continue
            while self._idle:
                fut = self._idle.popleft()
                if not fut.done():
                    fut.set_result(batch)
                    break
            else:
                self._orphans.append(batch)
        if expired:
            self._check_drained()
        return mine

    async def _next_batch(self, instance: ModelInstance) -> list[Pending] | None:
        loop = self._loop
        removed = self._removed
        first = False  # woken to decide this turn: it was the longest idle, so it stays first in line
        while True:
            leaving = bool(removed) and id(instance) in removed
            if leaving or self._orphans or (self._closing and not self._queued()):
                if first:
                    self._decide()  # the decision it was woken for, for the other workers
                if leaving:
                    return None
                if self._orphans:
                    return self._orphans.popleft()
                return None
            batch = self._decide(caller=True)  # a batch that can go now goes now, to this worker first
            if batch is not None:
                return batch
            fut = loop.create_future()  # type: ignore[union-attr]
            if first:
                self._idle.appendleft(fut)
            else:
                self._idle.append(fut)
            try:
                batch = await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    got = fut.result()
                    if got is _DECIDE:
                        self._decide_soon = False
                    elif got is not None:
                        self._fail_batch(got, InferenceError.unavailable(
                            f"model '{self.model_name}' stopped while executing"))
                raise
            first = batch is _DECIDE
            if batch is not None and not first:
                return batch

    def _fail_batch(self, batch: Any, error: InferenceError) -> None:
        self._running -= 1
        if isinstance(batch, list):
            for p in batch:
                p.sink.finish(error)
        else:
            batch.fail(int(error.code), error.message)
        self._check_drained()

    def _queued(self) -> bool:
        """Requests wait in the queue (Python's or lane requests)."""
        return bool(self._pending) or (self.native and self._queue.lane_queued > 0)

    def _check_drained(self) -> None:
        if self._drained is not None and not self._queued() and not self._orphans and self._running == 0:
            self._drained.set()

    # ------------------------------------------------------------------ execution --

    async def _worker(self, instance: ModelInstance) -> None:
        while True:
            batch = await self._next_batch(instance)
            if batch is None:
                return
            await self._run(instance, batch)

    async def _run(self, instance: ModelInstance, batch: Any) -> None:
        if not isinstance(batch, list):
            await self._run_lane(instance, batch)
            return
        now = time.monotonic_ns()
        requests = [p.request for p in batch]
        sinks = [p.sink for p in batch]
        try:
            live = [i for i, p in enumerate(batch) if not p.request.cancel.cancelled]
            if len(live) != len(batch):
                for i, p in enumerate(batch):
                    if p.request.cancel.cancelled:
                        p.sink.finish(Skipped.cancelled("request cancelled before execution"))
                requests = [requests[i] for i in live]
                sinks = [sinks[i] for i in live]
                batch = [batch[i] for i in live]
            if not batch:
                return
            watches = None if self.cfg.decoupled else [AnswerWatch(s) for s in sinks]
            times = await execute_batch(instance, requests, watches or sinks, sinks, self.model_name,
                                        "model '%s' version %d: execution failed: %s", self.model_name, self.version)
            if times is None:
                return
            self.recorder.executed(times, self.cfg.decoupled, [
                Ran(p.request, p.batch_size, now - p.queue_start_ns, watches[i] if watches else None)
                for i, p in enumerate(batch)])
            for r in requests:
                trace = r.trace
                if trace is not None:
                    trace.stamp("COMPUTE_START", times.compute_start)
                    trace.stamp("COMPUTE_INPUT_END", times.compute_input_end)
                    trace.stamp("COMPUTE_OUTPUT_START", times.compute_output_start)
                    trace.stamp("COMPUTE_END", times.compute_end)
                    trace.not_before("REQUEST_END", times.compute_end)
        finally:
            self._running -= 1
            self._check_drained()

    async def _run_lane(self, instance: Any, lane_batch: Any) -> None:
        """A batch of lane requests: they are answered natively; the statistics count it
        as `executed` counts a Python batch."""
        try:
            # As _run: a request cancelled while queued is answered, counted only as CANCELED.
            dropped = lane_batch.drop_cancelled(int(ErrorCode.CANCELLED), "request cancelled before execution")
            if dropped:
                self.recorder.skipped("CANCELED", dropped)
                if not len(lane_batch):
                    return
            queue_ns = lane_batch.waited_ns(time.monotonic_ns())
            batch_size, count = lane_batch.batch_size, len(lane_batch)
            times, summary = await instance.execute_lane(lane_batch)
            self.recorder.lane_executed(times, batch_size, count, queue_ns, summary)
        except Exception as exc:  # a bug: the clients still get an answer
            log.exception("model '%s' version %d: lane execution failed", self.model_name, self.version)
            lane_batch.fail(int(ErrorCode.INTERNAL), f"lane execution failed: {exc}")
        finally:
            self._running -= 1
            self._check_drained()
