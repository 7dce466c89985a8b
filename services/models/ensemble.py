"""Ensembles (`platform: "ensemble"`): a DAG of composing models from
`ensemble_scheduling.step`, run as one model.

Each step maps ensemble tensors to its model's inputs (`input_map`: model input ->
ensemble tensor) and its model's outputs back to ensemble tensors (`output_map`). A step
is submitted the moment every input it maps is available, through the same path as any
request (validation, the composing model's own scheduler and statistics), so independent
steps run concurrently. The ensemble answers once every ensemble output is there.

Decoupled steps stream: each response of a decoupled step starts a new *branch* — a copy
of the tensors so far plus that response's outputs — and the steps downstream run once
per branch; the ensemble is then decoupled itself (as Triton marks it) and sends one
response per completed branch, then the final flag. A step whose inputs come from two
different decoupled steps is refused at load, as Triton does.

A failing step fails the ensemble request with that step's error (the other steps'
results are dropped and the steps still running are cancelled). Cancelling the ensemble
request cancels every step it submitted.

Loading: an ensemble is a model with no instances (`EnsembleBackend`); it loads after
its composing models (`order_for_loading`), explicit loads bring missing composing
models in first (`load_composing`), and `unload(..., dependents=True)` also unloads
them (Triton's `unload_dependents`). Composing models are looked up per request, so
reloading one never disturbs the ensemble.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from naiad.kernel.inference import model_config as mcfg
from naiad.kernel.inference.backend import Backend, ExecutionTimes, InstanceSpec, ModelInstance, ModelSpec
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import (
    CancelToken,
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    ResponseSink,
    Tensor,
)

from . import repository as repo
from .recorder import StatsRecorder

log = logging.getLogger("naiad.services.models")

PLATFORM = "ensemble"
BACKEND = "ensemble"  # the manager's name for the pseudo-backend that loads ensembles

Submit = Callable[[InferenceRequest, ResponseSink], None]


def is_ensemble(config: Any) -> bool:
    return config.platform == PLATFORM or config.HasField("ensemble_scheduling")


# ---------------------------------------------------------------------- backend --


class _NoInstance(ModelInstance):
    async def execute(self, requests: Sequence[InferenceRequest], sinks: Sequence[ResponseSink]) -> ExecutionTimes:
        raise InferenceError.internal("an ensemble has no instances to execute")

    async def close(self) -> None:
        pass


class EnsembleBackend(Backend):
    """Loads ensembles: nothing to load, the scheduler does the work."""

    name = BACKEND
    platforms = (PLATFORM,)

    async def create_instance(self, model: ModelSpec, instance: InstanceSpec) -> ModelInstance:
        return _NoInstance()


# ---------------------------------------------------------------------- the plan --


class _Step:
    __slots__ = ("index", "model", "target", "version", "inputs", "outputs", "decoupled")

    def __init__(self, index: int, step: Any, namespace: str) -> None:
        self.index = index
        self.model = step.model_name
        # What the step's requests name: with model namespacing `<repository>::<model>`, so
        # the model of the ensemble's own repository is preferred (the manager's `record`).
        self.target = repo.model_key(namespace, step.model_name)
        self.version = "" if step.model_version in (-1, 0) else str(step.model_version)
        self.inputs = [(model_input, tensor) for model_input, tensor in step.input_map.items()]
        self.outputs = dict(step.output_map.items())  # model output -> ensemble tensor
        self.decoupled = False


class EnsemblePlan:
    """The steps of an ensemble, checked against its composing models' configs."""

    def __init__(self, config: Any, resolve: Callable[[str, str], Any], namespace: str = "") -> None:
        """`resolve(model, version)` returns a composing model's LoadedVersion or raises;
        `namespace` is the ensemble's own (model namespacing)."""
        name = config.name
        self.name = name
        if config.instance_group:
            raise InferenceError.invalid(f"instance group should not be specified for ensemble '{name}'")
        if config.HasField("optimization"):
            raise InferenceError.invalid(f"optimization should not be specified for ensemble '{name}'")
        if config.model_warmup:
            raise InferenceError.invalid(f"model_warmup can not be specified for ensemble '{name}'")
        sched = config.ensemble_scheduling
        if not sched.step:
            raise InferenceError.invalid(f"must specify 'step' for ensemble '{name}'")
        self.steps = [_Step(i, s, namespace) for i, s in enumerate(sched.step)]
        self.outputs = [o.name for o in config.output]
        inputs = {i.name for i in config.input}
        labels: dict[str, int] = {t: 0 for t in inputs}
        producers: dict[str, int] = {}
        for step in self.steps:
            if not step.model:
                raise InferenceError.invalid(f"ensemble {name}: step {step.index} names no model")
            try:
                lv = resolve(step.target, step.version)
            except InferenceError as exc:
                raise InferenceError.invalid(
                    f"ensemble '{name}' depends on '{step.model}' which has no loaded version"
                    + (f": {exc.message}" if exc.message else "")) from None
            cfg = lv.config
            step.decoupled = bool(cfg.model_transaction_policy.decoupled)
            model_inputs = {i.name: i for i in cfg.input}
            model_outputs = {o.name for o in cfg.output}
            for model_input, tensor in step.inputs:
                if model_input not in model_inputs:
                    raise InferenceError.invalid(
                        f"in ensemble {name}, ensemble tensor {tensor} is mapping to non-existing input "
                        f"{model_input} in model {step.model}")
            mapped = {mi for mi, _ in step.inputs}
            for mi, spec in model_inputs.items():
                if mi not in mapped and not spec.optional and mi not in _control_inputs(cfg):
                    raise InferenceError.invalid(
                        f"in ensemble {name}, input {mi} in model {step.model} is not mapped to any ensemble tensors")
            for model_output, tensor in step.outputs.items():
                if model_output not in model_outputs:
                    raise InferenceError.invalid(
                        f"in ensemble {name}, ensemble tensor {tensor} is mapped from non-existing output "
                        f"{model_output} in model {step.model}")
                if tensor in producers:
                    raise InferenceError.invalid(
                        f"in ensemble {name}, ensemble tensor {tensor} is produced by more than one step")
                if tensor in inputs:
                    raise InferenceError.invalid(
                        f"in ensemble {name}, ensemble tensor {tensor} is an ensemble input and also produced by "
                        f"model {step.model}")
                producers[tensor] = step.index
            if cfg.max_batch_size and config.max_batch_size > cfg.max_batch_size:
                raise InferenceError.invalid(
                    f"ensemble {name} allows maximum batch size {config.max_batch_size}, but it contains model "
                    f"{step.model} which only allows maximum batch size to be {cfg.max_batch_size}")
        # Walk the graph: every step must be reachable, inputs from one decoupled lineage.
        self.consumers: dict[str, list[_Step]] = {}
        for step in self.steps:
            for _, tensor in step.inputs:
                self.consumers.setdefault(tensor, []).append(step)
        pending = list(self.steps)
        label_count = 0
        progress = True
        while pending and progress:
            progress = False
            for step in list(pending):
                if not all(t in labels for _, t in step.inputs):
                    continue
                seen = {labels[t] for _, t in step.inputs}
                if len(seen) > 1:
                    raise InferenceError.invalid(
                        f"in ensemble {name}, step of model '{step.model}' receives inputs originated from "
                        f"different decoupled models")
                label = seen.pop() if seen else 0
                if step.decoupled:
                    label_count += 1
                    label = label_count
                for tensor in step.outputs.values():
                    labels[tensor] = label
                pending.remove(step)
                progress = True
        if pending:
            missing = sorted({t for s in pending for _, t in s.inputs if t not in labels})
            raise InferenceError.invalid(
                f"in ensemble {name}, step(s) of model(s) {', '.join(repr(s.model) for s in pending)} can never run: "
                f"ensemble tensor(s) {', '.join(missing)} are neither ensemble inputs nor produced by a step")
        for out in self.outputs:
            if out not in labels:
                raise InferenceError.invalid(f"in ensemble {name}, ensemble output {out} is not produced by any step")
        if len({labels[o] for o in self.outputs}) > 1:
            raise InferenceError.invalid(
                f"in ensemble {name}, the ensemble outputs originate from different decoupled models")
        self.decoupled = label_count > 0
        self._needed: dict[frozenset[str], tuple[list[str], frozenset[int]]] = {}

    def needed(self, requested: Sequence[str] | None) -> tuple[list[str], frozenset[int]]:
        """(the ensemble outputs to send, the steps that must run for them): as Triton,
        steps that feed none of the requested outputs are pruned."""
        wanted = frozenset(self.outputs if requested is None else requested) & frozenset(self.outputs)
        found = self._needed.get(wanted)
        if found is None:
            tensors = set(wanted)
            steps: set[int] = set()
            changed = True
            while changed:
                changed = False
                for step in self.steps:
                    if step.index not in steps and tensors.intersection(step.outputs.values()):
                        steps.add(step.index)
                        tensors.update(t for _, t in step.inputs)
                        changed = True
            found = self._needed[wanted] = ([o for o in self.outputs if o in wanted], frozenset(steps))
        return found


def _control_inputs(config: Any) -> set[str]:
    if not config.HasField("sequence_batching"):
        return set()
    sb = config.sequence_batching
    return {c.name for c in sb.control_input} | {s.input_name for s in sb.state}


# ---------------------------------------------------------------------- one request --


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

    def __init__(self, run: "_Run", step: _Step, branch: _Branch) -> None:
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

    def launch(self, step: _Step, branch: _Branch) -> None:
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


# ---------------------------------------------------------------------- the scheduler --


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


# ---------------------------------------------------------------------- loading order --


def _read_config(model_dir: Path | None, override: str | None) -> Any | None:
    try:
        if override is not None:
            return mcfg.parse_json(override)
        if model_dir is None:
            return None
        path = model_dir / repo.CONFIG_FILE
        return mcfg.parse_file(path) if path.exists() else None
    except InferenceError:
        return None  # the load itself reports a broken config


def composing_models(model_dir: Path | None, override: str | None = None) -> list[str]:
    """The composing models an ensemble's config names ([] for any other model)."""
    config = _read_config(model_dir, override)
    if config is None or not is_ensemble(config):
        return []
    return list(dict.fromkeys(s.model_name for s in config.ensemble_scheduling.step if s.model_name))


_loading: contextvars.ContextVar[frozenset] = contextvars.ContextVar("naiad_ensemble_loading", default=frozenset())


async def load_composing(manager: Any, name: str, override: str | None = None,
                         namespace: str | None = None) -> None:
    """Before loading ensemble `name` (of repository `namespace` with model namespacing):
    load the composing models not loaded (never, or unloaded since), with namespacing those of every
    repository holding them, and wait for those being loaded right now. Failures are left
    for the ensemble's own load to report."""
    location = manager.locate(name, namespace)
    deps = composing_models(location.model_dir if location else None, override)
    if not deps:
        return
    stack = _loading.get() | {name}
    token = _loading.set(stack)
    try:
        for dep in deps:
            if dep in stack:
                continue  # a cycle: the ensemble's load reports the missing model
            for loc in manager.locate_all(dep):
                lock = manager._lock(loc.key)
                if lock.locked():
                    async with lock:
                        pass
                    continue
                record = manager.records.get(loc.key)
                if record is None or not record.wanted:  # never loaded, or unloaded since
                    try:
                        await manager.load(dep, namespace=loc.namespace or None)
                    except InferenceError:
                        pass
    finally:
        _loading.reset(token)


def order_for_loading(manager: Any, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(ordinary models, ensembles with the ones they contain first): ensembles load
    after every ordinary model has had its turn."""
    deps: dict[str, list[str]] = {}
    for n in names:
        d = list(dict.fromkeys(m for loc in manager.locate_all(n) for m in composing_models(loc.model_dir)))
        if d:
            deps[n] = d
    plain = [n for n in names if n not in deps]
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(n: str) -> None:
        if n in ordered or n in visiting:
            return
        visiting.add(n)
        for d in deps.get(n, ()):
            if d in deps:
                visit(d)
        visiting.discard(n)
        ordered.append(n)

    for n in names:
        if n in deps:
            visit(n)
    return plain, ordered


async def unload(manager: Any, name: str, dependents: bool = False) -> None:
    """Unload `name`; with `dependents`, also the composing models of that ensemble."""
    composing: list[str] = []
    if dependents:
        for record in manager.records_named(name):  # several with model namespacing
            for lv in record.versions.values():
                if is_ensemble(lv.config):
                    composing += [s.model_name for s in lv.config.ensemble_scheduling.step]
                    break
        composing = list(dict.fromkeys(composing))
    await manager.unload(name)
    for dep in composing:
        try:
            await unload(manager, dep, dependents=True)
        except InferenceError as exc:
            log.warning("unloading '%s' (composing model of '%s'): %s", dep, name, exc.message)
