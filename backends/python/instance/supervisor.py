"""A Python model instance: owns its stub's session and restarts it when the stub dies
(with back-off), reports readiness, and ends it at close or at shutdown's exit timeout.
`run_auto_complete` runs a model's `auto_complete_config` in a throw-away session."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Sequence

from naiad.kernel.inference.backend import BackendContext, ExecutionTimes, InstanceSpec, ModelInstance, ModelSpec
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, ResponseSink

from ..launcher import StubProcess
from .session import FAILED, Session, Settings, StubDied

logger = logging.getLogger("naiad.backends.python")

# Shutdown's exit timeout: a stub still executing gets SIGTERM, then SIGKILL this much later.
_TERM_GRACE_SECS = 0.5


class PythonModelInstance(ModelInstance):
    """One instance of a Python model: a stub running model.py, restarted if it dies."""

    def __init__(
        self,
        *,
        model: ModelSpec,
        instance: InstanceSpec,
        context: BackendContext,
        settings: Settings,
        init_config: dict,
        decoupled: bool,
        label: str,
        stubs: Callable[[], StubProcess] | None = None,
    ) -> None:
        self.model = model
        self.instance = instance
        self.context = context
        self.settings = settings
        self.init_config = init_config
        self.decoupled = decoupled
        self.label = label
        self.stubs = stubs  # where fresh stub processes come from (a warm spare, if any)
        self.session: Session | None = None
        self.max_inflight = 1
        self.restarts = 0
        self.is_async = False
        self._closed = False
        self._aborted: InferenceError | None = None  # shutdown ended this instance's work
        self._launching: Session | None = None  # the session running initialize, if any
        self._restart: asyncio.Task | None = None
        self._backoff = 0.0
        self._next_try = 0.0
        self.on_close: Callable[["PythonModelInstance"], None] | None = None

    @property
    def pid(self) -> int | None:
        s = self.session
        return None if s is None or s.dead else s.pid

    async def start(self, primed: Session | None = None) -> None:
        self.session = await self._launch(primed)

    async def _launch(self, primed: Session | None = None) -> Session:
        if primed is not None and not primed.dead:
            session = primed
            session.adopt(
                model_version=str(self.model.version),
                instance_name=self.instance.name,
                decoupled=self.decoupled,
                on_death=self._on_death,
            )
        else:
            session = Session(
                label=self.label,
                model_name=self.model.name,
                model_version=str(self.model.version),
                instance_name=self.instance.name,
                context=self.context,
                settings=self.settings,
                decoupled=self.decoupled,
                on_death=self._on_death,
                stub=self.stubs() if self.stubs is not None else None,
            )
        self._launching = session
        try:
            info = await session.initialize(self.init_config)
        except StubDied as exc:
            session.kill()
            if session._abort_error is not None:  # shutdown stopped it: say so
                raise session._abort_error from None
            raise InferenceError.internal(
                f"Stub process for model instance '{self.instance.name}' of model '{self.model.name}' "
                f"died during initialize ({exc})"
            ) from None
        except BaseException:
            session.kill()
            raise
        finally:
            self._launching = None
        self.is_async = bool(info.get("is_async"))
        self.max_inflight = self.settings.max_inflight if self.is_async else 1
        return session

    def _on_death(self, session: Session, how: str) -> None:
        if session is not self.session or self._closed:
            return
        logger.error(
            "Python stub (pid %d) of model instance '%s' (model '%s') died: %s; restarting it",
            session.pid,
            self.instance.name,
            self.model.name,
            how,
        )
        self._start_restart()

    def _start_restart(self) -> asyncio.Task:
        if self._restart is None or self._restart.done():
            self._restart = asyncio.get_running_loop().create_task(self._do_restart())
        return self._restart

    async def _do_restart(self) -> Session | None:
        self._next_try = time.monotonic() + self._backoff
        try:
            session = await self._launch()
        except (InferenceError, OSError) as exc:
            err = exc if isinstance(exc, InferenceError) else InferenceError.internal(str(exc))
            self._backoff = min(max(self._backoff * 2, 0.5), self.settings.restart_backoff_max)
            self._next_try = time.monotonic() + self._backoff
            logger.error("restarting the stub of model instance '%s' failed: %s", self.instance.name, err.message)
            return None
        if self._closed:
            await session.close(self.settings.stub_timeout)
            return None
        self.session = session
        self.restarts += 1
        self._backoff = 0.0
        return session

    async def check_ready(self) -> str | None:
        """Triton 26.01/26.03: not ready while the stub is down (a check starts the restart
        if its back-off is over, so a model nobody sends requests to comes back too), else
        what the model's own `is_ready()` says."""
        session = self.session
        if session is None or session.dead:
            if not self._closed and self._aborted is None and time.monotonic() >= self._next_try:
                self._start_restart()
            return f"Stub process '{self.instance.name}' is not healthy."
        if session.readiness is None:
            return None
        ready, why = await session.readiness.check()
        return None if ready else why

    async def _revive(self) -> Session | None:
        if self._closed or self._aborted is not None:
            return None
        if self._restart is not None and not self._restart.done():
            return await asyncio.shield(self._restart)
        if time.monotonic() < self._next_try:
            return None
        return await asyncio.shield(self._start_restart())

    async def execute(self, requests: Sequence[InferenceRequest], sinks: Sequence[ResponseSink]) -> ExecutionTimes:
        session = await self._live_session()
        if isinstance(session, InferenceError):
            now = time.monotonic_ns()
            for req, sink in zip(requests, sinks):
                sink.send(InferenceResponse(self.model.name, str(self.model.version), id=req.id, error=session))
            return ExecutionTimes(now, now, now, now, True)
        return await session.execute(requests, sinks)

    # Declared: the models service publishes native lanes (ext/frontend/lane.h) only for
    # models whose every instance says so.
    serves_lanes = True

    async def execute_lane(self, lane: Any) -> tuple[ExecutionTimes, tuple]:
        """`execute` for a batch of native lane requests (Session.execute_lane)."""
        session = await self._live_session()
        if isinstance(session, InferenceError):
            now = time.monotonic_ns()
            return ExecutionTimes(now, now, now, now, True), lane.fail(int(session.code), session.message)
        return await session.execute_lane(lane)

    async def _live_session(self) -> "Session | InferenceError":
        """The running session (restarting the stub if it died), or the error to answer with."""
        session = self.session
        if session is None or session.dead:
            session = await self._revive()
            if session is None:
                # Why the restart failed is in the log (_do_restart).
                return self._aborted or InferenceError.internal(
                    FAILED.format(instance=self.instance.name, message="The stub process has exited unexpectedly."))
        return session

    def abort(self, error: InferenceError) -> None:
        self._aborted = error
        if self._restart is not None and not self._restart.done():
            self._restart.cancel()
        for session, doing in ((self.session, "executing"), (self._launching, "initializing")):
            if session is not None and session.abort(error, _TERM_GRACE_SECS):
                logger.warning("model instance '%s' (model '%s') was still %s at the exit timeout: stopping "
                               "its stub (pid %d, SIGTERM, SIGKILL after %gs)", self.instance.name,
                               self.model.name, doing, session.pid, _TERM_GRACE_SECS)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.on_close is not None:
            self.on_close(self)
        if self._restart is not None and not self._restart.done():
            self._restart.cancel()
            try:
                await self._restart
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        session, self.session = self.session, None
        if session is not None:
            await session.close(self.settings.stub_timeout)


async def run_auto_complete(
    *,
    label: str,
    model_name: str,
    context: BackendContext,
    settings: Settings,
    config: dict,
    stub: StubProcess | None = None,
) -> tuple[str, Session | None]:
    """Run the model's `auto_complete_config` in a throw-away stub: (the new config JSON,
    the still-running session if it is primed to serve the first instance, else None)."""
    session = Session(
        label=label,
        model_name=model_name,
        model_version="",
        instance_name=f"{model_name} (auto-complete)",
        context=context,
        settings=settings,
        stub=stub,
    )
    try:
        text, primed = await session.auto_complete(config)
    except StubDied as exc:
        session.kill("auto-complete failed")
        raise InferenceError.internal(f"the auto-complete stub of model '{model_name}' died ({exc})") from None
    except BaseException:
        session.kill("auto-complete failed")
        raise
    if not primed:
        session.kill("auto-complete done")
        return text, None
    return text, session
