"""Typed messages that cross the internal bus.

A `Request[R]` is answered by exactly one handler with an `R`; an `Event` is published to
every subscriber. Messages are plain slotted dataclasses: cheap to build, no copies of the
payloads they point at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")


class Message:
    """Base of everything that crosses the bus."""

    __slots__ = ()


class Request(Message, Generic[R]):
    """A message with one handler and a reply of type R."""

    __slots__ = ()


class Event(Message):
    """A message fanned out to every subscriber of its type."""

    __slots__ = ()


# ---------------------------------------------------------------- kernel events --

@dataclass(slots=True, frozen=True)
class ServiceStateChanged(Event):
    """A service started, became ready, crashed, restarted, gave up or stopped."""

    service: str
    state: str
    detail: str = ""


@dataclass(slots=True, frozen=True)
class DrainStarted(Event):
    """Shutdown began: stop accepting new work; readiness is already false."""

    deadline_secs: float


@dataclass(slots=True, frozen=True)
class DrainCut(Event):
    """The exit timeout ran out (or a second signal came) with work still in flight: end
    that work now (kill what runs it) and answer it with `message` (UNAVAILABLE), so that
    the replies leave before the protocol services stop."""

    message: str


# ---------------------------------------------------------------- kernel requests --

@dataclass(slots=True, frozen=True)
class ServerLiveQuery(Request[bool]):
    pass


@dataclass(slots=True, frozen=True)
class ServerReadyQuery(Request[bool]):
    pass


# ---------------------------------------------------------------- pages --

@dataclass(slots=True, frozen=True)
class Page:
    """A response body some service serves on another service's HTTP port."""

    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    status: int = 200


@dataclass(slots=True, frozen=True)
class PageQuery(Request["Page | None"]):
    """Asked by the metrics service for any path other than /metrics: the one handler
    (the status service) answers a `Page`, or None for a path it does not serve (404)."""

    method: str
    path: str
