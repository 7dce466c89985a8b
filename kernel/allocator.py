"""Choose the memory allocator: the system's, or jemalloc through LD_PRELOAD.

With `allocator = "jemalloc"` the process re-executes itself once with Debian's
libjemalloc2 preloaded (the allocator has to be in place before Python starts). Where the
library is missing, one log line says so and naiad runs on the system allocator.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("naiad.kernel")

_REEXEC_MARK = "NAIAD_ALLOCATOR_REEXEC"
_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
)


def find_jemalloc() -> str | None:
    override = os.environ.get("NAIAD_JEMALLOC_PATH")
    if override is not None:  # lets tests and unusual installs point elsewhere
        return override if Path(override).is_file() else None
    for path in _CANDIDATES:
        if Path(path).is_file():
            return path
    name = ctypes.util.find_library("jemalloc")
    return name if name and Path(name).is_absolute() else None


def active_allocator() -> str:
    """'jemalloc' when libjemalloc is mapped into this process, else 'system'."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return "jemalloc" if "libjemalloc" in maps else "system"


def ensure(kind: str, argv: list[str]) -> None:
    """Re-execute under jemalloc when asked to and not done yet; returns otherwise."""
    if kind != "jemalloc" or os.environ.get(_REEXEC_MARK) == "1":
        return
    if active_allocator() == "jemalloc":
        return
    path = find_jemalloc()
    if path is None:
        log.warning("allocator 'jemalloc' requested but libjemalloc.so.2 was not found "
                    "(apt-get install libjemalloc2); running on the system allocator")
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(p for p in (path, env.get("LD_PRELOAD", "")) if p)
    env[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "naiad.kernel.main", *argv], env)
