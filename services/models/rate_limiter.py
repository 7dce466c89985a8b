"""Triton's rate limiter (`--rate-limit=execution_count`): model instances run only when
the resources their `instance_group.rate_limiter` lists are free, and contention is
settled by priority across every instance of every model.

Resources are counted per device, or once for the whole server when a model marks one
`global`. How many copies exist: `--rate-limit-resource=<name>:<count>[:<device>]`
(without a device: every device, and the global copy), else the largest count any
loaded instance asks for. An explicit count below what an instance needs fails that
model's load, with Triton's message.

Priority is a weight: an instance with priority 2 gets half the turns of one with
priority 1 while both wait. Each instance carries a virtual clock that advances by its
priority each time it is admitted; waiters are admitted in clock order whenever their
resources fit. Admission runs on the loop turn after a release, so an instance that
finished and asks again at once competes with the waiters by clock; nobody skips the
queue meanwhile.

The limiter works by wrapping instances (`RateLimitedInstance`), so every scheduler —
dynamic batcher, sequence batcher — goes through it unchanged.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from typing import Any, Sequence

from naiad.kernel.inference.backend import ExecutionTimes, ModelInstance
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, ResponseSink

GLOBAL = "global"

log = logging.getLogger("naiad.services.models")

ResourceKey = tuple[str, Any]  # (name, device id or GLOBAL)


def parse_resource(text: str) -> tuple[str, int, int | None]:
    """`<name>:<count>[:<device>]` -> (name, count, device or None)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise ValueError(f"--rate-limit-resource expects <name>:<count>[:<device>], got '{text}'")
    try:
        count = int(parts[1])
        device = int(parts[2]) if len(parts) == 3 else None
    except ValueError:
        raise ValueError(f"--rate-limit-resource expects integer count and device, got '{text}'") from None
    if count < 0:
        raise ValueError(f"--rate-limit-resource count must be >= 0, got '{text}'")
    return parts[0], count, device


class Gate:
    """One instance's entry to the limiter: what it needs and its priority."""

    __slots__ = ("limiter", "name", "needs", "priority", "vtime", "active")

    def __init__(self, limiter: "RateLimiter", name: str, needs: list[tuple[ResourceKey, int]], priority: int) -> None:
        self.limiter = limiter
        self.name = name
        self.needs = needs
        self.priority = max(1, priority)
        self.vtime = 0
        self.active = 0  # executions holding resources now

    async def acquire(self) -> None:
        await self.limiter.acquire(self)

    def release(self) -> None:
        self.limiter.release(self)


class RateLimiter:
    def __init__(self, resources: Sequence[str] = ()) -> None:
        self.explicit: dict[tuple[str, Any], int] = {}  # (name, device or None) -> count
        for text in resources:
            name, count, device = parse_resource(text)
            self.explicit[(name, device)] = count
        self.gates: set[Gate] = set()
        self.in_use: dict[ResourceKey, int] = {}
        self.clock = 0
        self._waiters: list[tuple[int, int, Gate, asyncio.Future]] = []
        self._seq = itertools.count()
        self._admit_soon = False

    # ------------------------------------------------------------------ registration --

    def capacity(self, key: ResourceKey) -> int:
        name, where = key
        if (name, where) in self.explicit:
            return self.explicit[(name, where)]
        if (name, None) in self.explicit:
            return self.explicit[(name, None)]
        need = 0
        for g in self.gates:
            for k, n in g.needs:
                if k == key:
                    need = max(need, n)
        return need

    def register(self, instance_name: str, rate_limiter: Any, device_id: int) -> Gate:
        """A gate for an instance whose group has `rate_limiter` (a ModelRateLimiter or None)."""
        needs: dict[ResourceKey, int] = {}
        priority = 1
        if rate_limiter is not None:
            for r in rate_limiter.resources:
                if not r.name:
                    raise InferenceError.invalid(f"instance '{instance_name}': a rate limiter resource has no name")
                key: ResourceKey = (r.name, GLOBAL if r.__getattribute__("global") else device_id)
                needs[key] = needs.get(key, 0) + int(r.count)
            priority = int(rate_limiter.priority) or 1
        for (name, where), count in needs.items():
            explicit = self.explicit.get((name, where), self.explicit.get((name, None)))
            if explicit is not None and explicit < count:
                raise InferenceError.invalid(
                    f'Resource count for "{name}" is limited to {explicit} which will prevent scheduling of one '
                    f"or more model instances, the minimum required count is {count}")
        gate = Gate(self, instance_name, list(needs.items()), priority)
        gate.vtime = self.clock
        self.gates.add(gate)
        self._log_capacities()
        return gate

    def unregister(self, gate: Gate) -> None:
        self.gates.discard(gate)
        self._log_capacities()
        self._schedule_admit()  # capacities may have shrunk or waiters may have gone

    def _log_capacities(self) -> None:
        """Triton's verbose "Max Resource Map" after the instances changed (its tests read it)."""
        if not log.isEnabledFor(logging.DEBUG):
            return
        keys = {k for g in self.gates for k, _ in g.needs}
        keys |= {(name, GLOBAL if where is None else where) for name, where in self.explicit}
        by_device: dict[Any, list[str]] = {}
        for key in sorted(keys, key=str):
            by_device.setdefault(key[1], []).append(f"\t\tResource: {key[0]}\t Count: {self.capacity(key)}\n")
        text = "\nMax Resource Map===>\n" + "".join(
            f"\tDevice: {'GLOBAL' if device == GLOBAL else device}\n" + "".join(lines)
            for device, lines in by_device.items())
        log.debug("%s", text, extra={"verbose": 1})

    # ------------------------------------------------------------------ admission --

    def _fits(self, gate: Gate) -> bool:
        for key, n in gate.needs:
            if self.in_use.get(key, 0) + n > self.capacity(key):
                return False
        return True

    def _take(self, gate: Gate) -> None:
        for key, n in gate.needs:
            self.in_use[key] = self.in_use.get(key, 0) + n
        gate.active += 1
        self.clock = max(self.clock, gate.vtime)
        gate.vtime = max(gate.vtime, self.clock) + gate.priority

    async def acquire(self, gate: Gate) -> None:
        if not self._waiters and not self._admit_soon and self._fits(gate):
            self._take(gate)
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (max(gate.vtime, self.clock), next(self._seq), gate, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(gate)  # admitted just as we were cancelled: give it back
            else:
                self._waiters = [w for w in self._waiters if w[3] is not fut]
                heapq.heapify(self._waiters)
            raise

    def release(self, gate: Gate) -> None:
        for key, n in gate.needs:
            self.in_use[key] = self.in_use.get(key, 0) - n
        gate.active -= 1
        self._schedule_admit()

    def _schedule_admit(self) -> None:
        """Admit on the next loop turn: an instance that just finished and has more work
        asks again within this turn, so it competes with the waiters by priority instead
        of always queueing behind them."""
        if not self._waiters or self._admit_soon:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._admit()
            return
        self._admit_soon = True
        loop.call_soon(self._admit)

    def _admit(self) -> None:
        """Admit waiters in clock order while their resources fit; one that does not fit
        keeps its place (others that fit may pass it, as they need other resources)."""
        self._admit_soon = False
        if not self._waiters:
            return
        kept = []
        while self._waiters:
            item = heapq.heappop(self._waiters)
            _, _, gate, fut = item
            if fut.done():
                continue
            if self._fits(gate):
                self._take(gate)
                fut.set_result(None)
            else:
                kept.append(item)
        for item in kept:
            heapq.heappush(self._waiters, item)

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w[3].done())


class RateLimitedInstance(ModelInstance):
    """A model instance that executes only while its gate holds the resources."""

    def __init__(self, inner: ModelInstance, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate
        self.max_inflight = int(getattr(inner, "max_inflight", 1))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def execute(self, requests: Sequence[InferenceRequest], sinks: Sequence[ResponseSink]) -> ExecutionTimes:
        await self.gate.acquire()
        try:
            return await self.inner.execute(requests, sinks)
        finally:
            self.gate.release()

    async def close(self) -> None:
        self.gate.limiter.unregister(self.gate)
        await self.inner.close()

    def abort(self, error: InferenceError) -> None:
        self.inner.abort(error)
