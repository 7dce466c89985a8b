"""A model's own readiness check, `TritonPythonModel.is_ready()` (python_backend 26.03).

When a model defines `is_ready`, `/v2/models/<name>/ready` asks it, per instance, over a
channel of its own (a SOCK_SEQPACKET pair the launcher makes for every stub): the stub
answers from a small thread, so a long `execute` does not stall the check, and BLS
traffic on the control channel never waits behind it. One check per instance runs at a
time; concurrent callers share it. A check that takes longer than five seconds reports
not ready (the late answer still ends that check). Without `is_ready` nothing crosses.

The wire: the parent sends b"?"; the stub answers b"1" (ready), b"0" (not ready) or
b"E" + the error text (is_ready raised or returned something other than a bool).

The stub side (`serve`) runs in stub interpreters of other Python versions too: it uses
only the standard library.
"""

from __future__ import annotations

import socket
import threading
from typing import Any, Callable

#: How long a readiness check may take (Triton's kUserModelReadinessTimeoutMs).
TIMEOUT = 5.0

_ASK = b"?"
_READY = b"1"
_NOT_READY = b"0"
_ERROR = b"E"


# ================================================================ parent side ==


class ReadinessProbe:
    """The parent's end of one stub's readiness channel."""

    def __init__(self, sock: socket.socket, instance_name: str) -> None:
        self.sock = sock
        self.instance_name = instance_name
        self._inflight: Any = None  # asyncio.Task of the check under way

    async def check(self) -> tuple[bool, str]:
        """(ready, why not) — the words are Triton's."""
        import asyncio

        joined = self._inflight is not None and not self._inflight.done()
        if not joined:
            self._inflight = asyncio.get_running_loop().create_task(self._ask())
        try:
            return await asyncio.wait_for(asyncio.shield(self._inflight), TIMEOUT)
        except asyncio.TimeoutError:
            if joined:
                return False, "Timed out waiting for in-flight is_ready() response"
            return False, "Timed out waiting for user-defined is_ready() response"

    async def _ask(self) -> tuple[bool, str]:
        import asyncio

        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendall(self.sock, _ASK)
            reply = await loop.sock_recv(self.sock, 1 << 16)
        except OSError:
            reply = b""
        if not reply:
            return False, "Stub process is not healthy while waiting for user-defined is_ready() response"
        if reply == _READY:
            return True, ""
        if reply == _NOT_READY:
            return False, f"Model '{self.instance_name}' is not ready (user-defined check failed)."
        text = reply[1:].decode("utf-8", "replace") or "User-defined is_ready() failed with unknown error"
        return False, text


# ================================================================== stub side ==


def serve(sock: socket.socket, model: Any, loop: Any, error_text: Callable[[BaseException], str]) -> threading.Thread:
    """Answer readiness checks from a daemon thread until the parent closes the channel.
    An `async def is_ready` runs on the model's event loop when that loop is running
    (async models), else on a loop of this thread's own."""

    def run() -> None:
        own_loop = None
        while True:
            try:
                if not sock.recv(16):
                    return
            except OSError:
                return
            try:
                result = model.is_ready()
                if _is_awaitable(result):
                    import asyncio

                    if loop is not None and loop.is_running():
                        result = asyncio.run_coroutine_threadsafe(result, loop).result()
                    else:
                        if own_loop is None:
                            own_loop = asyncio.new_event_loop()
                        result = own_loop.run_until_complete(result)
                if not isinstance(result, bool):
                    raise _NotABool("is_ready() must return a boolean value")
                reply = _READY if result else _NOT_READY
            except _NotABool as exc:
                reply = _ERROR + str(exc).encode()
            except BaseException as exc:  # noqa: BLE001 (whatever the model raises)
                reply = _ERROR + error_text(exc).encode("utf-8", "replace")[: (1 << 16) - 1]
            try:
                sock.send(reply)
            except OSError:
                return

    thread = threading.Thread(target=run, name="naiad-is-ready", daemon=True)
    thread.start()
    return thread


class _NotABool(Exception):
    pass


def _is_awaitable(value: Any) -> bool:
    return hasattr(value, "__await__")
