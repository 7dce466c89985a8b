"""The event-loop side of a native front end's lanes (ext/frontend/lane.h): it asks the
models service for its lanes (`WatchLanes`), forwards each one to the native server
(`set_lane`), and keeps the server's global gate (`set_lanes_enabled`) right — on exactly
while a plain infer request may skip Python (`allowed()`, looked at on every call of
`check()`, at every service state change (the tracing service installs its tracer as it
starts, after the front ends) and every `period` seconds, as a setting such as tracing may
be switched on from elsewhere and tells no one), off for good from the first sign of
shutdown (`drain()`).

The native server exposes `set_lane(model, version, capsule_or_None)`, `clear_lanes()`,
`set_lanes_enabled(bool)`, `lanes_enabled` and `lane_inflight`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from naiad.kernel.inference.messages import UnwatchLanes, WatchLanes
from naiad.kernel.messages import ServiceStateChanged


class LaneGate:
    def __init__(self, server: Any, bus: Any, owner: str, allowed: Callable[[], bool], log: Any,
                 period: float = 0.25) -> None:
        self.server = server
        self.bus = bus
        self.owner = owner  # who watches (UnwatchLanes)
        self.allowed = allowed
        self.log = log
        self.period = period
        self.watching = False
        self.draining = False
        self._timer: asyncio.TimerHandle | None = None
        self._held = 0  # lane requests counted in `_lifecycle`'s in-flight work (hold_inflight)
        self._lifecycle: Any = None
        self._hold_timer: asyncio.TimerHandle | None = None
        self._states: Any = None  # the ServiceStateChanged subscription while watching
        self._follower: asyncio.Task | None = None

    async def watch(self) -> None:
        """Hear of the lanes (nothing happens where no service publishes them)."""
        if not self.bus.has_handler(WatchLanes):
            return
        await self.bus.request(WatchLanes(self.owner, self._on_lane))
        self.watching = True
        self._states = self.bus.subscribe(ServiceStateChanged, maxsize=64, overflow="drop_oldest")
        self._follower = asyncio.get_running_loop().create_task(self._follow(self._states))
        self.check()

    async def _follow(self, states: Any) -> None:
        async for _ in states:  # ends when drain() closes it
            self.check()

    def _on_lane(self, model: str, version: str, lane: Any) -> None:
        """The models service opened, replaced or closed (None) a lane."""
        if lane is None or not self.draining:
            self.server.set_lane(model, version, lane)

    def check(self) -> None:
        """Set the gate from `allowed()`; while watching, look again in `period` seconds."""
        if not self.watching:
            return
        on = not self.draining and self.allowed()
        if on != self.server.lanes_enabled:
            self.server.set_lanes_enabled(on)
        if not self.draining and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.period, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.check()

    def drain(self) -> None:
        """Shutdown began: every request takes the Python path from now on."""
        self.draining = True
        self.server.set_lanes_enabled(False)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._states is not None:
            self._states.close()
            self._states = None

    def hold_inflight(self, lifecycle: Any) -> None:
        """Shutdown's drain waits for `lifecycle.inflight` (and counts what its timeout cuts
        off): count the requests on lanes there until each is answered, as nothing else
        sees them. Call after `drain()` (no lane takes new requests then)."""
        self._lifecycle = lifecycle
        held = max(0, int(self.server.lane_inflight))
        for _ in range(held):
            lifecycle.enter()
        self._held += held
        if self._held and self._hold_timer is None:
            self._release()

    def _release(self, keep: int | None = None) -> None:
        """Leave for every held request answered since (all of them with `keep` 0)."""
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        self._hold_timer = None
        now = max(0, int(self.server.lane_inflight)) if keep is None else keep
        while self._held > now:
            self._held -= 1
            self._lifecycle.leave()
        if self._held:
            self._hold_timer = asyncio.get_running_loop().call_later(0.005, self._release)

    async def close(self, grace: float) -> float:
        """Lanes off; wait up to `grace` for the requests on them to be answered, then stop
        watching and forget the lanes. Returns what is left of `grace`."""
        self.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.server.lane_inflight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.005)
        if self.watching:
            self.watching = False
            try:
                await self.bus.request(UnwatchLanes(self.owner))
            except Exception as exc:  # the models service may be gone already
                self.log.debug("%s: UnwatchLanes: %s", self.owner, exc)
        self.server.clear_lanes()
        if self._held:
            self._release(keep=0)  # (the kernel's drain is over by now)
        return max(0.0, deadline - loop.time())
