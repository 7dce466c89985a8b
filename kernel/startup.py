"""tritonserver's start-up checks of `--model-repository`, with its words.

Triton refuses to create the server when no repository is named (core `server.cc`
`InferenceServer::Init`), when a path cannot be stat'ed or is not a folder
(`ModelRepositoryManager::Create`), or when a cloud repository (`s3://`, `gs://`, `as://`)
cannot be reached (`filesystem/api.cc`, the client check); see kernel/objectstore.py.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from . import objectstore


@dataclass(frozen=True)
class InitError:
    code: str  # Triton's status code string: "Internal", "Invalid argument"
    message: str

    def creating_server(self) -> str:
        """The line tritonserver prints on stderr before it exits (`FAIL_IF_ERR`)."""
        return f"error: creating server: {self.code} - {self.message}"

    def __str__(self) -> str:
        """As Triton logs it when `--exit-on-error=false` lets the server go on (`AsString`)."""
        return f"{self.code}: {self.message}"


def repository_error(paths: list[str]) -> InitError | None:
    """Why Triton would not create a server for these repository paths (None: it would)."""
    if not paths:
        return InitError("Invalid argument", "--model-repository must be specified")
    for path in paths:
        if objectstore.is_remote(path):
            try:
                objectstore.Store(path).check()
            except objectstore.ObjectStoreError as exc:
                return InitError(exc.code, str(exc))
            continue
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return InitError("Internal", f"failed to stat file {path}")
        if not stat.S_ISDIR(mode):
            return InitError("Invalid argument", "repository path is not a valid directory")
    return None
