"""Model repositories on disk: which models exist, their version folders, their configs.

Layout (Triton's): <repository>/<model>/config.pbtxt and numeric version folders
<repository>/<model>/<N>/. Folders named `warmup` / `initial_state`, non-numeric names
and numbers with a leading zero are not versions.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from naiad.kernel.inference.errors import InferenceError

log = logging.getLogger("naiad.services.models")

CONFIG_FILE = "config.pbtxt"


@dataclass(frozen=True)
class ModelLocation:
    name: str
    repository: Path
    model_dir: Path


def list_models(repositories: list[Path]) -> dict[str, ModelLocation]:
    """Every model folder across the repositories; a name in two repositories is an error
    reported for that model only (it is left out)."""
    found: dict[str, ModelLocation] = {}
    duplicates: set[str] = set()
    for repo in repositories:
        try:
            entries = sorted(os.scandir(repo), key=lambda e: e.name)
        except FileNotFoundError:
            log.error("model repository '%s' does not exist", repo)
            continue
        except NotADirectoryError:
            log.error("model repository '%s' is not a folder", repo)
            continue
        for entry in entries:
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            if entry.name in found:
                duplicates.add(entry.name)
                continue
            found[entry.name] = ModelLocation(entry.name, Path(repo), Path(entry.path))
    for name in duplicates:
        log.error("model '%s' appears in more than one repository; it is not loaded", name)
        found.pop(name, None)
    return found


def find_model(repositories: list[Path], name: str) -> ModelLocation | None:
    """The folder of one model, without listing every repository (None when absent or
    when it appears in more than one repository, as `list_models` leaves it out)."""
    if not name or name.startswith(".") or "/" in name or name in ("..",):
        return None
    found = [Path(r) for r in repositories if (Path(r) / name).is_dir()]
    if len(found) != 1:
        if len(found) > 1:
            log.error("model '%s' appears in more than one repository; it is not loaded", name)
        return None
    return ModelLocation(name, found[0], found[0] / name)


def version_folders(model_dir: Path) -> list[int]:
    versions = []
    try:
        entries = list(os.scandir(model_dir))
    except OSError:
        return []
    for entry in entries:
        if not entry.is_dir():
            continue
        name = entry.name
        if name in ("warmup", "initial_state"):
            continue
        if not name.isdigit() or (len(name) > 1 and name[0] == "0"):
            log.warning("ignoring folder '%s' of model '%s': not a version number", name, model_dir.name)
            continue
        versions.append(int(name))
    return sorted(versions)


def select_versions(config, available: list[int]) -> list[int]:
    """Apply the config's version_policy to the version folders found."""
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return list(available)
    if which == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in available if v in wanted]
    n = policy.latest.num_versions if which == "latest" else 1
    return sorted(available)[-max(n, 1):] if available else []


def fingerprint(model_dir: Path, skip_config: bool = False) -> str:
    """Changes whenever a file under the model folder is added, removed or modified
    (`skip_config`: any file but its config.pbtxt, Triton's "model files")."""
    h = hashlib.sha1()
    top = os.fspath(model_dir)
    for root, dirs, files in os.walk(top):
        dirs.sort()
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in sorted(files):
            if skip_config and f == CONFIG_FILE and root == top:
                continue
            p = os.path.join(root, f)
            try:
                st = os.stat(p)
            except OSError:
                continue
            h.update(f"{os.path.relpath(p, model_dir)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def safe_join(base: Path, relative: str) -> Path:
    """`base/relative`, refusing any path that leaves `base` (absolute, `..`, links out)."""
    if not relative or relative.startswith("/") or "\0" in relative:
        raise InferenceError.invalid(f"invalid file path '{relative}': must be relative to the model folder")
    target = (base / relative).resolve()
    root = base.resolve()
    if target != root and root not in target.parents:
        raise InferenceError.invalid(f"invalid file path '{relative}': it leaves the model folder")
    return target
