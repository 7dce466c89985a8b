"""Which of a native module and its pure-Python twin serves: the native one where it is
built, unless NAIAD_PURE_PYTHON=1 forces the twins (same API, slower)."""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType


def native_module(name: str) -> ModuleType | None:
    """`naiad.ext.<name>`, or None where the twin must serve (forced, or not built: e.g. a
    source checkout; logged)."""
    if os.environ.get("NAIAD_PURE_PYTHON") == "1":
        return None
    try:
        return importlib.import_module("." + name, __package__)
    except ImportError as exc:
        logging.getLogger(f"{__package__}.{name.lstrip('_')}").info(
            "naiad.ext.%s unavailable (%s); using the Python twin", name, exc)
        return None
