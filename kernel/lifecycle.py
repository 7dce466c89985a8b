"""Server lifecycle: live/ready state and the count of in-flight work that shutdown drains.

Readiness is the AND of the server phase (RUNNING) and named conditions that services
set (e.g. the model manager's "models loaded"). At SIGTERM the phase becomes CLOSING
first, so load balancers see not-ready before anything stops: the listeners services
registered stop accepting connections while the open ones are served on (Triton's
HTTPServer::Stop); then DRAINING refuses new work and waits for what is in flight.

In-flight work is counted with `enter()` / `leave()`: two integer operations per request,
nothing allocated, so every protocol service can afford it on the hot path.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Callable


# Triton core's UNAVAILABLE text while the server exits (InferenceServer::IsLive); naiad
# answers the requests the exit timeout cuts off with it, and says why after a colon.
SERVER_EXITING = "Server exiting"


class Phase(str, enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    CLOSING = "closing"  # no new connections; open ones are served as before
    DRAINING = "draining"  # no new work; in-flight work finishes
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Listener:
    """A service's listening socket as shutdown sees it."""

    close: Callable[[], None]  # stop accepting connections; open ones go on
    connections: Callable[[], int]  # connections open now


class Lifecycle:
    def __init__(self) -> None:
        self.phase = Phase.STARTING
        # False when the server could not initialise (Triton's SERVER_FAILED_TO_INITIALIZE,
        # kept running by --exit-on-error=false): neither live nor ready, metadata still served.
        self.initialized = True
        self._listeners: dict[str, Listener] = {}
        self._conditions: dict[str, bool] = {}
        self.inflight = 0
        self._idle: asyncio.Event | None = None
        self.exit_code = 0

    # ---------------------------------------------------------- readiness --

    @property
    def live(self) -> bool:
        return self.initialized and self.phase in (Phase.STARTING, Phase.RUNNING, Phase.CLOSING, Phase.DRAINING)

    @property
    def ready(self) -> bool:
        if self.phase is not Phase.RUNNING or not self.initialized:
            return False
        for ok in self._conditions.values():
            if not ok:
                return False
        return True

    @property
    def accepting(self) -> bool:
        """Whether new work may be accepted (False from the start of the drain)."""
        return self.phase in (Phase.STARTING, Phase.RUNNING, Phase.CLOSING)

    def set_condition(self, name: str, ok: bool) -> None:
        self._conditions[name] = ok

    def conditions(self) -> dict[str, bool]:
        return dict(self._conditions)

    # ---------------------------------------------------------- listeners --

    def add_listener(self, name: str, close: Callable[[], None], connections: Callable[[], int]) -> None:
        """Register a listening socket under the name shutdown logs ("HTTP")."""
        self._listeners[name] = Listener(close, connections)

    def remove_listener(self, name: str) -> None:
        self._listeners.pop(name, None)

    def close_listeners(self) -> None:
        for listener in self._listeners.values():
            listener.close()

    def open_connections(self) -> dict[str, int]:
        """Connections open now, by listener name (those with none left out)."""
        counts = {name: listener.connections() for name, listener in self._listeners.items()}
        return {name: n for name, n in counts.items() if n}

    # ---------------------------------------------------------- in-flight work --

    def enter(self) -> None:
        self.inflight += 1

    def leave(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self) -> None:
        if self.inflight == 0:
            return
        if self._idle is None:
            self._idle = asyncio.Event()
        self._idle.clear()
        while self.inflight > 0:
            await self._idle.wait()
            self._idle.clear()
