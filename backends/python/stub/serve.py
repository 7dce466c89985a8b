"""The stub's serve loop: wait for INIT (or AUTO_COMPLETE first), then run EXECUTEs until
FINALIZE, in the main thread (`def execute`) or on an asyncio loop that watches the socket
(`async def execute`, several batches in flight). `Stub` is the runtime that
`triton_python_backend_utils` calls into (`pb_utils._bind`)."""

from __future__ import annotations

import socket
import threading
from functools import partial

from .. import ipc, pb_utils
from ..ipc import AUTO_COMPLETE, AUTO_COMPLETE_DONE, BLS_RESULT, CALL_RESULT, CANCEL, EXECUTE, FINALIZE, INIT, INIT_DONE
from .bls import BlsClient
from .channel import Channel
from .errors import error_text
from .execute import Execution
from .loading import ModelLoading


class Stub(Channel, ModelLoading, Execution, BlsClient):
    """One stub process's runtime. One object over four modules, not four objects: every
    job reads the same socket, lock and arena, and an EXECUTE is the hot path."""

    def __init__(self, sock: socket.socket, label: str) -> None:
        self._init_channel(sock, label)
        self._init_loading()
        self._init_execution()
        self._init_bls()
        self.async_mode = False
        self.loop_thread = 0
        self.ready_sock: socket.socket | None = None

    def serve(self) -> int:
        self._wait_for(self._has_work)
        msg = self.work.popleft()
        if msg[0] == AUTO_COMPLETE:
            error, text, primed = self._auto_complete(msg[2])
            if error is not None:
                self.log(pb_utils.Logger.LogLevel.INFO, f"Failed to initialize Python stub for auto-complete: {error}",
                         __file__, 0)
            self._send(AUTO_COMPLETE_DONE, error, text, primed)
            if not primed:
                return 0
            # Only model.py was imported (as any instance's stub would): stay, and become
            # the first instance's stub if the parent sends INIT.
            self._wait_for(self._has_work)
            msg = self.work.popleft()
        if msg[0] != INIT:
            return 2
        error, info = self._initialize(msg[2])
        if error is not None:
            self.log(pb_utils.Logger.LogLevel.INFO, f"Failed to initialize Python stub: {error}", __file__, 0)
        if error is None:
            info["has_is_ready"] = self._serve_readiness()
        self._send(INIT_DONE, error, info)
        if error is not None:
            return 1
        self.initialized = True
        if info["is_async"]:
            return self._serve_async()
        return self._serve_sync()

    def _serve_readiness(self) -> bool:
        """Answer the parent's readiness checks if the model defines `is_ready`."""
        if self.ready_sock is None or not hasattr(self.model, "is_ready"):
            return False
        from .. import readiness

        readiness.serve(self.ready_sock, self.model, self.loop, error_text)
        return True

    def _has_work(self) -> bool:
        return bool(self.work)

    def _serve_sync(self) -> int:
        work = self.work
        while True:
            if not work:
                self._wait_for(self._has_work)
            msg = work.popleft()
            cmd = msg[0]
            if cmd == EXECUTE:
                self._execute_sync(msg)
            elif cmd == FINALIZE:
                self._finalize()
                return 0

    def _serve_async(self) -> int:
        loop = self.loop
        assert loop is not None
        self.loop_thread = threading.get_ident()
        self.async_mode = True
        loop.add_reader(self.sock.fileno(), self.poll)
        while self.work:  # anything that arrived before the loop watched the socket
            self._dispatch_to_loop(self.work.popleft())
        try:
            loop.run_forever()
        finally:
            loop.remove_reader(self.sock.fileno())
        self._finalize()
        return 0

    def _dispatch(self, msg: tuple) -> None:
        cmd = msg[0]
        if cmd == EXECUTE or cmd == FINALIZE:
            if self.async_mode:
                self._dispatch_to_loop(msg)
            else:
                self.work.append(msg)
        elif cmd == CANCEL:
            state = self.requests.get((msg[2], msg[3]))
            if state is not None:
                state.cancelled = True
        elif cmd == BLS_RESULT:
            _, _, cid, final, rd, rid, base, total = msg
            call = self.calls.get(cid)
            response = self._response_from(rd, rid, base, total)
            if call is not None:
                if final:
                    self.calls.pop(cid, None)
                self._deliver(call, response, final)
        elif cmd == CALL_RESULT:
            _, _, cid, error, value = msg
            call = self.calls.pop(cid, None)
            if call is not None:
                self._deliver(call, (error, value), True)
        elif cmd == INIT or cmd == ipc.AUTO_COMPLETE:
            self.work.append(msg)

    def _dispatch_to_loop(self, msg: tuple) -> None:
        loop = self.loop
        if msg[0] == FINALIZE:
            fn = loop.stop
        else:
            fn = partial(self._execute_async, msg)
        if threading.get_ident() == self.loop_thread:
            loop.call_soon(fn)
        else:
            loop.call_soon_threadsafe(fn)
