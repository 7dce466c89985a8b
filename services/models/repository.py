"""Model repositories on disk: which models exist, their version folders, their configs.

Layout (Triton's): <repository>/<model>/config.pbtxt and numeric version folders
<repository>/<model>/<N>/. Folders named `warmup` / `initial_state`, non-numeric names
and numbers with a leading zero are not versions.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from naiad.kernel.inference.errors import InferenceError

log = logging.getLogger("naiad.services.models")

CONFIG_FILE = "config.pbtxt"


def model_key(namespace: str, name: str) -> str:
    """How naiad keys a model: its name, or with model namespacing `<repository>::<name>`
    (the form Triton prints a model identifier in); the empty namespace is the bare name."""
    return f"{namespace}::{name}" if namespace else name


@dataclass(frozen=True)
class ModelLocation:
    name: str
    repository: Path
    model_dir: Path
    namespace: str = ""  # with model namespacing: the repository, as the flag gave it

    @property
    def key(self) -> str:
        return model_key(self.namespace, self.name)


def list_models(repositories: list[Path], namespacing: bool = False) -> dict[str, ModelLocation]:
    """Every model folder across the repositories, by key. Without namespacing a name in
    two repositories is an error reported for that model only (it is left out); with it,
    each repository's folder is a model of its own."""
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
            if namespacing:
                loc = ModelLocation(entry.name, Path(repo), Path(entry.path), str(repo))
                found[loc.key] = loc
                continue
            if entry.name in found:
                duplicates.add(entry.name)
                continue
            found[entry.name] = ModelLocation(entry.name, Path(repo), Path(entry.path))
    for name in duplicates:
        log.error("model '%s' appears in more than one repository; it is not loaded", name)
        found.pop(name, None)
    return found


def is_model_name(name: str) -> bool:
    """Whether `name` can be a model folder: one path component, not hidden (so a name can
    never reach outside the folder it is joined to)."""
    return bool(name) and not name.startswith(".") and "/" not in name and "\0" not in name


def find_models(repositories: list[Path], name: str) -> list[ModelLocation]:
    """The folder of `name` in every repository that has one, each in its repository's
    namespace (model namespacing keeps them apart)."""
    if not is_model_name(name):
        return []
    return [ModelLocation(name, Path(r), Path(r) / name, str(r)) for r in repositories if (Path(r) / name).is_dir()]


def find_model(repositories: list[Path], name: str) -> ModelLocation | None:
    """The folder of one model, without listing every repository (None when absent or
    when it appears in more than one repository, as `list_models` leaves it out)."""
    found = find_models(repositories, name)
    if len(found) != 1:
        if len(found) > 1:
            log.error("model '%s' appears in more than one repository; it is not loaded", name)
        return None
    return replace(found[0], namespace="")


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
