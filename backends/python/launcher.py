"""Spawn, watch and kill one stub process.

A stub is `python -m naiad.backends.python.stub --fd N --ppid P --ready-fd R` (run through
a few `-c` statements that first tie its life to the parent's: `_BOOT`), started
with the parent's interpreter and environment, holding the stub ends of two
SOCK_SEQPACKET socketpairs: the control channel and the readiness channel (`readiness`).
The parent watches it through two fds it registers on its event loop (no threads):
the control socket (EOF when the stub dies) and a pidfd (readable when the process
exits, even if something the stub forked still holds the socket open).

A model with its own environment (`environments.PythonEnv`) gets a stub started as
Triton starts one: bash sources the environment's `bin/activate`, then runs its
interpreter with the environment's `lib` first on LD_LIBRARY_PATH (the stub puts the old
value back for the processes the model starts) and naiad's stub modules on PYTHONPATH.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

from . import ipc

if TYPE_CHECKING:
    from .environments import PythonEnv

# Run by bash for a stub in its own environment: $1 is the environment, the rest the
# stub's command line. Activation first, with no arguments in sight, as Triton does it
# (conda-pack's activate runs its hooks there).
_ENV_LAUNCH = (
    '_env="$1"; shift; _argv=("$@"); set --; '
    'source "$_env/bin/activate" || exit 1; '
    'export NAIAD_STUB_LD_LIBRARY_PATH="${LD_LIBRARY_PATH-}"; '
    'export LD_LIBRARY_PATH="$_env/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; '
    'exec "${_argv[@]}"'
)


# The stub's first statements, before it imports anything heavy (numpy, the model): die
# with the parent (PR_SET_PDEATHSIG, SIGKILL), or exit if the parent is already gone, so
# that a server killed while a stub starts up leaves no stub behind; then run the stub
# module as `-m` would.
_BOOT = (
    "import ctypes, os, runpy, signal, sys; "
    "ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0); "
    "os.getppid() == int(sys.argv[sys.argv.index('--ppid') + 1]) or os._exit(0); "
    "runpy.run_module('naiad.backends.python.stub', run_name='__main__', alter_sys=True)"
)


class StubProcess:
    """A running stub: its process, the parent's end of its socket, and its pidfd."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket, pidfd: int,
                 ready_sock: socket.socket | None = None) -> None:
        self.proc = proc
        self.sock = sock
        self.pidfd = pidfd
        self.ready_sock = ready_sock  # the parent's end of the readiness channel

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def spawn(cls, label: str, *, env: dict[str, str] | None = None,
              python_env: PythonEnv | None = None) -> "StubProcess":
        parent, child = ipc.socketpair()
        ready_parent, ready_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            child_fd = child.fileno()
            ready_fd = ready_child.fileno()
            cmd = [
                "-c",
                _BOOT,
                "--fd",
                str(child_fd),
                "--ppid",
                str(os.getpid()),
                "--label",
                label,
                "--ready-fd",
                str(ready_fd),
            ]
            if python_env is None:
                cmd.insert(0, sys.executable)
            else:
                cmd = ["bash", "-c", _ENV_LAUNCH, "naiad-stub", str(python_env.root), str(python_env.python), *cmd]
                env = _env_for(python_env, env)
            proc = subprocess.Popen(
                cmd,
                pass_fds=(child_fd, ready_fd),
                close_fds=True,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            parent.close()
            ready_parent.close()
            raise
        finally:
            child.close()
            ready_child.close()
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            pidfd = -1  # very old kernel: socket EOF alone tells us the stub died
        return cls(proc, parent, pidfd, ready_parent)

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

    def terminate(self) -> None:
        """SIGTERM: a model with its own handler may clean up before the SIGKILL that
        the caller sends after a grace."""
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
            except ProcessLookupError:
                pass

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
        """Close the pidfd and the readiness socket (the control socket belongs to the
        Endpoint that wraps it)."""
        if self.ready_sock is not None:
            self.ready_sock.close()
            self.ready_sock = None
        if self.pidfd >= 0:
            try:
                os.close(self.pidfd)
            except OSError:
                pass
            self.pidfd = -1


def _env_for(python_env: PythonEnv, base: dict[str, str] | None) -> dict[str, str]:
    """The parent's environment plus naiad's stub modules first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(python_env.naiad_path) + (os.pathsep + path if path else "")
    return env


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
