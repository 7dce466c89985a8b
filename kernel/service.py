"""The `Service` base class: one lifecycle vocabulary for everything the kernel runs.

A service is built once from its config section, registers its bus handlers and
subscriptions in `setup()` (before the bus freezes), then may be started and stopped
several times by the supervisor (a restart is `stop()` then `start()` on the same
object). Background loops go through `spawn()`: the base class owns those tasks, cancels
them at stop, and reports an exception escaping one as a crash. Resources registered with
`on_stop()` / `exit_stack` are released in reverse order, errors collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar, Coroutine

from .bus import Bus
from .messages import ServiceStateChanged

if TYPE_CHECKING:
    from .config import NaiadConfig
    from .inference.trace import TraceHub
    from .lifecycle import Lifecycle


class ServiceState(str, enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"
    FAILED = "failed"  # gave up after its restart budget


@dataclass
class EmptyConfig:
    """For services with no settings of their own."""


@dataclass
class ServiceContext:
    """What the kernel gives every service: the bus, the whole validated config (read
    only), the server lifecycle (readiness, in-flight work), a logger, and the trace hub
    (shared by all services: the tracing service sets it, protocols read it)."""

    bus: Bus
    config: "NaiadConfig"
    lifecycle: "Lifecycle"
    log: logging.Logger
    traces: "TraceHub" = field(default_factory=lambda: _trace_hub())


def _trace_hub() -> "TraceHub":
    from .inference.trace import TraceHub

    return TraceHub()


class ServiceCrash(Exception):
    """Raised inside a service to report that it cannot go on (the supervisor restarts it)."""


class Service:
    #: The dataclass that validates this service's `[services.NAME]` section.
    Config: ClassVar[type] = EmptyConfig
    #: Names of services that must be running before this one starts.
    requires: ClassVar[tuple[str, ...]] = ()
    #: Without an essential service the server stops; config `essential = false` overrides.
    essential: ClassVar[bool] = True
    #: Seconds `start()` may take before the start counts as failed.
    start_timeout: ClassVar[float] = 60.0
    #: Seconds `stop()` may take before its tasks are cancelled anyway.
    stop_timeout: ClassVar[float] = 10.0

    def __init__(self, name: str, config: Any, context: ServiceContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.bus = context.bus
        self.log = context.log
        self.state = ServiceState.NEW
        self.crash_reason: BaseException | None = None
        self._tasks: set[asyncio.Task] = set()
        self._on_crash: Callable[["Service", BaseException], None] | None = None
        self.exit_stack = contextlib.AsyncExitStack()

    # ------------------------------------------------------------ to override --

    def setup(self) -> None:
        """Register bus handlers and subscriptions. Called once, before the bus freezes."""

    async def start(self) -> None:
        """Acquire resources and begin serving; return when ready."""

    async def drain(self) -> None:
        """Shutdown began: stop accepting new work; work already accepted goes on."""

    async def stop(self) -> None:
        """Release what `start` acquired (owned tasks and `on_stop` callbacks are handled
        by the base class after this returns)."""

    def healthy(self) -> bool:
        """A service may report itself unhealthy while running (shown in logs/status)."""
        return self.state is ServiceState.RUNNING

    # ------------------------------------------------------------ helpers --

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task:
        """Run a background coroutine owned by this service. If it raises, the
        service crashes and the supervisor decides what happens next."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name or coro.__name__}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def on_stop(self, callback: Callable[[], Awaitable[Any] | Any]) -> None:
        """Run `callback` when the service stops (reverse order of registration)."""

        async def _run() -> None:
            result = callback()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                await result

        self.exit_stack.push_async_callback(_run)

    def crash(self, reason: BaseException) -> None:
        """Report that the service cannot go on."""
        if self.state in (ServiceState.STOPPING, ServiceState.STOPPED, ServiceState.CRASHED):
            return
        self.state = ServiceState.CRASHED
        self.crash_reason = reason
        self.bus.publish_nowait(ServiceStateChanged(self.name, "crashed", f"{reason.__class__.__name__}: {reason}"))
        if self._on_crash is not None:
            self._on_crash(self, reason)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.crash(exc)

    # ------------------------------------------------------------ kernel side --

    async def _start(self) -> None:
        self.state = ServiceState.STARTING
        self.crash_reason = None
        self.exit_stack = contextlib.AsyncExitStack()
        await asyncio.wait_for(self.start(), self.start_timeout)
        if self.state is ServiceState.STARTING:
            self.state = ServiceState.RUNNING

    async def _drain(self) -> None:
        if self.state is ServiceState.RUNNING:
            self.state = ServiceState.DRAINING
            await self.drain()

    async def _stop(self, timeout: float | None = None) -> list[BaseException]:
        """Stop within `stop_timeout` (or `timeout`, when shorter: what shutdown has left);
        return the errors met on the way (never raises)."""
        errors: list[BaseException] = []
        self.state = ServiceState.STOPPING
        limit = self.stop_timeout if timeout is None else min(self.stop_timeout, timeout)
        try:
            await asyncio.wait_for(self.stop(), limit)
        except asyncio.TimeoutError:
            errors.append(TimeoutError(f"service '{self.name}' did not stop within {limit:.3g}s"))
        except Exception as exc:
            errors.append(exc)
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=limit)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    errors.append(t.exception())  # type: ignore[arg-type]
        self._tasks.clear()
        try:
            await self.exit_stack.aclose()
        except BaseException as exc:  # aggregate, as aiohttp's cleanup does
            if isinstance(exc, BaseExceptionGroup):
                errors.extend(exc.exceptions)
            else:
                errors.append(exc)
        self.state = ServiceState.STOPPED
        return errors

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} {self.name} {self.state.value}>"
