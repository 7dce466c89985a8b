"""Shared test set-up: a fixture that runs naiad (`support` is importable through
pytest's `pythonpath` in pyproject.toml)."""

from __future__ import annotations

import pytest

from support.naiad_process import NaiadProcess


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
