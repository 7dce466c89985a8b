"""The stub process's start: its arguments, its ties to the parent, and the serve loop."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys

from .. import ipc, pb_utils
from .serve import Stub


def _restore_library_path() -> None:
    """A stub in a model's own environment was started with that environment's lib folder
    first on LD_LIBRARY_PATH; the processes the model starts get the old value, as in Triton."""
    old = os.environ.pop("NAIAD_STUB_LD_LIBRARY_PATH", None)
    if old is None:
        return
    if old:
        os.environ["LD_LIBRARY_PATH"] = old
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)

def _set_parent_death_signal() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class _Args:
    fd = -1
    ppid = -1
    label = "stub"
    ready_fd = -1  # the readiness channel (`readiness`)


def _parse_args(argv: list[str]) -> _Args:
    """--fd N --ppid P [--label L] (argparse costs start-up time for three flags)."""
    args = _Args()
    it = iter(argv)
    for flag in it:
        value = next(it, None)
        if value is None or flag not in ("--fd", "--ppid", "--label", "--ready-fd"):
            sys.exit(f"usage: python -m naiad.backends.python.stub --fd N --ppid P [--label L] (bad {flag!r})")
        setattr(args, flag[2:].replace("-", "_"), value if flag == "--label" else int(value))
    if args.fd < 0 or args.ppid < 0:
        sys.exit("usage: python -m naiad.backends.python.stub --fd N --ppid P [--label L]")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    # What Triton's embedded interpreter gives a model (pybind11 started without arguments):
    # a model calling unittest.main() or argparse must not see the stub's own flags.
    sys.argv = [""]

    _set_parent_death_signal()
    if os.getppid() != args.ppid:  # the parent died before the signal was armed
        os._exit(0)
    # The parent owns our lifecycle: Ctrl-C in a terminal must not kill us first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    os.set_inheritable(args.fd, False)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=args.fd)
    sys.modules["triton_python_backend_utils"] = pb_utils
    sys.modules.setdefault("c_python_backend_utils", pb_utils)
    _restore_library_path()
    stub = Stub(sock, args.label)
    if args.ready_fd >= 0:
        os.set_inheritable(args.ready_fd, False)
        stub.ready_sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=args.ready_fd)
    pb_utils._bind(stub)
    code = 0
    try:
        code = stub.serve()
    except ipc.ProtocolError as exc:
        print(f"naiad python stub {args.label}: {exc}", file=sys.stderr)
        code = 3
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
