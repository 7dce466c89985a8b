"""Transport-neutral HTTP routing: plain request/response objects and a path router.

Route logic sees only `HttpRequest` (method, path, headers, body bytes) and returns an
`HttpResponse`; it knows nothing of aiohttp, so a native transport can carry the same
routes later without a second copy of them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

_JSON = "application/json"


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # case-insensitive mapping from the transport
    body: bytes | memoryview = b""
    params: dict[str, str] = field(default_factory=dict)  # path parameters


@dataclass(slots=True)
class HttpResponse:
    status: int = 200
    body: bytes | memoryview = b""
    content_type: str | None = None
    headers: dict[str, str] | None = None

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> "HttpResponse":
        return cls(status, json.dumps(payload, separators=(",", ":")).encode(), _JSON)

    @classmethod
    def error(cls, message: str, status: int) -> "HttpResponse":
        return cls.json({"error": message}, status)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class Router:
    """Exact-path and regex routes; 404/405 bodies as Triton words them."""

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Handler]] = {}
        self._patterns: list[tuple[re.Pattern[str], dict[str, Handler]]] = []

    def add(self, methods: str | tuple[str, ...], path: str, handler: Handler) -> None:
        methods = (methods,) if isinstance(methods, str) else methods
        if "{" in path:
            regex = re.compile("^" + re.sub(r"\{(\w+)(?::([^}]+))?\}",
                                            lambda m: f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})", path) + "$")
            for pattern, table in self._patterns:
                if pattern.pattern == regex.pattern:
                    break
            else:
                table = {}
                self._patterns.append((regex, table))
        else:
            table = self._exact.setdefault(path, {})
        for m in methods:
            table[m] = handler

    def resolve(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], int]:
        """(handler, path params, status): status 404/405 when there is no handler."""
        table = self._exact.get(path)
        params: dict[str, str] = {}
        if table is None:
            for pattern, t in self._patterns:
                m = pattern.match(path)
                if m is not None:
                    table, params = t, m.groupdict()
                    break
        if table is None:
            return None, params, 404
        handler = table.get(method)
        if handler is None:
            return None, params, 405
        return handler, params, 200

    async def dispatch(self, request: HttpRequest) -> HttpResponse:
        handler, params, status = self.resolve(request.method, request.path)
        if handler is None:
            return HttpResponse.error("Not Found" if status == 404 else "Method Not Allowed", status)
        request.params = params
        return await handler(request)
