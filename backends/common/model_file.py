"""Where a framework model's file is: `<model dir>/<version>/<default_model_filename>`, the
backend's own file name where the config sets none (Triton's layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from naiad.kernel.inference.errors import InferenceError


def model_file(model_dir: Path | str, version: int, config: Any, default_filename: str,
               folder_holds: str | None = None) -> Path:
    """The model file; with `folder_holds`, a folder of that name holds that file (ONNX's
    layout for models with external data). INVALID_ARG in Triton's words when absent."""
    path = Path(model_dir) / str(version) / (config.default_model_filename or default_filename)
    if folder_holds is not None and path.is_dir():
        path = path / folder_holds
    if not path.is_file():
        raise InferenceError.invalid(f"unable to find '{path}' for model '{config.name}'")
    return path
