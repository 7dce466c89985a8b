"""The event-loop side that naiad's two native front ends share (`_native_http`,
`_native_grpc`): replies queued during one loop iteration wake the native thread once,
and a stop that lets the work in flight finish before the native server goes.

Both servers expose the same surface for this: `flush()` (wake the writer for what was
queued), `stop(seconds)` (refuse new work, answer what started for up to `seconds`, then
close) and `fileno()` (the hand-off queue's eventfd, read by the adapter's `_drain`).
"""

from __future__ import annotations

import asyncio
from typing import Any


class NativeFront:
    """Base of a native front end's adapter: owns `server` (the native object, once
    started) and `tasks` (the work it runs on the loop)."""

    def __init__(self) -> None:
        self.server: Any = None
        self.port = 0
        self.tasks: set[asyncio.Task] = set()
        self._flush_soon = False

    def _flush(self) -> None:
        self._flush_soon = False
        self.server.flush()

    def _sent(self) -> None:
        """A reply was queued: wake the native thread once, at the end of this loop iteration."""
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _stop_native(self, grace: float, answer_secs: float) -> None:
        """Wait up to `grace` for the tasks in flight, stop the native server (it answers
        what already started for up to `answer_secs`), stop reading it, then cancel what
        is left. The Server object stays referenced: tasks and events may still hold it."""
        server = self.server
        if server is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.tasks and loop.time() < deadline:
            await asyncio.wait(list(self.tasks), timeout=max(0.0, deadline - loop.time()))
        await loop.run_in_executor(None, server.stop, answer_secs)
        loop.remove_reader(server.fileno())
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=1.0)
