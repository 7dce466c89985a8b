"""`[server] allocator`: jemalloc through LD_PRELOAD (re-exec once), or the system one."""

from __future__ import annotations

import pytest

from naiad.kernel.allocator import find_jemalloc
from support.models import empty_repository


def _maps(proc) -> str:
    return open(f"/proc/{proc.proc.pid}/maps").read()


@pytest.mark.skipif(find_jemalloc() is None, reason="libjemalloc2 is not installed (apt-get install libjemalloc2)")
def test_jemalloc_on(naiad, tmp_path):
    proc = naiad(f"--model-repository={empty_repository(tmp_path)}", config='[server]\nallocator = "jemalloc"\n')
    assert "libjemalloc" in _maps(proc)
    assert "allocator: jemalloc" in proc.logs()
    assert proc.stop() == 0


def test_jemalloc_off(naiad, tmp_path):
    proc = naiad(f"--model-repository={empty_repository(tmp_path)}", config='[server]\nallocator = "system"\n')
    assert "libjemalloc" not in _maps(proc)
    assert "allocator: system" in proc.logs()
    assert proc.stop() == 0


def test_jemalloc_missing_runs_on_system_allocator_with_one_line(naiad, tmp_path):
    proc = naiad(f"--model-repository={empty_repository(tmp_path)}", config='[server]\nallocator = "jemalloc"\n', env={"NAIAD_JEMALLOC_PATH": "/nonexistent/libjemalloc.so.2"})
    assert "libjemalloc" not in _maps(proc)
    lines = [l for l in proc.logs().splitlines() if "libjemalloc.so.2 was not found" in l]
    assert len(lines) == 1 and "running on the system allocator" in lines[0]
    assert proc.stop() == 0
