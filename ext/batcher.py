"""The dynamic batcher's per-model queue and decisions: native when built, Python twin
otherwise (`NATIVE` says which is available; NAIAD_PURE_PYTHON=1 forces the twin).

`queue_class(native)` picks one explicitly: the models service asks for the native one
when `[services.models] native_batcher` is on (the default) and it is built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from . import batcher_py
from .twins import native_module

__all__ = ["NATIVE", "NativeBatchQueue", "queue_class"]

NativeBatchQueue: Any = None
_batcher = native_module("_batcher")
if _batcher is not None:
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


NATIVE: bool = NativeBatchQueue is not None


def queue_class(native: bool = True) -> Any:
    """The native BatchQueue when asked for and available, else the Python twin."""
    return NativeBatchQueue if native and NATIVE else batcher_py.BatchQueue
