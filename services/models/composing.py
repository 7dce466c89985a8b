"""Models that contain others (ensembles), from the manager's side: load what an ensemble
composes before it, order a batch of loads so that ensembles come after their composing
models, and unload an ensemble with its composing models (Triton's `unload_dependents`).

The manager calls these with itself; the ensemble package never sees the manager.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any, Sequence

from naiad.kernel.inference.errors import InferenceError

from .ensemble import composing_models, is_ensemble

log = logging.getLogger("naiad.services.models")

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
