"""tritonclient's system shared-memory utilities, importable without pkg_resources."""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from pathlib import Path


def shared_memory_module() -> types.ModuleType:
    """`tritonclient.utils.shared_memory`, which imports pkg_resources only to find its
    libcshm.so; setuptools >= 81 no longer ships pkg_resources, so stand in for it."""
    try:
        with warnings.catch_warnings():  # older setuptools: "pkg_resources is deprecated"
            warnings.simplefilter("ignore", UserWarning)
            import tritonclient.utils.shared_memory as shm
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, resource: str) -> str:
            spec = importlib.util.find_spec(package)
            assert spec is not None and spec.submodule_search_locations
            return str(Path(list(spec.submodule_search_locations)[0]) / resource)

        shim.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
        try:
            import tritonclient.utils.shared_memory as shm
        finally:
            del sys.modules["pkg_resources"]
    return shm
