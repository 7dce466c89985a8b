"""The writer thread: batches of finished traces and settings retirements queue up here
and are written by one thread, off the event loop, in the order they came."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Iterable, Protocol

from naiad.kernel.inference.trace import Trace

from .settings import TraceSetting

_STOP = object()


class Sink(Protocol):
    def write(self, trace: Trace) -> None: ...
    def retire(self, setting: TraceSetting) -> None: ...
    def close(self, settings: Iterable[TraceSetting]) -> None: ...


class _Retire:
    __slots__ = ("setting",)

    def __init__(self, setting: TraceSetting) -> None:
        self.setting = setting


class TraceWriter:
    def __init__(self, sink: Sink, log: logging.Logger) -> None:
        self.sink = sink
        self.log = log
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="naiad-trace-writer", daemon=True)
        self.written = 0
        self.failed = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, traces: list[Trace]) -> None:
        self._queue.put(traces)

    def retire(self, setting: TraceSetting) -> None:
        self._queue.put(_Retire(setting))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, _Retire):
                try:
                    self.sink.retire(item.setting)
                except Exception:
                    self.log.exception("failed writing traces")
                continue
            for trace in item:
                try:
                    self.sink.write(trace)
                    self.written += 1
                except Exception:  # one bad trace must not stop the others
                    self.failed += 1
                    self.log.exception("failed writing a trace")

    def close(self, settings: Iterable[TraceSetting], timeout: float = 10.0) -> None:
        """Write what is queued, then the sink's remainder (blocking: call from a thread)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        self.sink.close(list(settings))
