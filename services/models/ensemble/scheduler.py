"""Running an ensemble request: each step is submitted as soon as its inputs are there,
decoupled steps fork branches, and the ensemble answers once every output is in (one
response per completed branch when decoupled)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import (
    CancelToken,
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    ResponseSink,
    Tensor,
)

from ..recorder import StatsRecorder
from .plan import EnsemblePlan, Step

log = logging.getLogger("naiad.services.models")

Submit = Callable[[InferenceRequest, ResponseSink], None]


class _Branch:
    __slots__ = ("tensors", "launched", "emitted")

    def __init__(self, tensors: dict[str, Tensor], launched: set[int]) -> None:
        self.tensors = tensors
        self.launched = launched
        self.emitted = False

    def fork(self) -> "_Branch":
        return _Branch(dict(self.tensors), set(self.launched))


class _StepSink(ResponseSink):
    __slots__ = ("run", "step", "branch", "open")

    def __init__(self, run: "_Run", step: Step, branch: _Branch) -> None:
        self.run = run
        self.step = step
        self.branch = branch
        self.open = True

    def send(self, response: InferenceResponse) -> None:
        if not self.open:
            return
        if response.final:
            self.open = False
        self.run.step_response(self, response)

    def finish(self, error: InferenceError | None = None) -> None:
        if not self.open:
            return
        self.open = False
        self.run.step_finished(self, error)


class _StepRequest(InferenceRequest):
    """A step's request to a composing model: the composing model's compute times also
    count for the ensemble, as Triton counts them."""

    __slots__ = ("run",)

    def add_compute(self, compute_input: int, compute_infer: int, compute_output: int) -> None:
        self.run.add_compute(compute_input, compute_infer, compute_output)


class _Run:
    """One ensemble request in flight."""

    __slots__ = ("sched", "request", "sink", "batch_size", "children", "in_flight", "done", "emitted", "outputs",
                 "steps", "queue_ns", "compute", "counted")

    def __init__(self, sched: "EnsembleScheduler", request: InferenceRequest, sink: ResponseSink,
                 batch_size: int) -> None:
        self.sched = sched
        self.request = request
        self.sink = sink
        self.batch_size = batch_size
        self.children: list[CancelToken] = []
        self.in_flight = 0
        self.done = False
        self.emitted = 0
        requested = None if request.outputs is None else [o.name for o in request.outputs]
        self.outputs, self.steps = sched.plan.needed(requested)
        self.queue_ns = 0
        self.compute = [0, 0, 0]  # the composing models' compute input / infer / output ns
        self.counted: bool | None = None  # None while running, then whether it succeeded

    def start(self, enqueue_ns: int) -> None:
        self.queue_ns = time.monotonic_ns() - enqueue_ns
        tensors = {t.name: t for t in self.request.inputs}
        self.advance(_Branch(tensors, set()))
        self.check_done()

    def advance(self, branch: _Branch) -> None:
        plan = self.sched.plan
        for step in plan.steps:
            if self.done:
                return
            if step.index in branch.launched or step.index not in self.steps:
                continue
            if all(t in branch.tensors for _, t in step.inputs):
                branch.launched.add(step.index)
                self.launch(step, branch)
        if not branch.emitted and not self.done and all(o in branch.tensors for o in self.outputs):
            branch.emitted = True
            self.emit(branch)

    def launch(self, step: Step, branch: _Branch) -> None:
        parent = self.request
        inputs = []
        for model_input, tensor in step.inputs:
            t = branch.tensors[tensor]
            inputs.append(Tensor(model_input, t.datatype, t.shape, array=t._array, raw=t._raw, shm=t.shm))
        token = CancelToken()
        self.children.append(token)
        child = _StepRequest(
            step.target, inputs, model_version=step.version, id=parent.id,
            outputs=[RequestedOutput(name) for name in step.outputs],
            parameters=dict(parent.parameters), priority=parent.priority, timeout_us=parent.timeout_us,
            sequence_id=parent.sequence_id, sequence_start=parent.sequence_start,
            sequence_end=parent.sequence_end, flags=parent.flags, cancel=token,
            protocol=parent.protocol or "ensemble", parent=parent)
        child.run = self
        self.in_flight += 1
        try:
            self.sched.submit(child, _StepSink(self, step, branch))
        except InferenceError as exc:
            self.in_flight -= 1
            self.fail(exc)

    def step_response(self, sink: _StepSink, response: InferenceResponse) -> None:
        if response.final:
            self.in_flight -= 1
        if self.done:
            return
        if response.error is not None:
            self.fail(response.error)
            return
        step = sink.step
        if response.outputs or not step.decoupled:
            branch = sink.branch.fork() if step.decoupled else sink.branch
            for t in response.outputs:
                tensor = step.outputs.get(t.name)
                if tensor is not None:
                    branch.tensors[tensor] = Tensor(tensor, t.datatype, t.shape, array=t._array, raw=t._raw)
            self.advance(branch)
        self.check_done()

    def step_finished(self, sink: _StepSink, error: InferenceError | None) -> None:
        self.in_flight -= 1
        if self.done:
            return
        if error is not None:
            self.fail(error)
            return
        self.check_done()

    def emit(self, branch: _Branch) -> None:
        sched = self.sched
        outputs = [branch.tensors[o] for o in self.outputs]
        self.emitted += 1
        if sched.plan.decoupled:
            self.sink.send(InferenceResponse(sched.name, sched.version, outputs, id=self.request.id, final=False))
        else:
            self.close()
            self.count_success()
            self.sink.send(InferenceResponse(sched.name, sched.version, outputs, id=self.request.id))

    def check_done(self) -> None:
        if self.done or self.in_flight:
            return
        if self.sched.plan.decoupled:
            self.close()
            self.count_success()
            self.sink.finish()
        elif not self.emitted:
            self.fail(InferenceError.invalid(
                f"[request id: {self.request.id or '<id_unknown>'}] unexpected deadlock, at least one output is not "
                f"set while no more ensemble steps can be made"))

    def count_success(self) -> None:
        """As Triton: a successful ensemble request is one execution of the ensemble, whose
        compute times are its composing models'."""
        ci, cf, co = self.compute
        self.counted = True
        self.sched.recorder.add_execution(max(1, self.batch_size), 1, self.queue_ns, ci, cf, co)

    def add_compute(self, ci: int, cf: int, co: int) -> None:
        if self.counted is None:
            self.compute[0] += ci
            self.compute[1] += cf
            self.compute[2] += co
        elif self.counted:  # a step's times arrive after its response ended the ensemble
            self.sched.recorder.add_compute(max(1, self.batch_size), ci, cf, co)

    def fail(self, error: InferenceError) -> None:
        if self.done:
            return
        self.close()
        self.counted = False
        for token in self.children:
            token.cancel()
        # Triton names the ensemble in every error it answers.
        self.sink.finish(InferenceError(f"in ensemble '{self.sched.name}', {error.message}", error.code))

    def cancel(self) -> None:
        if self.done:
            return
        self.fail(InferenceError.cancelled("request cancelled"))

    def close(self) -> None:
        self.done = True
        self.sched.active.discard(self)


class EnsembleScheduler:
    """The "scheduler" of an ensemble: runs each request's DAG (interface of `Scheduler`)."""

    def __init__(self, name: str, version: int, plan: EnsemblePlan, submit: Submit | None,
                 recorder: StatsRecorder) -> None:
        self.name = name
        self.version = str(version)
        self.plan = plan
        self._submit = submit
        self.recorder = recorder
        self.active: set[_Run] = set()
        self.closing = False

    @property
    def size(self) -> int:
        return 0

    def submit(self, request: InferenceRequest, sink: ResponseSink) -> None:
        if self._submit is None:
            raise InferenceError.unavailable(f"ensemble '{self.name}' cannot reach its composing models")
        self._submit(request, sink)

    def start(self) -> None:
        pass

    def enqueue(self, request: InferenceRequest, sink: ResponseSink, batch_size: int) -> None:
        enqueue_ns = time.monotonic_ns()
        if self.closing:
            raise InferenceError.unavailable(f"model '{self.name}' is unloading")
        run = _Run(self, request, sink, batch_size)
        self.active.add(run)
        request.cancel.on_cancel(run.cancel)
        if not run.done:
            run.start(enqueue_ns)

    async def drain_and_stop(self, timeout: float | None = None) -> None:
        self.closing = True
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.active and (deadline is None or time.monotonic() < deadline):
            await asyncio.sleep(0.01)
        for run in list(self.active):
            run.fail(InferenceError.unavailable(f"model '{self.name}' is unloading"))
