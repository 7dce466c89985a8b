"""One naiad per test module here: each module builds its model repository once and
starts one server (Python-backend models take a moment each to load), so the suite
stays fast while every test still goes through a real `naiad serve`."""

from __future__ import annotations

import pytest

from support.naiad_process import NaiadProcess


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """Factory: `serve(repo, *flags, config=None)` starts `naiad serve --model-repository
    repo` on loopback and waits until it is ready."""
    started: list[NaiadProcess] = []

    def start(repo, *flags: str, config: str | None = None, **kwargs) -> NaiadProcess:
        workdir = tmp_path_factory.mktemp("naiad")
        proc = NaiadProcess(workdir, ["--model-repository", str(repo), *flags], config=config, **kwargs)
        started.append(proc)
        proc.start()
        return proc

    yield start
    for proc in started:
        proc.kill_if_running()
