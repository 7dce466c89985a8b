"""The native lanes this service publishes to the front ends (ext/frontend/lane.h).

A lane lets a native front end's thread put a plain inference request straight into a
model version's batch queue and answer it natively, so that such a request is never a
Python object; Python sees each batch once (Scheduler._run_lane, Session.execute_lane).
A version gets a lane only when nothing Python does per request applies to it:

- its scheduler is the plain dynamic (or default) batcher: no sequence batcher, ensemble,
  response cache or rate limiter;
- it is not decoupled, and every instance declares `serves_lanes` (the Python backend);
- every input has a fixed-size datatype (no BYTES), no reshape, no shape tensor, no ragged
  batching; the queue is the native one.

Requests a lane's front end cannot certainly serve (parameters, shared memory,
classification, JSON tensors, compression, tracing, priorities, timeouts) are declined
there and take the Python path, which validates and words errors as Triton does.

Front ends ask with `WatchLanes`; they are told of every open lane at once and of every
change after: `on_change(model, version, capsule_or_None)`, version "" standing for the
model's default version (the highest ready one, as `ModelRecord.resolve` picks).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from naiad.kernel.inference.datatypes import CONFIG_ENUM_NAME, CONFIG_TO_WIRE, numpy_from_wire
from naiad.kernel.inference.messages import UnwatchLanes, WatchLanes

from .lifecycle import LoadedVersion, State
from .scheduler import Scheduler

log = logging.getLogger("naiad.services.models")

OnChange = Callable[[str, str, Any], None]


def lane_schema(lv: LoadedVersion) -> tuple | None:
    """The schema tuple `BatchQueue.open_lane` takes, or None when `lv` cannot have a lane."""
    config = lv.config
    if type(lv.scheduler) is not Scheduler or lv.decoupled or not lv.instances:
        return None
    if not all(getattr(type(inst), "serves_lanes", False) for inst in lv.instances):
        return None
    inputs = []
    for inp in config.input:
        if inp.HasField("reshape") or inp.is_shape_tensor or inp.allow_ragged_batch:
            return None
        datatype = _wire(inp.data_type)
        if datatype is None:
            return None
        size = np.dtype(numpy_from_wire(datatype)).itemsize
        inputs.append((inp.name, datatype, [int(d) for d in inp.dims], size, bool(inp.optional)))
    if not inputs or len(inputs) > 64:
        return None
    return (lv.name, lv.version_str, int(config.max_batch_size), inputs, [o.name for o in config.output])


def _wire(data_type: int) -> str | None:
    """The wire datatype of a config enum value; None for BYTES (no fixed size) or unknown."""
    datatype = CONFIG_TO_WIRE.get(CONFIG_ENUM_NAME.get(int(data_type), ""))
    return None if datatype in (None, "BYTES") else datatype


class Lanes:
    """Open lanes by (model, version) and the front ends watching them."""

    def __init__(self, records: Callable[[str], Any]) -> None:
        self._records = records  # name -> ModelRecord | None
        self._watchers: dict[str, OnChange] = {}
        self._open: dict[tuple[str, str], Any] = {}

    async def watch(self, msg: WatchLanes) -> None:
        self._watchers[msg.owner] = msg.on_change
        for (model, version), lane in list(self._open.items()):
            msg.on_change(model, version, lane)

    async def unwatch(self, msg: UnwatchLanes) -> None:
        self._watchers.pop(msg.owner, None)

    def refresh(self, name: str) -> None:
        """Bring `name`'s lanes in line with its versions' states (after any change)."""
        try:
            record = self._records(name)
        except Exception:  # (namespacing: an ambiguous name gets no lane)
            record = None
        wanted: dict[tuple[str, str], Any] = {}
        if record is not None:
            ready = [lv for lv in record.versions.values() if lv.state is State.READY]
            for lv in ready:
                lane = self._lane_of(lv)
                if lane is not None:
                    wanted[(name, lv.version_str)] = lane
            if ready:
                default = max(ready, key=lambda v: v.version)
                if (name, default.version_str) in wanted:
                    wanted[(name, "")] = wanted[(name, default.version_str)]
        for key in [k for k in self._open if k[0] == name and k not in wanted]:
            del self._open[key]
            self._tell(key, None)
        for key, lane in wanted.items():
            if self._open.get(key) is not lane:
                self._open[key] = lane
                self._tell(key, lane)

    def _lane_of(self, lv: LoadedVersion) -> Any:
        scheduler = lv.scheduler
        if type(scheduler) is not Scheduler:
            return None
        if scheduler.lane is None:
            schema = lane_schema(lv)
            if schema is None:
                return None
            try:
                scheduler.open_lane(schema)
            except (ValueError, TypeError) as exc:  # a config the native schema cannot hold
                log.debug("model '%s' version %s gets no native lane: %s", lv.name, lv.version_str, exc)
                return None
        return scheduler.lane

    def _tell(self, key: tuple[str, str], lane: Any) -> None:
        for owner, on_change in list(self._watchers.items()):
            try:
                on_change(key[0], key[1], lane)
            except Exception:  # one front end's bug must not cost the others their lanes
                log.exception("native lane watcher '%s' failed", owner)
