"""deploy/Dockerfile and deploy/Dockerfile.cuda, parsed with dockerfile-parse (no docker
here): the bases, what they install and expose, the entrypoint, that the extras they name
exist, that what they copy is in the build context, and (where apt is) that the Debian
runtime package they install exists in the base's release."""

from __future__ import annotations

import fnmatch
import io
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def parse(name: str) -> DockerfileParser:
    # A file object: given a path, the parser takes a name other than "Dockerfile" for a folder.
    return DockerfileParser(fileobj=io.BytesIO((DEPLOY / name).read_bytes()))


def instructions(df: DockerfileParser, kind: str, stage: int | None = None) -> list[str]:
    """Values of every `kind` instruction (of the last stage when `stage` is -1)."""
    rows = df.structure
    if stage is not None:
        starts = [i for i, r in enumerate(rows) if r["instruction"] == "FROM"]
        rows = rows[starts[stage]:]
    return [r["value"] for r in rows if r["instruction"] == kind]


def extras() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


@pytest.fixture(params=["Dockerfile", "Dockerfile.cuda"])
def dockerfile(request) -> tuple[str, DockerfileParser]:
    return request.param, parse(request.param)


def test_runtime_stage_exposes_and_runs_naiad(dockerfile) -> None:
    _, df = dockerfile
    assert instructions(df, "EXPOSE", -1) == ["8000 8001 8002"]
    assert instructions(df, "ENTRYPOINT", -1) == ['["naiad", "serve"]']
    assert instructions(df, "CMD", -1) == ['["--model-repository=/models"]']
    assert instructions(df, "USER", -1) == ["1000"]
    installs = " ".join(instructions(df, "RUN", -1))
    assert re.search(r'pip install .*--no-index --find-links /wheels "naiad\[\$\{NAIAD_EXTRAS\}\]"', installs)
    assert 'pip wheel --no-cache-dir --wheel-dir /wheels ".[${NAIAD_EXTRAS}]"' in " ".join(instructions(df, "RUN", 0))
    assert instructions(df, "COPY", -1) == ["--from=build /wheels /wheels"]


def test_bases_and_extras() -> None:
    cpu, cuda = parse("Dockerfile"), parse("Dockerfile.cuda")
    assert cpu.parent_images == ["python:3.11-slim-bookworm"] * 2
    assert cuda.parent_images == ["nvidia/cuda:12.4.1-devel-ubuntu22.04", "nvidia/cuda:12.4.1-runtime-ubuntu22.04"]
    known = extras()
    for df, wanted in ((cpu, {"cloud"}), (cuda, {"gpu", "cloud"})):
        (value,) = {v for k, v in df.args.items() if k == "NAIAD_EXTRAS"}
        assert set(value.split(",")) == wanted and wanted <= set(known)
    assert "nvidia-ml-py>=12" in known["gpu"]  # the nv_gpu_* metrics in the CUDA image


def _ignored(patterns: list[str], path: str) -> bool:
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p) or
               fnmatch.fnmatch(path, p.removeprefix("**/")) for p in patterns)


def test_build_context_keeps_the_sources(dockerfile) -> None:
    """`COPY . .` with deploy/<Dockerfile>.dockerignore: what the wheel build needs is sent,
    build outputs and the virtual environment are not."""
    name, df = dockerfile
    assert "COPY . ." in [f"COPY {v}" for v in instructions(df, "COPY", 0)]
    patterns = [line.strip() for line in (DEPLOY / f"{name}.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for needed in ("pyproject.toml", "setup.py", "README.md", "kernel/main.py", "protos/model_config.proto",
                   "ext/_batching.pyx"):
        assert (REPO / needed).exists() and not _ignored(patterns, needed), needed
    for dropped in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "protos/model_config_pb2.py"):
        assert _ignored(patterns, dropped), dropped


@pytest.mark.skipif(shutil.which("apt-cache") is None, reason="no apt-cache on this machine")
def test_cpu_runtime_packages_exist_in_debian() -> None:
    """The CPU image's runtime packages, asked of this machine's apt (the base is Debian
    bookworm; skipped unless this machine is too)."""
    release = Path("/etc/os-release").read_text()
    if "bookworm" not in release:
        pytest.skip("this machine is not Debian bookworm, the CPU image's base")
    (run,) = [r for r in instructions(parse("Dockerfile"), "RUN", -1) if "apt-get install" in r]
    packages = run.split("--no-install-recommends", 1)[1].split("&&", 1)[0].split()
    assert packages == ["libjemalloc2", "libgrpc++1.51"]
    for pkg in packages:
        out = subprocess.run(["apt-cache", "show", pkg], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and f"Package: {pkg}" in out.stdout, pkg
