"""Scheduling for one model version: a priority queue of pending requests and one worker
per instance slot that forms batches and runs them.

Workers are long-lived tasks (one per instance × `max_inflight`), so a request costs a
deque append and, at most, waking one idle worker — no task per request. Batching
follows Triton's dynamic batcher: FIFO within a priority level, requests batch only
with requests whose non-batch shapes match, a batch never exceeds `max_batch_size`, a
preferred size that can be formed is sent at once, otherwise the batch waits up to
`max_queue_delay_microseconds` for more. Queue policies bound each level's size and time
out requests (REJECT fails them, DELAY moves them behind everything else).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

from naiad.kernel.inference.backend import ModelInstance
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, ResponseSink

from .recorder import AnswerWatch, Ran, Skipped, StatsRecorder

log = logging.getLogger("naiad.services.models")


class Pending:
    __slots__ = ("request", "sink", "batch_size", "enqueue_ns", "queue_start_ns", "deadline_ns", "shape_key")

    def __init__(self, request: InferenceRequest, sink: ResponseSink, batch_size: int, shape_key: Any,
                 queue_start_ns: int = 0) -> None:
        self.request = request
        self.sink = sink
        self.batch_size = batch_size
        self.enqueue_ns = time.monotonic_ns()  # entered this batcher: its delay and timeouts count from here
        self.queue_start_ns = queue_start_ns or self.enqueue_ns  # its queue time counts from here
        self.deadline_ns = 0
        self.shape_key = shape_key


@dataclass(frozen=True)
class QueuePolicy:
    reject_on_timeout: bool = True
    default_timeout_us: int = 0
    allow_timeout_override: bool = False
    max_queue_size: int = 0


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


def shape_key(request: InferenceRequest, batching: bool) -> Any:
    """Requests batch together only when every input's non-batch shape matches."""
    if not batching:
        return None
    return tuple((t.name, t.shape[1:]) for t in request.inputs)


class Scheduler:
    def __init__(
        self,
        model_name: str,
        version: int,
        instances: Sequence[ModelInstance],
        batching: BatchingConfig,
        recorder: StatsRecorder,
        spawn: Callable[[Any, str], asyncio.Task],
    ) -> None:
        self.model_name = model_name
        self.version = version
        self.instances = list(instances)
        self.cfg = batching
        self.recorder = recorder
        self._spawn = spawn
        self.levels: dict[int, deque[Pending]] = {lvl: deque() for lvl in range(1, batching.levels + 1)}
        self.delayed: deque[Pending] = deque()  # timed out under a DELAY policy
        self.size = 0
        self._idle: deque[asyncio.Future] = deque()
        self._arrival: asyncio.Future | None = None  # a worker waiting for more to batch
        self._workers: list[asyncio.Task] = []
        self._workers_of: dict[int, list[asyncio.Task]] = {}  # id(instance) -> its workers
        self._removed: set[int] = set()  # id() of instances that take no more batches
        self._started = 0  # instances given workers so far (names them)
        self._running = 0  # batches executing
        self._closing = False
        self._drained: asyncio.Event | None = None

    # ------------------------------------------------------------------ lifecycle --

    def start(self) -> None:
        for inst in self.instances:
            self._start_workers(inst)
        if self.cfg.any_timeouts:
            self._workers.append(self._spawn(self._sweep_timeouts(), f"{self.model_name}:{self.version}:timeouts"))

    async def drain_and_stop(self, timeout: float | None = None) -> None:
        """Finish everything queued and running, then stop the workers."""
        self._closing = True
        self._wake_all()
        if self.size or self._running:
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
        self._wake_all()  # idle workers of removed instances see it and leave
        tasks = [t for inst in instances for t in self._workers_of.pop(id(inst), ())]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers = [w for w in self._workers if w not in tasks]
        self._removed -= gone
        if self.size:
            self._wake_all()  # a removed worker may have been the one collecting a batch
        await asyncio.gather(*(close(inst) for inst in instances))

    def fail_all(self, error: InferenceError) -> None:
        for q in (*self.levels.values(), self.delayed):
            while q:
                p = q.popleft()
                self.size -= 1
                self.recorder.dequeued()
                p.sink.finish(error)

    # ------------------------------------------------------------------ enqueue --

    def enqueue(self, request: InferenceRequest, sink: ResponseSink, batch_size: int,
                queue_start_ns: int = 0) -> None:
        """Queue `request`. `queue_start_ns`: when an outer batcher (the sequence batcher's
        oldest strategy) queued it, which its queue time counts from, as Triton's."""
        if self._closing:
            raise InferenceError.unavailable(f"model '{self.model_name}' is unloading")
        cfg = self.cfg
        # As Triton: priority 0, or one above the model's levels, is the default level.
        level = request.priority if 1 <= request.priority <= cfg.levels else cfg.default_level
        policy = cfg.policies[level]
        queue = self.levels[level]
        if policy.max_queue_size and len(queue) >= policy.max_queue_size:
            raise InferenceError.unavailable(f"[request id: {request.id or '<id_unknown>'}] Exceeds maximum queue size")
        pending = Pending(request, sink, batch_size, shape_key(request, cfg.dynamic), queue_start_ns)
        timeout_us = policy.default_timeout_us
        # A request's own timeout may only shorten the policy's default (none: no timeout).
        if policy.allow_timeout_override and 0 < request.timeout_us < timeout_us:
            timeout_us = request.timeout_us
        if timeout_us:
            pending.deadline_ns = pending.enqueue_ns + timeout_us * 1000
        if request.trace is not None and not queue_start_ns:  # (the outer batcher stamped it)
            request.trace.stamp("QUEUE_START", pending.enqueue_ns)
        queue.append(pending)
        self.size += 1
        self.recorder.queued()
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)
        elif self._idle:
            self._wake_one()

    def _wake_one(self) -> None:
        while self._idle:
            fut = self._idle.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _wake_all(self) -> None:
        while self._idle:
            fut = self._idle.popleft()
            if not fut.done():
                fut.set_result(None)
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)

    # ------------------------------------------------------------------ batching --

    def _queues(self):
        for lvl in range(1, self.cfg.levels + 1):
            q = self.levels[lvl]
            if q:
                yield q
        if self.delayed:
            yield self.delayed

    def _expire(self, now: int) -> None:
        for lvl, q in self.levels.items():
            if not q:
                continue
            policy = self.cfg.policies[lvl]
            keep: deque[Pending] = deque()
            changed = False
            for p in q:
                if p.deadline_ns and now >= p.deadline_ns:
                    changed = True
                    if policy.reject_on_timeout:
                        self.size -= 1
                        self.recorder.dequeued()
                        p.sink.finish(Skipped.unavailable("Request timeout expired"))
                    else:
                        p.deadline_ns = 0
                        self.delayed.append(p)
                else:
                    keep.append(p)
            if changed:
                self.levels[lvl] = keep

    def _plan(self) -> tuple[int, int]:
        """(requests to take, whether the plan is final: 1 send now, 0 may wait)."""
        cfg = self.cfg
        if not cfg.dynamic:
            return 1, 1
        max_batch = cfg.max_batch_size
        preferred = cfg.preferred
        total = 0
        count = 0
        best_preferred = 0  # request count at the largest preferred size met
        key = None
        for q in self._queues():
            for p in q:
                if count and p.shape_key != key:
                    return (best_preferred or count), 1  # a shape change ends the batch
                if total + p.batch_size > max_batch:
                    return (best_preferred or count), 1
                if not count:
                    key = p.shape_key
                total += p.batch_size
                count += 1
                if total in preferred:
                    best_preferred = count
                if total == max_batch:
                    return count, 1
        if best_preferred:
            return best_preferred, 1
        return count, 0

    def _take(self, n: int) -> list[Pending]:
        batch: list[Pending] = []
        for q in list(self._queues()):
            while q and len(batch) < n:
                batch.append(q.popleft())
            if len(batch) >= n:
                break
        self.size -= len(batch)
        self.recorder.dequeued(len(batch))
        return batch

    async def _next_batch(self, instance: ModelInstance) -> list[Pending] | None:
        loop = asyncio.get_running_loop()
        removed = self._removed
        while True:
            if removed and id(instance) in removed:
                return None
            while self.size == 0:
                if self._closing or (removed and id(instance) in removed):
                    return None
                fut = loop.create_future()
                self._idle.append(fut)
                await fut
            if self.cfg.any_timeouts:
                self._expire(time.monotonic_ns())
                if self.size == 0:
                    continue
            count, final = self._plan()
            if final or self.cfg.delay_ns == 0 or self._closing:
                return self._take(count)
            # Wait for more requests, at most until the oldest has waited the delay.
            oldest = min(q[0].enqueue_ns for q in self._queues())
            wait_ns = oldest + self.cfg.delay_ns - time.monotonic_ns()
            if wait_ns <= 0:
                return self._take(count)
            if self._arrival is not None and not self._arrival.done():
                # Another worker is already collecting; take what is there.
                return self._take(count)
            self._arrival = loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._arrival), wait_ns / 1e9)
            except asyncio.TimeoutError:
                pass
            finally:
                self._arrival = None

    # ------------------------------------------------------------------ execution --

    async def _worker(self, instance: ModelInstance) -> None:
        while True:
            batch = await self._next_batch(instance)
            if batch is None:
                return
            await self._run(instance, batch)

    async def _run(self, instance: ModelInstance, batch: list[Pending]) -> None:
        self._running += 1
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
            try:
                times = await instance.execute(requests, watches or sinks)
            except asyncio.CancelledError:
                err = InferenceError.unavailable(f"model '{self.model_name}' stopped while executing")
                for s in sinks:
                    s.finish(err)
                raise
            except Exception as exc:
                err = exc if isinstance(exc, InferenceError) else InferenceError.internal(
                    f"model '{self.model_name}' instance failed: {exc}")
                log.error("model '%s' version %d: execution failed: %s", self.model_name, self.version, err.message)
                for s in sinks:
                    s.finish(err)
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
            if self._drained is not None and self.size == 0 and self._running == 0:
                self._drained.set()

    async def _sweep_timeouts(self) -> None:
        """Time out queued requests even while every instance is busy."""
        while True:
            await asyncio.sleep(0.002)
            if self.size:
                self._expire(time.monotonic_ns())
