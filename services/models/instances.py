"""Which instances a model version's `instance_group`s ask for, and — when a reload only
changes `instance_group` — which running instances can stay.

Triton's rule: an instance is identified by its group's settings other than `name` and
`count`, plus its device (its *signature*). On an update, each instance the new groups ask
for takes a running instance with the same signature if one is left (the most recently
listed first, as Triton does), else a new one is created; running instances nobody took
are removed. Kept instances are not re-initialised and keep their names.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Sequence

from naiad.kernel.inference import model_config as mcfg
from naiad.kernel.inference.backend import Backend, InstanceSpec, ModelInstance, ModelSpec
from naiad.kernel.inference.errors import InferenceError

from . import warmup

log = logging.getLogger("naiad.services.models")


@dataclass(frozen=True)
class PlannedInstance:
    """One instance a config asks for."""

    spec: InstanceSpec
    group: Any  # the ModelInstanceGroup it comes from
    signature: bytes


def signature(group: Any, device_id: int) -> bytes:
    """What makes two instances interchangeable: the group without `name` and `count`,
    and the device."""
    g = type(group)()
    g.CopyFrom(group)
    g.ClearField("name")
    g.ClearField("count")
    return g.SerializeToString(deterministic=True) + b"\0" + str(device_id).encode()


def plan(config: Any) -> list[PlannedInstance]:
    """Every instance of a (normalised) config, in creation order; named `<group>_<index>`."""
    out: list[PlannedInstance] = []
    for group in config.instance_group:
        kind = mcfg.kind_name(group.kind)
        devices = list(group.gpus) if kind == "GPU" and group.gpus else [0]
        index = 0
        for device in devices:
            sig = signature(group, device)
            for _ in range(group.count):
                spec = InstanceSpec(name=f"{group.name}_{index}", kind=kind, device_id=device,
                                    group=group.name, index=index)
                out.append(PlannedInstance(spec, group, sig))
                index += 1
    return out


@dataclass
class InstanceChange:
    """The outcome of matching a new plan against the running instances."""

    kept: list[ModelInstance]
    create: list[PlannedInstance]
    removed: list[ModelInstance]


def match(running: Sequence[tuple[bytes, ModelInstance]], wanted: Sequence[PlannedInstance]) -> InstanceChange:
    """Reuse running instances by signature; what is left over is created or removed."""
    by_signature: dict[bytes, list[ModelInstance]] = {}
    for sig, inst in running:
        by_signature.setdefault(sig, []).append(inst)
    kept: list[ModelInstance] = []
    create: list[PlannedInstance] = []
    for p in wanted:
        pool = by_signature.get(p.signature)
        if pool:
            kept.append(pool.pop())
        else:
            create.append(p)
    removed = [inst for pool in by_signature.values() for inst in pool]
    return InstanceChange(kept, create, removed)


async def create(backend: Backend, model: ModelSpec, planned: Sequence[PlannedInstance],
                 recorder: Any = None) -> list[ModelInstance]:
    """Create the planned instances concurrently and warm each up (`model_warmup`); when one
    fails, the others are closed and its error is raised. Warm-up requests count in
    `recorder`'s statistics, as Triton's do."""
    results = await asyncio.gather(*(backend.create_instance(model, p.spec) for p in planned),
                                   return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    created = [r for r in results if not isinstance(r, BaseException)]
    if errors:
        await asyncio.gather(*(inst.close() for inst in created), return_exceptions=True)
        err = errors[0]
        if isinstance(err, InferenceError):
            raise err
        raise InferenceError.internal(f"{err.__class__.__name__}: {err}")
    for p in planned:
        log.debug("Created model instance named '%s' with device id '%d'", p.spec.name, p.spec.device_id,
                  extra={"verbose": 2})
    if model.config.model_warmup:
        # Each instance warms up before the version may serve (Triton: at instance init).
        results = await asyncio.gather(*(warmup.warm_up(inst, model, p.spec.name, recorder) for inst, p in zip(created, planned)),
                                       return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            await asyncio.gather(*(inst.close() for inst in created), return_exceptions=True)
            raise failed if isinstance(failed, InferenceError) else InferenceError.internal(str(failed))
        log.info("model '%s' version %d: warm-up of %d instance(s) took %.3f s", model.name, model.version,
                 len(created), max(results))
    return created


def only_instances_differ(old: Any, new: Any) -> bool:
    """Triton's test for updating a serving version in place: the configs are equal once
    `instance_group` is left out."""
    a, b = type(old)(), type(new)()
    a.CopyFrom(old)
    b.CopyFrom(new)
    a.ClearField("instance_group")
    b.ClearField("instance_group")
    return a == b


async def update(lv: Any, config: Any, scheduling: Any) -> None:
    """Give the serving version `lv` the instance groups of `config` in place: create the
    instances it lacks, then the scheduler serves on them and lets go of the ones no longer
    asked for, which are closed once their work is done. Kept instances never stop serving.
    When a new instance fails, nothing changes and the error is raised."""
    wanted = plan(config)
    # Only serving instances have a signature: one an earlier update removed may still be
    # finishing its sequences, and is never taken back.
    change = match([(lv.signatures[i], i) for i in lv.instances if i in lv.signatures], wanted)
    for inst in change.kept:
        made = getattr(inst, "instance", None)  # the InstanceSpec it was created with, where kept
        if isinstance(made, InstanceSpec):
            log.debug("Re-using model instance named '%s' with device id '%d'", made.name, made.device_id,
                      extra={"verbose": 2})
    own = type(config)()
    own.CopyFrom(config)  # the version's own: versions loaded together share one config
    spec = dataclasses.replace(lv.spec, config=own)
    created = await create(lv.backend, spec, change.create, lv.recorder)
    added = [scheduling.limit(lv, inst, p) for inst, p in zip(created, change.create)]
    for inst, p in zip(added, change.create):
        lv.signatures[inst] = p.signature
    for inst in change.removed:
        del lv.signatures[inst]
    lv.spec, lv.config = spec, own
    # Removed instances stay listed until closed, so that an unload meanwhile closes them.
    lv.instances = change.kept + added + [i for i in lv.instances if i not in lv.signatures]

    async def close(inst: ModelInstance) -> None:
        try:
            await inst.close()
        except Exception:  # noqa: BLE001 - a removed instance that fails to close is gone anyway
            log.exception("model '%s': closing a removed instance failed", lv.name)
        lv.instances = [i for i in lv.instances if i is not inst]

    lv.scheduler.add_instances(added)
    await lv.scheduler.remove_instances(change.removed, close)
    log.info("model '%s' version %d: %d instance(s) kept, %d created, %d removed", lv.name, lv.version,
             len(change.kept), len(added), len(change.removed))
