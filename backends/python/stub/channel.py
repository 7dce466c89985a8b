"""The stub's end of the control socket: who reads it, and how messages go out.

Whichever thread needs a message reads the socket (leader/follower): when idle, the main
thread blocks on the socket and runs an EXECUTE it receives itself, so a batch costs no
thread hand-off. A model thread waiting for a BLS response becomes the reader while the
main thread is busy. Every message out carries the input blocks the parent may free
(`_release_pinned`) and the one-way calls made since the last one (`notify`).
"""

from __future__ import annotations

import collections
import os
import socket
import sys
import threading
from typing import Any, Callable

import numpy as np

from .. import ipc
from ..ipc import CALL, LOG
from .wire import EMPTY_BLOCK

_DONTWAIT = int(socket.MSG_DONTWAIT)
# sys.getrefcount of a pinned base held only by our (base, rid) tuple: the tuple's
# reference plus the call's argument.
_UNREFERENCED = 2


class Channel:
    """Reading roles, sends and the output arena (a mixin of `Stub`: `_dispatch` is the
    serve loop's)."""

    def _init_channel(self, sock: socket.socket, label: str) -> None:
        self.sock = sock
        self.label = label
        self.ep = ipc.Endpoint(sock, prefix=f"naiad-{label}-out", region_size=8 << 20, blocking=True)
        self.lock = threading.RLock()  # sends, the arena, pinned inputs
        self.cond = threading.Condition(threading.Lock())  # the reader role
        self.reading = False
        self.work: collections.deque = collections.deque()
        self.pinned: list[tuple[np.ndarray, int]] = []
        self.deferred: collections.deque = collections.deque()  # one-way calls (`notify`)

    def _dispatch(self, msg: tuple) -> None:
        raise NotImplementedError

    # ============================================================ reading (roles) ==

    def _wait_for(self, pred: Callable[[], Any], on_satisfied: Callable[[], None] | None = None) -> None:
        """Block until `pred()`; meanwhile read and dispatch messages if nobody else is."""
        cond = self.cond
        with cond:
            while not pred():
                if self.reading:
                    cond.wait()
                    continue
                self.reading = True
                cond.release()
                try:
                    self._read_one(0)
                finally:
                    cond.acquire()
                    self.reading = False
                    cond.notify_all()
            if on_satisfied is not None:
                on_satisfied()

    def poll(self) -> None:
        """Dispatch whatever is waiting, without blocking (cancellations, frees, ...)."""
        with self.cond:
            if self.reading:
                return
            self.reading = True
        try:
            while True:
                try:
                    self._read_one(_DONTWAIT)
                except BlockingIOError:
                    break
        finally:
            with self.cond:
                self.reading = False
                self.cond.notify_all()

    def _read_one(self, flags: int) -> None:
        packet = self.ep.recv_packet(flags)
        if packet is None:
            parent_gone()
        with self.lock:
            msg = self.ep.take(*packet)
        self._dispatch(msg)

    # ================================================================== sending ==

    def _send(self, cmd: int, *fields: Any) -> None:
        with self.lock:
            if self.pinned:
                self._release_pinned()
            if self.deferred:
                self._flush_deferred()
            self.ep.send(cmd, *fields)

    def notify(self, op: str, args: tuple) -> None:
        """A call that wants no answer (a metric's deletion), sent ahead of the next message
        to the parent: safe from `__del__`, which may run in the middle of a send."""
        self.deferred.append((op, args))

    def _flush_deferred(self) -> None:
        """Send the waiting one-way calls (call with the lock; call id 0: no answer)."""
        deferred = self.deferred
        while deferred:
            self.ep.send(CALL, 0, *deferred.popleft())

    def _release_pinned(self) -> None:
        """Free the parent's input blocks whose views are all gone (call with the lock)."""
        pinned = self.pinned
        getrefcount = sys.getrefcount
        keep = []
        for entry in pinned:
            if getrefcount(entry[0]) <= _UNREFERENCED:
                self.ep.frees.append(entry[1])
            else:
                keep.append(entry)
        self.pinned = keep

    def _alloc(self, nbytes: int):
        """Allocate in our arena (call with the lock); before growing it, collect the
        parent's frees that may be waiting in the socket."""
        got = self.ep.arena.try_alloc(nbytes)
        if got is None:
            self.poll()
            got = self.ep.arena.alloc(nbytes)
        return got

    def _write(self, staged: list, total: int) -> tuple:
        if not staged:
            return EMPTY_BLOCK
        region, base = self._alloc(total)
        view = region.view
        for off, n, data in staged:
            if n:
                view[base + off : base + off + n] = data
        return (region.id, base, total)

    def log(self, level: int, message: str, filename: str, lineno: int) -> None:
        # Every level goes to the parent, which filters with the live log settings (the
        # verbose level may change at run time through /v2/logging).
        self._send(LOG, int(level), message, filename, int(lineno))


def parent_gone() -> None:
    """The parent closed the socket: nothing left to serve; memfds go with us."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)
