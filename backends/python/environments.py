"""Per-model Python environments: the `EXECUTION_ENV_PATH` model parameter, as Triton's.

A model may name an environment of its own in its config:

    parameters: { key: "EXECUTION_ENV_PATH",
                  value: { string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz" } }

The value is a folder (a venv or conda environment, used where it is) or a tar archive of
one (conda-pack, or a packed venv), unpacked once per server into `/tmp/python_env_XXXXXX/N`
and unpacked again when the archive changes. `$$TRITON_MODEL_DIRECTORY` stands for the
model's folder. The environment must hold `bin/activate`; its stubs run its own
interpreter (`bin/python`), so its packages (an older numpy, another Python) serve the
model while the server keeps its own. Those interpreters import naiad's pure-Python stub
modules through a small folder of links (`naiad_path/`), never the server's site-packages.
Everything unpacked is removed when the backend closes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from naiad.kernel.inference.errors import InferenceError

logger = logging.getLogger("naiad.backends.python")

PARAMETER = "EXECUTION_ENV_PATH"
MODEL_DIRECTORY = "$$TRITON_MODEL_DIRECTORY"
# The naiad packages a stub imports (all pure Python), linked into the stub's path.
_STUB_PACKAGES = ("backends", "kernel")


@dataclass(frozen=True)
class PythonEnv:
    """A ready environment: where it is, its interpreter, and the folder that makes
    `naiad.backends.python.stub` importable from that interpreter."""

    root: Path
    python: Path
    naiad_path: Path


def requested_path(config: Any, model_dir: Path) -> str | None:
    """The config's EXECUTION_ENV_PATH with `$$TRITON_MODEL_DIRECTORY` replaced, or None."""
    if PARAMETER not in config.parameters:
        return None
    path = config.parameters[PARAMETER].string_value
    return path.replace(MODEL_DIRECTORY, str(model_dir), 1)


class ExecutionEnvironments:
    """The backend's environments: archives unpacked once, folders used as they are."""

    def __init__(self) -> None:
        self._base: Path | None = None
        self._naiad_path: Path | None = None
        self._unpacked: dict[str, tuple[Path, int]] = {}  # archive -> (folder, mtime_ns)
        self._count = 0
        self._locks: dict[str, asyncio.Lock] = {}
        self._announced: set[tuple[str, str]] = set()  # (model, path): Triton logs it once a load

    async def get(self, model_name: str, path: str) -> PythonEnv:
        """The environment for `path` (from `requested_path`), unpacking it if needed."""
        if (model_name, path) not in self._announced:
            self._announced.add((model_name, path))
            logger.info("Using Python execution env %s", path)
        canonical = os.path.realpath(path)
        if not os.path.exists(canonical):
            raise InferenceError.internal(f"Failed to get the canonical path for {path}.")
        if os.path.isdir(canonical):
            logger.debug("Returning canonical path since EXECUTION_ENV_PATH does not contain "
                         "compressed path. Path: %s", canonical)
            root = Path(canonical)
        else:
            lock = self._locks.setdefault(canonical, asyncio.Lock())
            async with lock:
                root = await asyncio.to_thread(self._unpack, canonical)
        activate = root / "bin" / "activate"
        if not activate.is_file():
            raise InferenceError.internal(
                f"Path {activate} does not exist. The Python environment should contain an "
                "'activate' script.")
        python = next((p for p in (root / "bin" / "python", root / "bin" / "python3") if p.exists()), None)
        if python is None:
            raise InferenceError.internal(
                f"Python execution env {root} of model '{model_name}' has no bin/python interpreter")
        return PythonEnv(root, python, self._stub_path())

    def _base_dir(self) -> Path:
        if self._base is None:
            self._base = Path(tempfile.mkdtemp(prefix="python_env_"))
        return self._base

    def _unpack(self, archive: str) -> Path:
        """Unpack once; again (into a fresh folder) when the archive's mtime changes. The old
        folder stays until the backend closes: a running stub may still import from it."""
        mtime = os.stat(archive).st_mtime_ns
        known = self._unpacked.get(archive)
        if known is not None and known[1] == mtime:
            return known[0]
        logger.debug("Extracting Python execution env %s", archive)
        dest = self._base_dir() / str(self._count)
        self._count += 1
        dest.mkdir(mode=0o775)
        try:
            with tarfile.open(archive) as tar:
                # The "tar" filter keeps links that point outside (a venv's bin/python is one)
                # but refuses members that would land outside `dest`.
                tar_filter = getattr(tarfile, "tar_filter", None)
                if tar_filter is not None:
                    tar.extractall(dest, filter=tar_filter)
                else:  # a Python without extraction filters
                    tar.extractall(dest)
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise InferenceError.internal(f"Failed to extract the Python execution env {archive}: {exc}") from None
        self._unpacked[archive] = (dest, mtime)
        return dest

    def _stub_path(self) -> Path:
        """A folder whose `naiad/` links to the packages the stub imports, for PYTHONPATH."""
        if self._naiad_path is None:
            import naiad.backends
            import naiad.kernel

            root = self._base_dir() / "naiad_path"
            (root / "naiad").mkdir(parents=True, exist_ok=True)
            for name, package in zip(_STUB_PACKAGES, (naiad.backends, naiad.kernel)):
                link = root / "naiad" / name
                if not link.exists():
                    link.symlink_to(Path(list(package.__path__)[0]), target_is_directory=True)
            self._naiad_path = root
        return self._naiad_path

    def close(self) -> None:
        base, self._base = self._base, None
        self._naiad_path = None
        self._unpacked.clear()
        self._announced.clear()
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)
