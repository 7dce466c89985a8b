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

from .backend import BACKEND, EnsembleBackend
from .plan import PLATFORM, EnsemblePlan, composing_models, is_ensemble
from .scheduler import EnsembleScheduler

__all__ = ["BACKEND", "PLATFORM", "EnsembleBackend", "EnsemblePlan", "EnsembleScheduler", "composing_models",
           "is_ensemble"]
