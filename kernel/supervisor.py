"""The supervisor: starts services in dependency order, restarts crashed ones with
backoff inside a restart budget, and asks the kernel to stop when an essential service
cannot be kept up. Stopping happens in reverse start order.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .bus import Bus
from .messages import ServiceStateChanged
from .service import Service, ServiceState

log = logging.getLogger("naiad.kernel.supervisor")

#: The least time a service gets to stop once shutdown's budget is spent.
MIN_STOP_SECS = 0.05


class StartupError(Exception):
    """An essential service could not start; the message says which and why."""


class DependencyError(Exception):
    pass


@dataclass(frozen=True)
class RestartPolicy:
    """At most `max_restarts` restarts within `window_secs`; waits grow from
    `backoff_initial` by `backoff_factor` up to `backoff_max` between tries."""

    max_restarts: int = 5
    window_secs: float = 60.0
    backoff_initial: float = 0.1
    backoff_factor: float = 2.0
    backoff_max: float = 5.0


def dependency_order(services: dict[str, Service]) -> list[Service]:
    """Topological order by `requires`; a missing dependency or a cycle is an error."""
    order: list[Service] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise DependencyError("services depend on each other in a cycle: " + " -> ".join(chain + (name,)))
        state[name] = 1
        for dep in services[name].requires:
            if dep not in services:
                raise DependencyError(f"service '{name}' requires service '{dep}', which is not enabled")
            visit(dep, chain + (name,))
        state[name] = 2
        order.append(services[name])

    for name in services:
        visit(name, ())
    return order


class Supervisor:
    def __init__(
        self,
        services: dict[str, Service],
        bus: Bus,
        policy: RestartPolicy = RestartPolicy(),
        on_give_up: Callable[[Service, str], None] | None = None,
    ) -> None:
        self.services = services
        self.bus = bus
        self.policy = policy
        self.order = dependency_order(services)
        self._on_give_up = on_give_up
        self._restarts: dict[str, deque[float]] = {name: deque() for name in services}
        self._restart_tasks: set[asyncio.Task] = set()
        self._started: list[Service] = []
        self._stopping = False
        for svc in services.values():
            svc._on_crash = self._crashed

    # ------------------------------------------------------------ start --

    async def start_all(self) -> None:
        for svc in self.order:
            essential = getattr(svc, "_essential", svc.essential)
            try:
                await svc._start()
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    raise
                reason = "start timed out" if isinstance(exc, asyncio.TimeoutError) else f"{exc.__class__.__name__}: {exc}"
                errors = await svc._stop()
                for err in errors:
                    log.debug("while cleaning up %s: %r", svc.name, err)
                if essential:
                    raise StartupError(f"service '{svc.name}' failed to start: {reason}") from exc
                svc.state = ServiceState.FAILED
                log.error("service '%s' failed to start and is not essential; running without it: %s", svc.name, reason)
                self.bus.publish_nowait(ServiceStateChanged(svc.name, "failed", reason))
                continue
            self._started.append(svc)
            self.bus.publish_nowait(ServiceStateChanged(svc.name, "running"))
            log.debug("service '%s' started", svc.name)

    # ------------------------------------------------------------ crashes --

    def _crashed(self, svc: Service, reason: BaseException) -> None:
        if self._stopping:
            return
        tb = "".join(traceback.format_exception(reason)).rstrip()
        log.error("service '%s' crashed:\n%s", svc.name, tb)
        task = asyncio.get_running_loop().create_task(self._restart(svc), name=f"supervisor:restart:{svc.name}")
        self._restart_tasks.add(task)
        task.add_done_callback(self._restart_tasks.discard)

    def _budget_left(self, name: str) -> bool:
        now = time.monotonic()
        history = self._restarts[name]
        while history and now - history[0] > self.policy.window_secs:
            history.popleft()
        return len(history) < self.policy.max_restarts

    async def _restart(self, svc: Service) -> None:
        errors = await svc._stop()
        for err in errors:
            log.debug("while stopping crashed service %s: %r", svc.name, err)
        delay = self.policy.backoff_initial
        while not self._stopping:
            if not self._budget_left(svc.name):
                self._give_up(svc)
                return
            self._restarts[svc.name].append(time.monotonic())
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await svc._start()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                log.error("service '%s' failed to restart: %s: %s", svc.name, exc.__class__.__name__, exc)
                await svc._stop()
                delay = min(delay * self.policy.backoff_factor, self.policy.backoff_max)
                continue
            attempts = len(self._restarts[svc.name])
            log.warning("service '%s' restarted (%d restart(s) in the last %gs)", svc.name, attempts, self.policy.window_secs)
            self.bus.publish_nowait(ServiceStateChanged(svc.name, "restarted", str(attempts)))
            return

    def _give_up(self, svc: Service) -> None:
        svc.state = ServiceState.FAILED
        essential = getattr(svc, "_essential", svc.essential)
        why = (f"service '{svc.name}' crashed {self.policy.max_restarts} times within "
               f"{self.policy.window_secs:g}s; giving up on it")
        self.bus.publish_nowait(ServiceStateChanged(svc.name, "failed", why))
        if essential:
            log.critical("%s; it is essential, so the server stops", why)
            if self._on_give_up is not None:
                self._on_give_up(svc, why)
        else:
            log.error("%s; it is not essential, the server goes on without it", why)

    # ------------------------------------------------------------ stop --

    async def drain_all(self) -> None:
        for svc in reversed(self._started):
            try:
                await svc._drain()
            except Exception as exc:
                log.error("service '%s' failed to begin draining: %s", svc.name, exc)

    async def stop_all(self, deadline: float | None = None) -> list[BaseException]:
        """Stop every service in reverse order; with a `deadline` (time.monotonic()), each
        gets what is left of it, and at least `MIN_STOP_SECS` to release what it holds."""
        self._stopping = True
        for t in list(self._restart_tasks):
            t.cancel()
        errors: list[BaseException] = []
        for svc in reversed(self.order):
            if svc.state in (ServiceState.NEW, ServiceState.STOPPED):
                continue
            left = None if deadline is None else max(MIN_STOP_SECS, deadline - time.monotonic())
            errs = await svc._stop(left)
            for e in errs:
                log.error("while stopping service '%s': %s: %s", svc.name, e.__class__.__name__, e)
            errors.extend(errs)
            self.bus.drop_handlers(svc.name)
            self.bus.publish_nowait(ServiceStateChanged(svc.name, "stopped"))
        return errors
