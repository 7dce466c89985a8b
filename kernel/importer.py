"""Load an object from an import string "package.module:attribute" (one error type)."""

from __future__ import annotations

import importlib
from typing import Any


class ImportFromStringError(Exception):
    pass


def import_from_string(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ImportFromStringError(f'"{spec}" is not of the form "package.module:attribute"')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ImportFromStringError(f'could not import module "{module_name}"') from None
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportFromStringError(f'module "{module_name}" has no attribute "{attr}"') from None
    return obj
