"""Shared test set-up: `support` helpers importable, and a fixture that runs naiad."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from support.naiad_process import NaiadProcess  # noqa: E402


@pytest.fixture
def naiad(tmp_path):
    """Factory: `naiad(*flags, config=toml_text, env=...)` starts `naiad serve` on free
    loopback ports and waits until it is ready; every process is stopped at the end."""
    started: list[NaiadProcess] = []

    def start(*flags: str, config: str | None = None, env: dict | None = None,
              wait_ready: bool = True, **kwargs) -> NaiadProcess:
        proc = NaiadProcess(tmp_path / f"naiad{len(started)}", list(flags), config=config, env=env, **kwargs)
        started.append(proc)
        proc.start(wait_ready=wait_ready)
        return proc

    yield start
    for proc in started:
        proc.kill_if_running()
