"""Transport-neutral HTTP routing: plain request/response objects and a path router.

Route logic sees only `HttpRequest` (method, path, headers, body bytes) and returns an
`HttpResponse` (status, headers, body bytes — or an async iterator of chunks for a
streamed reply); it knows nothing of aiohttp, so a native transport can carry the same
routes later without a second copy of them.

The router does what Triton's `HTTPAPIServer::Handle` does before a handler runs, in
the same order: match the path (404 "Not Found"), check the route's restricted-API
category (403), check the method (405 "Method Not Allowed"). Errors a handler raises
become `{"error": "..."}` replies with Triton's status mapping (`error_response`, the
one place an exception becomes an HTTP status).

A route may also declare a fast form (`add(..., fast=...)`): a task-less handler a
transport may call instead of awaiting the route, which answers through a callback or
declines. Transports look it up with `resolve_fast`; nothing is found by inspection.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

from naiad.kernel.bus import NoHandler
from naiad.kernel.inference.errors import InferenceError

from .errors import no_handler_message, status_for

log = logging.getLogger("naiad.services.http")

JSON_TYPE = "application/json"
_CT = "Content-Type"


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # case-insensitive mapping from the transport
    body: bytes | bytearray | memoryview = b""
    params: dict[str, str] = field(default_factory=dict)  # path parameters
    recv_ns: int = 0  # arrival time, taken only while a tracer is installed
    trace: Any = None  # set by the infer route when the request is traced


@dataclass(slots=True)
class HttpResponse:
    """A reply. `headers` holds every header the route sets, Content-Type included.
    With `stream` set the body is sent chunked from that iterator and `body` is ignored."""

    status: int = 200
    body: bytes | bytearray | memoryview = b""
    headers: dict[str, str] | None = None
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> "HttpResponse":
        return cls(status, json.dumps(payload, separators=(",", ":")).encode(), {_CT: JSON_TYPE})

    @classmethod
    def raw_json(cls, body: bytes, status: int = 200) -> "HttpResponse":
        return cls(status, body, {_CT: JSON_TYPE})

    @classmethod
    def error(cls, message: str, status: int, headers: Mapping[str, str] | None = None) -> "HttpResponse":
        out = cls.json({"error": message}, status)
        if headers:
            out.headers.update(headers)  # type: ignore[union-attr]
        return out

    @property
    def content_type(self) -> str | None:
        return self.headers.get(_CT) if self.headers else None


def error_response(exc: BaseException) -> HttpResponse:
    """The reply to a failed request: Triton's status for an InferenceError's code
    (`errors.status_for`, with the headers an `HttpError` carries), 503 with the missing
    feature's words for a bus request no service answers, and 500 naming the exception
    for anything else (a bug: the caller logs it)."""
    if isinstance(exc, InferenceError):
        return HttpResponse.error(exc.message, status_for(exc.code), getattr(exc, "headers", None))
    if isinstance(exc, NoHandler):
        return HttpResponse.error(no_handler_message(str(exc).rsplit(" ", 1)[-1]), 503)
    return HttpResponse.error(f"{exc.__class__.__name__}: {exc}", 500)


#: The reply to a request that arrives once shutdown began (health routes excepted).
SHUTTING_DOWN = HttpResponse.error("Server is shutting down", 503)

Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]
#: A route's task-less form: called with the request and a reply callback, it answers
#: through the callback (now or later) and returns True, or returns False having done
#: nothing, and the transport awaits the route's handler instead.
FastHandler = Callable[[HttpRequest, Callable[[HttpResponse], None]], bool]
Restrictions = Mapping[str, tuple[str, str]]  # category -> (header, value)


class _Route:
    __slots__ = ("methods", "fast", "category")

    def __init__(self, category: str | None) -> None:
        self.methods: dict[str, Handler] = {}
        self.fast: dict[str, FastHandler] = {}
        self.category = category


_PARAM = re.compile(r"\{(\w+)(?::([^}]+))?\}")


class Router:
    """Exact paths first, then patterns in the order they were added."""

    def __init__(self, restrictions: Restrictions | None = None) -> None:
        self._exact: dict[str, _Route] = {}
        self._patterns: list[tuple[re.Pattern[str], _Route]] = []
        self.restrictions: dict[str, tuple[str, str]] = dict(restrictions or {})

    def add(self, methods: str | tuple[str, ...], path: str, handler: Handler,
            category: str | None = None, fast: FastHandler | None = None) -> None:
        """Route `methods` on `path` to `handler`. `{name}` in the path matches one
        segment, `{name:regex}` what the regex matches; `category` is the
        restricted-API group the route belongs to (Triton's RestrictedCategory);
        `fast` is the route's task-less form, if it has one."""
        methods = (methods,) if isinstance(methods, str) else methods
        if "{" in path:
            regex = re.compile(
                "^" + _PARAM.sub(lambda m: f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})", path) + "$")
            for pattern, route in self._patterns:
                if pattern.pattern == regex.pattern:
                    break
            else:
                route = _Route(category)
                self._patterns.append((regex, route))
        else:
            route = self._exact.get(path) or self._exact.setdefault(path, _Route(category))
        if category is not None:
            route.category = category
        for m in methods:
            route.methods[m] = handler
            if fast is not None:
                route.fast[m] = fast

    def _find(self, path: str) -> tuple[_Route | None, dict[str, str]]:
        route = self._exact.get(path)
        if route is not None:
            return route, {}
        for pattern, r in self._patterns:
            m = pattern.match(path)
            if m is not None:
                return r, m.groupdict()
        return None, {}

    def resolve(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], int, str | None]:
        """(handler, path params, status, category): status 404/405 when no handler."""
        route, params = self._find(path)
        if route is None:
            return None, params, 404, None
        handler = route.methods.get(method)
        return handler, params, (200 if handler is not None else 405), route.category

    def resolve_fast(self, method: str, path: str) -> tuple[FastHandler, dict[str, str]] | None:
        """The fast form `method` on `path` declares, with the path parameters; None when
        it declares none or its category is restricted (the awaited path checks that)."""
        route, params = self._find(path)
        if route is None:
            return None
        fast = route.fast.get(method)
        if fast is None or route.category in self.restrictions:
            return None
        return fast, params

    def restricted(self, category: str | None, headers: Mapping[str, str]) -> HttpResponse | None:
        """The 403 reply when `category` is restricted and the header is missing or wrong."""
        if category is None:
            return None
        restriction = self.restrictions.get(category)
        if restriction is None:
            return None
        key, value = restriction
        if headers.get(key) != value:
            return HttpResponse.error(f"This API is restricted, expecting header '{key}'", 403)
        return None

    async def dispatch(self, request: HttpRequest) -> HttpResponse:
        handler, params, status, category = self.resolve(request.method, request.path)
        if status == 404:
            return HttpResponse.error("Not Found", 404)
        if self.restrictions:
            denied = self.restricted(category, request.headers)
            if denied is not None:
                return denied
        if handler is None:
            return HttpResponse.error("Method Not Allowed", 405)
        request.params = params
        try:
            return await handler(request)
        except (InferenceError, NoHandler) as exc:
            return error_response(exc)
        except Exception as exc:  # a bug, or a handler that failed unexpectedly
            log.exception("HTTP %s %s failed", request.method, request.path)
            return error_response(exc)
