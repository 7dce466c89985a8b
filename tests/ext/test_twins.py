"""native_module: the native module serves where it is built; NAIAD_PURE_PYTHON=1 makes
every native-or-twin module (batcher, batching, host_buffers) pick its Python twin."""

from __future__ import annotations

import os
import subprocess
import sys

from naiad.ext.twins import native_module

PROBE = ("from naiad.ext import batcher, batching, host_buffers; "
         "print(batcher.NATIVE, batching.NATIVE, host_buffers.NATIVE, batching.gather.__module__, "
         "host_buffers.HostBuffer.__module__, batcher.queue_class().__module__)")


def _probe(pure: str) -> list[str]:
    env = dict(os.environ, NAIAD_PURE_PYTHON=pure)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.split()


def test_forced_twins():
    assert _probe("1") == ["False", "False", "False", "naiad.ext.batching_py", "naiad.ext.host_buffers_py",
                           "naiad.ext.batcher_py"]


def test_native_where_built():
    built = [native_module(name) is not None for name in ("_batcher", "_batching", "_host_buffers")]
    got = _probe("0")
    assert got[:3] == [str(b) for b in built]
    assert (got[3] == "naiad.ext._batching") == built[1]
    assert (got[4] == "naiad.ext._host_buffers") == built[2]
    assert (got[5] == "naiad.ext.batcher") == built[0]  # NativeBatchQueue subclasses the native queue there


def test_a_module_not_built_is_none(caplog):
    with caplog.at_level("INFO", logger="naiad.ext"):
        assert native_module("_no_such_module") is None
    assert "naiad.ext._no_such_module unavailable" in caplog.text and "Python twin" in caplog.text
