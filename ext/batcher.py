"""The dynamic batcher's per-model queue and decisions: native when built, Python twin
otherwise (`NATIVE` says which is available; NAIAD_PURE_PYTHON=1 forces the twin).

`queue_class(native)` picks one explicitly: the models service asks for the native one
when `[services.models] native_batcher` is on (the default) and it is built.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from . import batcher_py

__all__ = ["NATIVE", "NativeBatchQueue", "queue_class"]

_log = logging.getLogger(__name__)

NativeBatchQueue: Any = None
if os.environ.get("NAIAD_PURE_PYTHON") != "1":
    try:
        from . import _batcher

        class NativeBatchQueue(_batcher.BatchQueue):  # type: ignore[no-redef]
            """The native queue with the loop wiring of the twin: its timer thread's
            eventfd becomes a reader on the loop."""

            _loop: asyncio.AbstractEventLoop | None = None

            def attach(self, loop: asyncio.AbstractEventLoop, on_ready: Callable[[], None]) -> None:
                fd = self.fileno()
                if fd >= 0:
                    loop.add_reader(fd, on_ready)
                    self._loop = loop

            def detach(self) -> None:
                if self._loop is not None:
                    self._loop.remove_reader(self.fileno())
                    self._loop = None
                self.stop()

    except ImportError as exc:  # not built (e.g. a source checkout): same API, in Python
        _log.info("naiad.ext._batcher unavailable (%s); using the Python twin", exc)

NATIVE: bool = NativeBatchQueue is not None


def queue_class(native: bool = True) -> Any:
    """The native BatchQueue when asked for and available, else the Python twin."""
    return NativeBatchQueue if native and NATIVE else batcher_py.BatchQueue
