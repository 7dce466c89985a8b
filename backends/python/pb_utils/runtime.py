"""The stub runtime this module talks to (BLS, model control, logging, cancellation, response
senders, custom metrics): bound by the stub with `bind`; outside a stub it is None and those
calls raise `TritonModelException`."""

from __future__ import annotations

from typing import Any

from .errors import TritonModelException

current: Any = None  # the stub's runtime


def bind(runtime: Any) -> None:
    global current
    current = runtime


def require(what: str) -> Any:
    if current is None:
        raise TritonModelException(f"{what} is only available inside a Python backend stub")
    return current
