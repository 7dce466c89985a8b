"""The internal bus: request/reply and publish/subscribe between services.

Services never import each other; they exchange typed messages here.

- Request/reply: one handler per request type, registered before the kernel starts and
  frozen after. `await bus.request(msg)` is a dict lookup and a direct await of the
  handler: no queue, no task, no copy — so an inference request can cross it on the hot
  path. `bus.requester(T)` returns the handler itself for callers that want even the
  lookup gone.
- Publish/subscribe: each subscription owns a bounded queue. `await publish(event)` waits
  while a subscriber's queue is full (backpressure); subscriptions made with
  `overflow="drop_oldest"` never block a publisher and count what they dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, AsyncIterator, Awaitable, Callable, Generic, Literal, TypeVar

from .messages import Event, Request

log = logging.getLogger("naiad.kernel.bus")

M = TypeVar("M")
E = TypeVar("E", bound=Event)
Handler = Callable[[Any], Awaitable[Any]]


class BusError(Exception):
    """Misuse of the bus (no handler, duplicate handler, registration after freeze)."""


class NoHandler(BusError):
    pass


class HandlerFailed(BusError):
    """A handler raised an unexpected exception; the original is `__cause__`."""


class Subscription(Generic[E]):
    """A bounded queue of events of one type, consumed as an async iterator."""

    def __init__(
        self,
        bus: "Bus",
        event_type: type[E],
        maxsize: int,
        overflow: Literal["block", "drop_oldest"],
    ) -> None:
        self._bus = bus
        self.event_type = event_type
        self.maxsize = maxsize
        self.overflow = overflow
        self.dropped = 0
        self._items: deque[E] = deque()
        self._getters: deque[asyncio.Future] = deque()
        self._putters: deque[asyncio.Future] = deque()
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def _wake(self, waiters: deque[asyncio.Future]) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def offer(self, event: E) -> bool:
        """Enqueue without waiting; False when full and the policy is to block."""
        if self.closed:
            return True
        if len(self._items) >= self.maxsize:
            if self.overflow == "block":
                return False
            self._items.popleft()
            self.dropped += 1
        self._items.append(event)
        self._wake(self._getters)
        return True

    async def put(self, event: E) -> None:
        while not self.offer(event):
            fut = asyncio.get_running_loop().create_future()
            self._putters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                raise

    async def get(self) -> E:
        while not self._items:
            if self.closed:
                raise StopAsyncIteration
            fut = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                raise
        item = self._items.popleft()
        self._wake(self._putters)
        return item

    def __aiter__(self) -> AsyncIterator[E]:
        return self

    async def __anext__(self) -> E:
        return await self.get()

    def close(self) -> None:
        """Stop receiving; a consumer waiting in `get` ends its iteration."""
        if self.closed:
            return
        self.closed = True
        self._bus._unsubscribe(self)
        for waiters in (self._getters, self._putters):
            while waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(None)


class Bus:
    def __init__(self) -> None:
        self._handlers: dict[type, Handler] = {}
        self._sync_handlers: dict[type, Callable[[Any], Any]] = {}
        self._owners: dict[type, str] = {}
        self._subscriptions: dict[type, list[Subscription]] = {}
        self._frozen = False

    # ---------------------------------------------------------- request/reply --

    def handle(self, request_type: type, handler: Handler, owner: str = "") -> None:
        """Register the one handler for `request_type` (an async callable)."""
        if self._frozen:
            raise BusError(f"cannot register a handler for {request_type.__name__}: the bus is frozen")
        if request_type in self._handlers:
            raise BusError(
                f"{request_type.__name__} already has a handler (from {self._owners[request_type] or 'unknown'})"
            )
        self._handlers[request_type] = handler
        self._owners[request_type] = owner

    def replace_handler(self, request_type: type, handler: Handler, owner: str = "") -> None:
        """Swap the handler of a restarted service (allowed after freeze, same type only)."""
        if request_type not in self._handlers and self._frozen:
            raise BusError(f"{request_type.__name__} has no handler to replace")
        self._handlers[request_type] = handler
        self._owners[request_type] = owner

    def drop_handlers(self, owner: str) -> None:
        """Forget every handler of a stopped service; requests then fail with NoHandler."""
        for t in [t for t, o in self._owners.items() if o == owner]:
            self._handlers.pop(t, None)
            self._sync_handlers.pop(t, None)
            del self._owners[t]

    def has_handler(self, request_type: type) -> bool:
        return request_type in self._handlers or request_type in self._sync_handlers

    def handle_sync(self, request_type: type, handler: Callable[[Any], Any], owner: str = "") -> None:
        """Register a handler that never waits (a plain function): `submit` calls it
        directly, so a caller with many requests in one callback needs no task for each."""
        if self._frozen:
            raise BusError(f"cannot register a handler for {request_type.__name__}: the bus is frozen")
        if request_type in self._sync_handlers:
            raise BusError(f"{request_type.__name__} already has a handler (from {self._owners.get(request_type) or 'unknown'})")
        self._sync_handlers[request_type] = handler
        self._owners[request_type] = owner

    def submit(self, message: Any) -> Any:
        """Call the synchronous handler of `message`'s type and return its result."""
        try:
            handler = self._sync_handlers[message.__class__]
        except KeyError:
            raise NoHandler(f"no handler for {message.__class__.__name__}") from None
        return handler(message)

    async def request(self, message: Request[M] | Any) -> M:
        """Send a request to its handler and return the reply.

        Errors a handler raises deliberately (subclasses of `Exception` that carry a
        meaning to the caller, such as InferenceError) pass through unchanged; see
        `call` for wrapping unexpected ones.
        """
        try:
            handler = self._handlers[message.__class__]
        except KeyError:
            raise NoHandler(f"no handler for {message.__class__.__name__}") from None
        return await handler(message)

    def requester(self, request_type: type) -> Handler:
        """The handler itself, for hot paths that call it per request."""
        try:
            handler = self._handlers[request_type]
        except KeyError:
            raise NoHandler(f"no handler for {request_type.__name__}") from None
        return handler

    async def call(self, message: Any, expected: tuple[type[BaseException], ...] = ()) -> Any:
        """Like `request`, but an exception not in `expected` becomes HandlerFailed."""
        try:
            return await self.request(message)
        except expected:
            raise
        except BusError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise HandlerFailed(
                f"handler for {message.__class__.__name__} failed: {exc.__class__.__name__}: {exc}"
            ) from exc

    # ---------------------------------------------------------- pub/sub --

    def subscribe(
        self,
        event_type: type[E],
        maxsize: int = 1024,
        overflow: Literal["block", "drop_oldest"] = "block",
    ) -> Subscription[E]:
        if maxsize < 1:
            raise BusError("a subscription needs room for at least one event")
        sub: Subscription[E] = Subscription(self, event_type, maxsize, overflow)
        self._subscriptions.setdefault(event_type, []).append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscriptions.get(sub.event_type)
        if subs and sub in subs:
            subs.remove(sub)

    def _targets(self, event: Event) -> list[Subscription]:
        targets: list[Subscription] = []
        for cls in type(event).__mro__:
            subs = self._subscriptions.get(cls)
            if subs:
                targets.extend(subs)
            if cls is Event:
                break
        return targets

    async def publish(self, event: Event) -> None:
        """Deliver to every subscriber of the event's type (or a base type), waiting
        while a blocking subscriber is full."""
        for sub in self._targets(event):
            if not sub.offer(event):
                await sub.put(event)

    def publish_nowait(self, event: Event) -> int:
        """Deliver without waiting; returns how many blocking subscribers were full and
        missed it (they are counted in `dropped`)."""
        missed = 0
        for sub in self._targets(event):
            if not sub.offer(event):
                sub.dropped += 1
                missed += 1
        return missed

    # ---------------------------------------------------------- lifecycle --

    def freeze(self) -> None:
        """No new request types after start (aiohttp's frozen router)."""
        self._frozen = True

    @property
    def frozen(self) -> bool:
        return self._frozen
