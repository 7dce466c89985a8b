"""A framework backend's library, imported on first use (a server without it still serves
the other backends): UNAVAILABLE, saying what to install, where it is missing or lacks
what the backend runs."""

from __future__ import annotations

import importlib
from typing import Any

from naiad.kernel.inference.errors import InferenceError


def import_framework(module: str, needs: str, attribute: str, lacks: str) -> Any:
    """`module`, checked to have `attribute`; `needs` words the error when it cannot be
    imported (the ImportError follows it), `lacks` names what a build without the
    attribute is missing."""
    try:
        found = importlib.import_module(module)
    except ImportError as exc:
        raise InferenceError.unavailable(f"{needs}: {exc}") from None
    if not hasattr(found, attribute):
        raise InferenceError.unavailable(f"the installed '{module}' package has no {lacks}")
    return found
