"""Spawn, watch and kill one stub process.

A stub is `python -m naiad.backends.python.stub --fd N --ppid P`, started with the
parent's interpreter and environment, holding the stub end of a SOCK_SEQPACKET socketpair.
The parent watches it through two fds it registers on its event loop (no threads):
the control socket (EOF when the stub dies) and a pidfd (readable when the process
exits, even if something the stub forked still holds the socket open).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from . import ipc


class StubProcess:
    """A running stub: its process, the parent's end of its socket, and its pidfd."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket, pidfd: int) -> None:
        self.proc = proc
        self.sock = sock
        self.pidfd = pidfd

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def spawn(cls, label: str, *, env: dict[str, str] | None = None) -> "StubProcess":
        parent, child = ipc.socketpair()
        try:
            child_fd = child.fileno()
            cmd = [
                sys.executable,
                "-m",
                "naiad.backends.python.stub",
                "--fd",
                str(child_fd),
                "--ppid",
                str(os.getpid()),
                "--label",
                label,
            ]
            proc = subprocess.Popen(
                cmd,
                pass_fds=(child_fd,),
                close_fds=True,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            pidfd = -1  # very old kernel: socket EOF alone tells us the stub died
        return cls(proc, parent, pidfd)

    def exit_status(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        return self.proc.poll()

    def describe_exit(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close_fds(self) -> None:
        """Close the pidfd (the socket belongs to the Endpoint that wraps it)."""
        if self.pidfd >= 0:
            try:
                os.close(self.pidfd)
            except OSError:
                pass
            self.pidfd = -1


class SpareStub:
    """Keeps one stub started ahead of need, so a load skips the interpreter's start-up
    (most of a small model's load time). A stub is generic until its first message
    (INIT or AUTO_COMPLETE) says which model it serves; auto-complete stubs stay
    throw-away, as in Triton."""

    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled
        self._spare: StubProcess | None = None
        self._refill_pending = False
        self.closed = False

    def take(self, label: str) -> StubProcess:
        spare, self._spare = self._spare, None
        if spare is not None and spare.exit_status() is None:
            stub = spare
        else:
            if spare is not None:
                _discard(spare)
            stub = StubProcess.spawn(label)
        self._schedule_refill()
        return stub

    def _schedule_refill(self) -> None:
        if not self.enabled or self.closed or self._refill_pending:
            return
        self._refill_pending = True
        try:
            import asyncio

            asyncio.get_running_loop().call_soon(self._refill)
        except RuntimeError:
            self._refill()

    def _refill(self) -> None:
        self._refill_pending = False
        if self.closed or self._spare is not None:
            return
        try:
            self._spare = StubProcess.spawn(self.label)
        except OSError:
            self._spare = None

    def close(self) -> None:
        self.closed = True
        spare, self._spare = self._spare, None
        if spare is not None:
            _discard(spare)


def _discard(stub: StubProcess) -> None:
    """Stop and reap an unused stub (closing its socket makes it exit by itself)."""
    try:
        stub.sock.close()
    except OSError:
        pass
    stub.kill()
    stub.wait(5)
    stub.close_fds()
