"""An ensemble's plan: its steps and their tensor mappings, checked at load against the
composing models' configs (every step reachable, one decoupled lineage per step), and which
steps a request's outputs need."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from naiad.kernel.inference import model_config as mcfg
from naiad.kernel.inference.errors import InferenceError

from .. import repository as repo
from ..sequence import control_input_names

PLATFORM = "ensemble"


def is_ensemble(config: Any) -> bool:
    return config.platform == PLATFORM or config.HasField("ensemble_scheduling")


class Step:
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
        self.steps = [Step(i, s, namespace) for i, s in enumerate(sched.step)]
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
                if mi not in mapped and not spec.optional and mi not in control_input_names(cfg):
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
        self.consumers: dict[str, list[Step]] = {}
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


# ---------------------------------------------------------------------- composing models --


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
