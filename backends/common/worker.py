"""The dedicated thread of one model instance.

Framework calls (ONNX Runtime's `run`, a TorchScript forward, TensorRT enqueue and the
CUDA synchronisation after it) block; each instance runs them on its own single thread so
the event loop never waits on a model, instances never queue behind one another, and a
framework that keeps per-thread state (CUDA's current device, torch's thread-local
modes) always sees the same thread.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class InstanceThread:
    def __init__(self, name: str, initializer: Callable[[], Any] | None = None) -> None:
        self.name = name
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"naiad-{name}", initializer=initializer)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the instance's thread and await its result."""
        executor = self._executor
        if executor is None:
            raise RuntimeError(f"instance thread '{self.name}' is closed")
        call = functools.partial(fn, *args, **kwargs) if kwargs else (functools.partial(fn, *args) if args else fn)
        return await asyncio.get_running_loop().run_in_executor(executor, call)

    async def close(self) -> None:
        """Let a running call finish, then end the thread (without blocking the loop)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)

    def close_now(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)
