"""The kernel: the composition root that builds services from config and runs them.

Sequence (one deadline, written down once):
  start   services in dependency order; the bus freezes first
  run     until SIGTERM/SIGINT, `request_stop()`, or an essential service given up on
  close   readiness false -> listeners close; open connections are served while work is
          in flight
  drain   services stop accepting work -> wait for in-flight work; close and drain share
          one `exit_timeout_secs` countdown (a second signal cuts it short)
  cut     work still in flight is ended (DrainCut: stuck stubs killed) and answered
          UNAVAILABLE, and its replies get a moment to leave
  stop    services in reverse order, each within its stop timeout and what is left of
          `exit_timeout_secs` + STOP_GRACE_SECS; `naiad serve` exits by then whatever
          a service or a model thread does (a watchdog thread ends the process)
The exit code is 0 after a clean drain, 1 when the deadline cut requests off, 2 when
an essential service could not start or be kept up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
import typing
from typing import AsyncIterator, Callable

from . import logs
from .bus import Bus
from .inference.messages import LogSettingRequest, RepositoryIndexQuery
from .inference.trace import TraceHub
from .config import NaiadConfig
from .lifecycle import SERVER_EXITING, Lifecycle, Phase
from .messages import DrainCut, DrainStarted, ServerLiveQuery, ServerReadyQuery
from .service import Service, ServiceContext
from .startup import InitError
from .supervisor import RestartPolicy, StartupError, Supervisor

log = logging.getLogger("naiad.kernel")

EXIT_OK = 0
EXIT_DRAIN_CUT = 1
EXIT_FAILED = 2

#: After `exit_timeout_secs` (counted from the signal), the fixed time within which the
#: process has exited: the cut work's replies leave (CUT_REPLY_SECS), the services have
#: stopped (SERVICES_STOPPED_SECS), and the watchdog of `naiad serve` ends whatever is left
#: (WATCHDOG_SECS); the rest is slack for a busy machine.
STOP_GRACE_SECS = 2.0
CUT_REPLY_SECS = 0.5
SERVICES_STOPPED_SECS = 1.0
WATCHDOG_SECS = 1.4


class Kernel:
    def __init__(self, config: NaiadConfig, restart_policy: RestartPolicy = RestartPolicy(),
                 init_error: InitError | None = None, hard_exit: bool = False) -> None:
        self.config = config
        # `naiad serve` owns its process: a shutdown that overruns its bound ends it.
        self.hard_exit = hard_exit
        self.bus = Bus()
        self.lifecycle = Lifecycle()
        self.init_error = init_error  # Triton would not have created a server; it serves on, not live
        self.context = ServiceContext(
            bus=self.bus, config=config, lifecycle=self.lifecycle, log=logging.getLogger("naiad")
        )
        self.services: dict[str, Service] = {}
        self.traces = TraceHub()
        for section in config.enabled_services():
            ctx = ServiceContext(self.bus, config, self.lifecycle, logging.getLogger(f"naiad.services.{section.name}"),
                                 self.traces)
            svc = section.cls(section.name, section.config, ctx)
            svc._essential = section.essential  # type: ignore[attr-defined]
            self.services[section.name] = svc
        self.supervisor = Supervisor(self.services, self.bus, restart_policy, on_give_up=self._give_up)
        self._stop_requested = asyncio.Event()
        self._force = asyncio.Event()
        self._signals = 0
        self._signalled_at: float | None = None  # when the first signal came (time.monotonic())
        self.exit_code = EXIT_OK
        self.started_at = 0.0
        self.ready_at = 0.0

    # ---------------------------------------------------------------- bus --

    def _register_kernel_handlers(self) -> None:
        async def live(_: ServerLiveQuery) -> bool:
            return self.lifecycle.live

        async def ready(_: ServerReadyQuery) -> bool:
            return self.lifecycle.ready

        async def log_settings(msg: LogSettingRequest) -> dict:
            return logs.update_settings(msg.updates, msg.protocol) if msg.updates else logs.settings_reply()

        self.bus.handle(ServerLiveQuery, live, owner="kernel")
        self.bus.handle(ServerReadyQuery, ready, owner="kernel")
        self.bus.handle(LogSettingRequest, log_settings, owner="kernel")

    # ---------------------------------------------------------------- control --

    def request_stop(self, exit_code: int | None = None) -> None:
        if exit_code is not None and exit_code > self.exit_code:
            self.exit_code = exit_code
        self._stop_requested.set()

    def _give_up(self, svc: Service, why: str) -> None:
        self.request_stop(EXIT_FAILED)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signalled_at is None:
            self._signalled_at = time.monotonic()
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info("Signal (%d) received.", signum)  # tritonserver's words
            log.info("%s: shutting down (up to %ds; send it again to stop at once)",
                     name, self.config.server.exit_timeout_secs)
            self.lifecycle.phase = Phase.CLOSING  # not ready before anything else happens
            self.request_stop()
        else:
            log.warning("%s received again: cutting the drain short", name)
            self._force.set()
            if self.hard_exit:  # out within the fixed stop time from now
                _arm_watchdog(time.monotonic() + WATCHDOG_SECS)

    @contextlib.contextmanager
    def _signal_handlers(self) -> "contextlib.Iterator[None]":
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    # ---------------------------------------------------------------- run --

    async def start(self) -> None:
        self.started_at = time.monotonic()
        if self.init_error is not None:
            log.error("%s", self.init_error)
            self.lifecycle.initialized = False
        self._register_kernel_handlers()
        for svc in self.supervisor.order:
            svc.setup()
        self.bus.freeze()
        await self.supervisor.start_all()
        self.lifecycle.phase = Phase.RUNNING
        self.ready_at = time.monotonic()
        log.info("naiad started in %.0f ms: %s", (self.ready_at - self.started_at) * 1000,
                 ", ".join(s.name for s in self.supervisor.order) or "no services")

    async def _tick(self, done: Callable[[], bool]) -> None:
        """One second of the exit timeout, cut short when `done()` or a second signal."""
        end = time.monotonic() + 1.0
        while not done() and not self._force.is_set() and time.monotonic() < end:
            await asyncio.sleep(0.02)

    async def _live_models(self) -> int:
        try:
            entries = await self.bus.request(RepositoryIndexQuery(ready_only=True))
        except Exception:  # no model service (or it is gone): nothing live
            return 0
        return len({e.name for e in entries if e.state == "READY"})

    async def shutdown(self) -> int:
        """Close, drain and stop, as tritonserver 24.04 does; returns the exit code.

        1. Listeners close; connections already open are served as before while work is in
           flight (Triton's HTTPServer::Stop: "Timeout N: Found M HTTP service connections").
        2. New work is refused; in-flight work finishes (Triton's InferenceServer::Stop:
           "Waiting for in-flight requests to complete.", then "Timeout N: Found ...").
        Both share one `exit_timeout_secs` countdown; a second signal ends the wait."""
        lc = self.lifecycle
        if lc.phase in (Phase.STARTING, Phase.RUNNING):
            lc.phase = Phase.CLOSING
        timeout = self.config.server.exit_timeout_secs
        deadline = (self._signalled_at or time.monotonic()) + timeout

        def left() -> int:
            return max(0, math.ceil(deadline - time.monotonic() - 1e-3))

        if self.hard_exit:
            _arm_watchdog(deadline + WATCHDOG_SECS)
        lc.close_listeners()
        while left() > 0 and lc.inflight and not self._force.is_set():
            open_now = lc.open_connections()
            if not open_now:
                break
            for name, count in open_now.items():
                log.info("Timeout %d: Found %d %s service connections", left(), count, name)
            await self._tick(lambda: not lc.inflight or not lc.open_connections())

        lc.phase = Phase.DRAINING
        await self.bus.publish(DrainStarted(float(left())))
        await self.supervisor.drain_all()
        log.info("Waiting for in-flight requests to complete.")
        while True:
            # naiad counts every request in flight here, inference included.
            log.info("Timeout %d: Found %d live models and %d in-flight non-inference requests",
                     left(), await self._live_models(), lc.inflight)
            if not lc.inflight or left() == 0 or self._force.is_set():
                break
            await self._tick(lambda: not lc.inflight)
        cut = lc.inflight
        if cut:
            why = "a second signal" if self._force.is_set() else f"the {timeout}s exit timeout"
            log.error("failed to stop server: Internal - Exit timeout expired. Exiting immediately.")
            log.error("shutdown: %s cut off %d in-flight request(s)", why, cut)
            self.request_stop(EXIT_DRAIN_CUT)
            await self._end_cut_work(f"{SERVER_EXITING}: {why} cut this request off")
        lc.phase = Phase.STOPPING
        # Stopping may use what is left of the timeout, not after a second signal.
        base = time.monotonic() if self._force.is_set() else max(deadline, time.monotonic())
        stop_by = base + SERVICES_STOPPED_SECS
        errors = await self.supervisor.stop_all(stop_by)
        lc.phase = Phase.STOPPED
        if errors and self.exit_code == EXIT_OK:
            log.warning("%d error(s) while stopping services (see above)", len(errors))
        log.info("naiad stopped (exit code %d)", self.exit_code)
        return self.exit_code

    async def _end_cut_work(self, message: str) -> None:
        """Services end the work still in flight (DrainCut) and answer it UNAVAILABLE; the
        replies get up to CUT_REPLY_SECS to leave before the protocol services stop."""
        await self.bus.publish(DrainCut(message))
        end = time.monotonic() + CUT_REPLY_SECS
        while self.lifecycle.inflight and time.monotonic() < end:
            await asyncio.sleep(0.01)
        if self.lifecycle.inflight:
            log.warning("shutdown: %d request(s) still in flight are cut off without a reply",
                        self.lifecycle.inflight)

    async def serve(self) -> int:
        """Start, run until asked to stop, drain, stop. Returns the exit code."""
        with self._signal_handlers():
            try:
                await self.start()
            except StartupError as exc:
                log.critical("%s", exc)
                self.request_stop(EXIT_FAILED)
                await self.supervisor.stop_all()
                self.lifecycle.phase = Phase.STOPPED
                return self.exit_code
            await self._stop_requested.wait()
            return await self.shutdown()


def _arm_watchdog(at: float) -> None:
    """End the process at `at` (time.monotonic()) if it is still there: a model thread or
    a service that ignores cancellation must not hold the exit. Stubs die with it
    (PR_SET_PDEATHSIG)."""

    def fire() -> None:
        log.error("shutdown: not stopped %.1fs after the exit timeout; exiting now", WATCHDOG_SECS)
        exit_now(EXIT_DRAIN_CUT)

    timer = threading.Timer(max(0.0, at - time.monotonic()), fire)
    timer.daemon = True
    timer.name = "naiad-exit-watchdog"
    timer.start()


def exit_now(code: int) -> "typing.NoReturn":
    """End the process with `code` once the logs are out, skipping the interpreter's
    teardown: collecting a large heap of modules takes seconds on a busy machine, and
    no thread (the watchdog included) runs meanwhile. What needs releasing was released
    when the services stopped."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


@contextlib.asynccontextmanager
async def run_kernel(config: NaiadConfig, restart_policy: RestartPolicy = RestartPolicy()) -> AsyncIterator[Kernel]:
    """Start a kernel for the duration of a block (how tests run naiad in-process)."""
    kernel = Kernel(config, restart_policy)
    try:
        await kernel.start()
    except BaseException:
        await kernel.supervisor.stop_all()
        raise
    try:
        yield kernel
    finally:
        if kernel.lifecycle.phase not in (Phase.STOPPED,):
            await kernel.shutdown()
