"""Triton's sequence batcher: stateful models that see each sequence's requests in order.

A sequence is the requests that share a correlation id, from one with the START flag to
one with the END flag. Each live sequence holds a *slot* on one instance; a sequence that
finds no free slot waits in the backlog, whole, until one frees. Per request the batcher
injects the control inputs the config asks for — START, END, READY as the config's
int32 / fp32 / bool false/true values, CORRID as the correlation id — and the implicit
state (`sequence_batching.state`): the state input on a sequence's first request is its
`initial_state` (or zeros), on every later one the state output of the request before.

Two strategies, as in Triton:

* direct (default): slots are the rows of a batch. One worker per instance takes the
  next request of every slot that has one; a slot with nothing pending below the highest
  busy slot gets a *null* request (a copy of a real one with READY false, CORRID 0) so
  that every sequence keeps its row. `max_queue_delay_microseconds` with
  `minimum_slot_utilization` lets a batch wait to fill.
* oldest: each sequence has at most one request in flight; the next one is issued when
  the last is released. In-flight requests of different sequences are batched by a
  dynamic batcher (`oldest.preferred_batch_size`, `max_queue_delay_microseconds`), one
  per instance with `max_candidate_sequences` slots.

A reload that removes an instance (`remove_instances`) frees its idle slots at once; its
sequences keep their slots until they end, and the instance is closed after the last.

A sequence with no request for `max_sequence_idle_microseconds` is ended and its slot
freed; its next request is refused with Triton's "must specify the START flag" error. A
sequence that waited in the backlog is idle from the moment it gets its slot. With
`iterative_sequence: true` a request without a correlation id starts a sequence of its
own, the model may release it with RESCHEDULE (`ResponseSink.reschedule()`) to run it
again in a later batch, and the sequence ends when the request is released without it.

A cancelled request still queued is removed with its whole sequence (slot freed, queued
requests answered CANCELLED), as Triton does; one that is executing is the backend's
to stop (`is_cancelled()`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import numpy as np

from naiad.kernel.inference.backend import ExecutionTimes, ModelInstance
from naiad.kernel.inference.datatypes import CONFIG_ENUM_NAME, CONFIG_TO_WIRE, WIRE_TO_NUMPY
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, RequestedOutput, ResponseSink, Tensor

from .recorder import AnswerWatch, Ran, Skipped, StatsRecorder
from .scheduler import BatchingConfig, Scheduler

log = logging.getLogger("naiad.services.models")

# ModelSequenceBatching.Control.Kind
START, READY, END, CORRID = 0, 1, 2, 3
_KIND_NAMES = {START: "CONTROL_SEQUENCE_START", READY: "CONTROL_SEQUENCE_READY",
               END: "CONTROL_SEQUENCE_END", CORRID: "CONTROL_SEQUENCE_CORRID"}
_CORRID_TYPES = ("UINT64", "INT64", "UINT32", "INT32", "BYTES")

# Where a queued request is (for cancellation).
_QUEUED, _RUNNING, _DONE = 0, 1, 2

# How an execution that ended in RESCHEDULE counts for a non-decoupled model.
_NO_RESPONSE = InferenceError.internal("request released with RESCHEDULE")


def _wire(enum_value: int) -> str:
    return CONFIG_TO_WIRE.get(CONFIG_ENUM_NAME.get(enum_value, ""), "")


def _is_sequence_model(config: Any) -> bool:
    return config.HasField("sequence_batching")


def control_input_names(config: Any) -> frozenset[str]:
    """Inputs the sequence batcher fills in itself (controls and implicit state inputs):
    a client must not send them and need not list them."""
    if not _is_sequence_model(config):
        return frozenset()
    sb = config.sequence_batching
    names = {ci.name for ci in sb.control_input}
    names.update(s.input_name for s in sb.state)
    return frozenset(names)


# ---------------------------------------------------------------------- settings --


class _Flag:
    """One boolean control input (START, END or READY) with its two tensors."""

    __slots__ = ("kind", "name", "false", "true")

    def __init__(self, kind: int, name: str, datatype: str, values: Sequence[Any], batching: bool) -> None:
        self.kind = kind
        self.name = name
        shape = (1, 1) if batching else (1,)
        dtype = WIRE_TO_NUMPY[datatype]
        self.false = Tensor(name, datatype, shape, array=np.full(shape, values[0], dtype=dtype))
        self.true = Tensor(name, datatype, shape, array=np.full(shape, values[1], dtype=dtype))


class _State:
    __slots__ = ("input_name", "output_name", "datatype", "initial")

    def __init__(self, input_name: str, output_name: str, datatype: str, initial: Tensor) -> None:
        self.input_name = input_name
        self.output_name = output_name
        self.datatype = datatype
        self.initial = initial


class SequenceSettings:
    """What the batcher needs from `sequence_batching`, checked once at load."""

    def __init__(self, config: Any, model_dir: Path | None = None) -> None:
        sb = config.sequence_batching
        model = config.name
        self.model = model
        self.batching = config.max_batch_size > 0
        self.max_batch_size = max(1, int(config.max_batch_size))
        self.iterative = bool(sb.iterative_sequence)
        self.decoupled = bool(config.model_transaction_policy.decoupled)
        self.oldest = sb.HasField("oldest")
        self.idle_ns = int(sb.max_sequence_idle_microseconds or 1_000_000) * 1000
        if self.oldest:
            o = sb.oldest
            self.slots_per_instance = int(o.max_candidate_sequences) or self.max_batch_size
            self.delay_ns = int(o.max_queue_delay_microseconds) * 1000
            self.min_utilization = 0.0
        else:
            d = sb.direct
            self.slots_per_instance = self.max_batch_size
            self.delay_ns = int(d.max_queue_delay_microseconds) * 1000
            self.min_utilization = float(d.minimum_slot_utilization)
        self.flags: list[_Flag] = []
        self.corrid: tuple[str, str] | None = None  # (name, wire datatype)
        seen: set[int] = set()
        for ci in sb.control_input:
            if not ci.name:
                raise InferenceError.invalid(f"sequence batching control input of model '{model}' has no name")
            if len(ci.control) != 1:
                raise InferenceError.invalid(
                    f"sequence batching control input '{ci.name}' of model '{model}' must have exactly one control")
            c = ci.control[0]
            kind = int(c.kind)
            if kind in seen:
                raise InferenceError.invalid(
                    f"sequence batching for model '{model}' specifies {_KIND_NAMES.get(kind, kind)} more than once")
            seen.add(kind)
            if kind == CORRID:
                datatype = _wire(c.data_type)
                if datatype not in _CORRID_TYPES:
                    raise InferenceError.invalid(
                        f"unexpected control data type, expected TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32, "
                        f"or TYPE_STRING for CONTROL_SEQUENCE_CORRID for {model}")
                self.corrid = (ci.name, datatype)
                continue
            given = [(n, v) for n, v in (("INT32", list(c.int32_false_true)), ("FP32", list(c.fp32_false_true)),
                                         ("BOOL", list(c.bool_false_true))) if v]
            if len(given) != 1 or len(given[0][1]) != 2:
                raise InferenceError.invalid(
                    f"sequence batching control '{_KIND_NAMES.get(kind, kind)}' of input '{ci.name}' for model "
                    f"'{model}' must give exactly two false/true values in one of int32_false_true, "
                    f"fp32_false_true or bool_false_true")
            self.flags.append(_Flag(kind, ci.name, given[0][0], given[0][1], self.batching))
        self.states: list[_State] = []
        for st in sb.state:
            self.states.append(self._state(st, model_dir))
        self.state_outputs = {s.output_name: s for s in self.states}

    def _state(self, st: Any, model_dir: Path | None) -> _State:
        model = self.model
        if not st.input_name or not st.output_name:
            raise InferenceError.invalid(f"a state of model '{model}' needs input_name and output_name")
        datatype = _wire(st.data_type)
        if not datatype:
            raise InferenceError.invalid(f"state '{st.input_name}' of model '{model}' has no data_type")
        if len(st.initial_state) > 1:
            raise InferenceError.invalid(
                f"initial_state field for state input '{st.input_name}' must contain exactly one or zero element. "
                f"Found '{len(st.initial_state)}' elements.")
        lead = (1,) if self.batching else ()
        dtype = WIRE_TO_NUMPY[datatype]
        if not st.initial_state:
            shape = lead + tuple(1 if d == -1 else int(d) for d in st.dims)
            arr = np.full(shape, b"", dtype=object) if datatype == "BYTES" else np.zeros(shape, dtype=dtype)
            return _State(st.input_name, st.output_name, datatype, Tensor(st.input_name, datatype, shape, array=arr))
        init = st.initial_state[0]
        if init.data_type != st.data_type:
            raise InferenceError.invalid(
                f"The data type used for 'initial_state' field of state '{st.input_name}' does not match the "
                f"state data type.")
        if not init.name:
            raise InferenceError.invalid(
                f"Field 'name' must be set when using initial_state for state input '{st.input_name}'.")
        if len(init.dims) != len(st.dims):
            raise InferenceError.invalid(
                f"Number of dimensions in 'initial_state' doesn't match the size of 'state' dimensions for state "
                f"input '{st.input_name}'. {len(init.dims)} != {len(st.dims)}")
        for di, ds in zip(init.dims, st.dims):
            if di == -1:
                raise InferenceError.invalid(
                    f"'initial_state' field for state input name '{st.input_name}' contains variable dimensions.")
            if ds != -1 and di != ds:
                raise InferenceError.invalid(
                    f"'initial_state' dim for input name '{st.input_name}' doesn't match 'state' dim description. "
                    f"{di} != {ds}")
        shape = lead + tuple(int(d) for d in init.dims)
        count = int(np.prod(shape)) if shape else 1
        if init.WhichOneof("state_data") == "data_file":
            path = (model_dir / "initial_state" / init.data_file) if model_dir else Path(init.data_file)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise InferenceError.invalid(
                    f"failed to read initial_state data file '{init.data_file}' of model '{model}': {exc.strerror}")
            if datatype == "BYTES":
                arr = np.array([data] * count, dtype=object).reshape(shape)
            else:
                need = count * dtype.itemsize
                if len(data) < need:
                    raise InferenceError.invalid(
                        f"initial_state setting expects {need} bytes, but the data provided from "
                        f"{init.data_file} only has {len(data)} bytes.")
                arr = np.frombuffer(data[:need], dtype=dtype).reshape(shape)
        elif init.WhichOneof("state_data") == "zero_data":
            arr = np.full(shape, b"", dtype=object) if datatype == "BYTES" else np.zeros(shape, dtype=dtype)
        else:
            raise InferenceError.invalid(
                f"initial_state setting expects state'{st.input_name}' to have state_data set")
        return _State(st.input_name, st.output_name, datatype, Tensor(st.input_name, datatype, shape, array=arr))

    def initial_states(self) -> dict[str, Tensor]:
        return {s.input_name: s.initial for s in self.states}

    def corrid_tensor(self, corrid: int | str) -> Tensor:
        name, datatype = self.corrid  # type: ignore[misc]
        shape = (1, 1) if self.batching else (1,)
        if datatype == "BYTES":
            value = corrid if isinstance(corrid, str) else (str(corrid) if corrid else "")
            return Tensor(name, datatype, shape, array=np.full(shape, value.encode(), dtype=object))
        try:
            value = int(corrid)
        except (TypeError, ValueError):
            value = 0
        return Tensor(name, datatype, shape, array=np.full(shape, value, dtype=WIRE_TO_NUMPY[datatype]))


# ---------------------------------------------------------------------- requests and slots --


class _Item:
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
        self.where: Any = None  # a _Slot or _Backlog while queued
        self.slot: Any = None  # the slot it last ran in
        self.state = _QUEUED
        self.states: dict[str, Tensor] | None = None  # the sequence's implicit state
        self.rescheduled = False
        self.owner = owner  # an iterative sequence ends when this request is released
        self.released = False


class _Slot:
    __slots__ = ("batcher", "index", "corrid", "queue", "states", "in_flight", "ending", "order")

    def __init__(self, batcher: Any, index: int, order: int) -> None:
        self.batcher = batcher
        self.index = index
        self.corrid: Any = None
        self.queue: deque[_Item] = deque()
        self.states: dict[str, Tensor] | None = None
        self.in_flight = 0
        self.ending = False  # force-ended (idle, cancelled): free it once it drains
        self.order = order

    def __lt__(self, other: "_Slot") -> bool:
        return self.order < other.order


class _Backlog:
    __slots__ = ("corrid", "queue", "ended")

    def __init__(self, corrid: Any) -> None:
        self.corrid = corrid
        self.queue: deque[_Item] = deque()
        self.ended = False


class _SeqSink(ResponseSink):
    """The sink a backend sees: captures implicit state, hides state outputs, and hears
    a RESCHEDULE release."""

    __slots__ = ("sched", "item")

    def __init__(self, sched: "SequenceScheduler", item: _Item) -> None:
        self.sched = sched
        self.item = item

    def send(self, response: InferenceResponse) -> None:
        item = self.item
        self.sched._on_response(item, response)
        if response.final:
            item.state = _DONE
        item.sink.send(response)

    def finish(self, error: InferenceError | None = None) -> None:
        item = self.item
        item.request.outputs = item.client_outputs
        item.state = _DONE
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


_NULL_SINK = _NullSink()


# ---------------------------------------------------------------------- strategies --


class _DirectBatcher:
    """One instance's slots; its worker forms one batch at a time, a row per slot."""

    def __init__(self, sched: "SequenceScheduler", index: int, instance: ModelInstance, slots: int, order) -> None:
        self.sched = sched
        self.index = index
        self.instance = instance
        self.slots = [_Slot(self, i, next(order)) for i in range(slots)]
        self._wake: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.leaving: _Leaving | None = None  # its instance was removed by a reload

    def wake(self, slot: _Slot | None = None) -> None:
        if self._wake is not None:
            self._wake.set()

    def busy(self) -> bool:
        return any(s.queue or s.in_flight for s in self.slots)

    def released(self, slot: _Slot) -> None:
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

    def _form(self, ready: list[_Slot]) -> list[Any]:
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
        real: list[_Item] = []
        for e in entries:
            if isinstance(e, _Item):
                requests.append(e.request)
                sinks.append(_SeqSink(sched, e))
                real.append(e)
            else:
                requests.append(e)
                sinks.append(_NULL_SINK)
        sched.recorder.dequeued(len(real))
        start = time.monotonic_ns()
        # Before executing: a request released with RESCHEDULE re-enters the queue (and
        # restarts its queue clock) before execute returns.
        decoupled = sched.settings.decoupled
        watched = sinks if decoupled else [AnswerWatch(s) for s in sinks]
        ran = [Ran(e.request, 1, start - e.enqueue_ns, None if decoupled else w)
               for e, w in zip(entries, watched) if isinstance(e, _Item)]
        times: ExecutionTimes | None = None
        try:
            times = await self.instance.execute(requests, watched)
        except asyncio.CancelledError:
            err = InferenceError.unavailable(f"model '{sched.model_name}' stopped while executing")
            for s in sinks:
                s.finish(err)
            raise
        except Exception as exc:
            err = exc if isinstance(exc, InferenceError) else InferenceError.internal(
                f"model '{sched.model_name}' instance failed: {exc}")
            log.error("model '%s': sequence batch failed: %s", sched.model_name, err.message)
            for s in sinks:
                s.finish(err)
        finally:
            for s in sinks:
                s.released()  # type: ignore[attr-defined]
        if times is not None and ran:
            sched.recorder.executed(times, decoupled, ran)


class _ReleasingInstance(ModelInstance):
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


class _OldestBatcher:
    """One instance's slots (max_candidate_sequences, as Triton's); each sequence keeps at
    most one request in the instance's dynamic batcher."""

    def __init__(self, sched: "SequenceScheduler", index: int, instance: ModelInstance, config: Any,
                 recorder: StatsRecorder, spawn: Callable, order) -> None:
        self.sched = sched
        self.index = index
        self.instance = instance
        self.leaving: _Leaving | None = None  # its instance was removed by a reload
        self.slots = [_Slot(self, i, next(order)) for i in range(sched.settings.slots_per_instance)]
        synthetic = type(config)()
        synthetic.CopyFrom(config)
        synthetic.ClearField("sequence_batching")
        oldest = config.sequence_batching.oldest
        db = synthetic.dynamic_batching
        db.preferred_batch_size.extend(oldest.preferred_batch_size)
        db.max_queue_delay_microseconds = oldest.max_queue_delay_microseconds
        db.preserve_ordering = oldest.preserve_ordering
        self.inner = Scheduler(sched.model_name, sched.version, [_ReleasingInstance(instance)],
                               BatchingConfig(synthetic), recorder, spawn)

    def busy(self) -> bool:
        return any(s.queue or s.in_flight for s in self.slots)

    def wake(self, slot: _Slot | None = None) -> None:
        if slot is not None:
            self.issue(slot)

    def issue(self, slot: _Slot) -> None:
        sched = self.sched
        while not slot.in_flight and slot.queue:
            item = slot.queue.popleft()
            sched.recorder.dequeued()
            sched._take(item, slot)
            if item.request.sequence_end or (slot.ending and not slot.queue):
                sched._release_slot(slot)
            try:
                # Its queue time counts from when the sequence batcher got it, as Triton's.
                self.inner.enqueue(item.request, _SeqSink(sched, item), 1, item.enqueue_ns)
            except InferenceError as exc:
                item.state = _DONE
                item.released = True
                slot.in_flight -= 1
                item.sink.finish(exc)

    def released(self, slot: _Slot) -> None:
        self.issue(slot)


class _Leaving:
    """A batcher whose instance a reload removed: the slots its sequences still hold, and
    what closes the instance once they have ended (Triton's pending-removal slots)."""

    __slots__ = ("held", "close")

    def __init__(self, held: set[_Slot], close: Callable[[ModelInstance], Awaitable[None]]) -> None:
        self.held = held
        self.close = close


# ---------------------------------------------------------------------- the scheduler --


class SequenceScheduler:
    """The sequence batcher of one model version (same interface as `Scheduler`)."""

    _iterative_ids = itertools.count(1)

    def __init__(self, model_name: str, version: int, instances: Sequence[ModelInstance], config: Any,
                 model_dir: Path | None, recorder: StatsRecorder, spawn: Callable[[Any, str], asyncio.Task],
                 declared_outputs: Sequence[str] = ()) -> None:
        self.model_name = model_name
        self.version = version
        self.settings = SequenceSettings(config, model_dir)
        self.recorder = recorder
        self._spawn = spawn
        self.declared_outputs = tuple(declared_outputs)
        self._config = config
        self._order = itertools.count()
        self._batcher_ids = itertools.count()
        self.batchers: list[Any] = [self._new_batcher(inst) for inst in instances]
        # Free slots, lowest row first across instances (keeps batches dense).
        self._free: list[tuple[int, int, _Slot]] = [
            (s.index, b.index, s) for b in self.batchers for s in b.slots]
        heapq.heapify(self._free)
        self.active: dict[Any, _Slot] = {}
        self.backlog: deque[_Backlog] = deque()
        self.backlog_by_id: dict[Any, _Backlog] = {}
        self.last_seen: dict[Any, int] = {}
        self.closing = False
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------------ lifecycle --

    @property
    def size(self) -> int:
        return sum(len(s.queue) for b in self.batchers for s in b.slots) + sum(len(b.queue) for b in self.backlog)

    def _new_batcher(self, instance: ModelInstance) -> Any:
        index = next(self._batcher_ids)
        if self.settings.oldest:
            return _OldestBatcher(self, index, instance, self._config, self.recorder, self._spawn, self._order)
        return _DirectBatcher(self, index, instance, self.settings.slots_per_instance, self._order)

    def _start_batcher(self, b: Any) -> None:
        if isinstance(b, _DirectBatcher):
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
            if isinstance(b, _OldestBatcher):
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
            b.leaving = _Leaving({slot for slot in b.slots if slot.corrid is not None}, close)
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
            if isinstance(b, _DirectBatcher):
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
        item = _Item(request, sink, corrid, owner=self.settings.iterative and request.sequence_start)
        self._place(item)
        self.recorder.queued()
        if request.trace is not None:
            request.trace.stamp("QUEUE_START", item.enqueue_ns)
        request.cancel.on_cancel(lambda: self._cancel(item))

    def _unknown_sequence(self, corrid: Any) -> InferenceError:
        return InferenceError.invalid(
            f"inference request for sequence {corrid} to model '{self.model_name}' must specify the START "
            f"flag on the first request of the sequence")

    def _place(self, item: _Item) -> None:
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
            backlog = _Backlog(corrid)
            self.backlog.append(backlog)
            self.backlog_by_id[corrid] = backlog
        item.where = backlog
        backlog.queue.append(item)
        if end:
            backlog.ended = True
            self.backlog_by_id.pop(corrid, None)

    # ------------------------------------------------------------------ batch preparation --

    def _take(self, item: _Item, slot: _Slot) -> None:
        """Turn a queued request into what the model sees: its inputs plus controls and state."""
        settings = self.settings
        request = item.request
        item.where = None
        item.slot = slot
        item.state = _RUNNING
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

    def _null_request(self, rep: _Item, slot: _Slot) -> InferenceRequest:
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

    def _on_response(self, item: _Item, response: InferenceResponse) -> None:
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

    # ------------------------------------------------------------------ release and slots --

    def _on_release(self, item: _Item) -> None:
        """The backend released a request (its execute returned, or it never ran)."""
        slot: _Slot = item.slot
        slot.in_flight = max(0, slot.in_flight - 1)
        if item.rescheduled:
            self._reschedule(item)
        elif item.owner and slot.corrid == item.corrid:
            self._end_sequence(item.corrid, slot)  # an iterative sequence ends with its request
        if slot.ending and slot.corrid is not None and not slot.queue and not slot.in_flight:
            self._release_slot(slot)
        slot.batcher.released(slot)

    def _reschedule(self, item: _Item) -> None:
        request = item.request
        item.rescheduled = False
        request.outputs = item.client_outputs
        request.inputs = list(item.base_inputs)
        request.sequence_start = False
        request.sequence_end = False
        item.state = _QUEUED
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
            item.state = _DONE
            item.sink.finish(exc)
            return
        self.recorder.queued()

    def _end_sequence(self, corrid: Any, slot: _Slot) -> None:
        if self.active.get(corrid) is slot:
            del self.active[corrid]
        self.last_seen.pop(corrid, None)
        if not slot.queue and not slot.in_flight:
            self._release_slot(slot)
        else:
            slot.ending = True

    def _release_slot(self, slot: _Slot) -> None:
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

    def _finish_queued(self, item: _Item, error: InferenceError) -> None:
        if item.state != _QUEUED:
            return
        item.state = _DONE
        item.where = None
        self.recorder.dequeued()
        item.sink.finish(error)

    # ------------------------------------------------------------------ cancellation --

    def _cancel(self, item: _Item) -> None:
        """A queued request was cancelled: end its whole sequence, as Triton does."""
        if item.state != _QUEUED:
            return
        where = item.where
        err = Skipped.cancelled("request cancelled")
        corrid = item.corrid
        if isinstance(where, _Backlog):
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
        if isinstance(where, _Slot):
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
