"""Model control from a model: load, unload, readiness, its own folder."""

from __future__ import annotations

from . import runtime as _rt


def load_model(model_name: str, config: str = "", files: dict[str, bytes] | None = None) -> None:
    if model_name is None or config is None:
        raise TypeError("load_model(): model_name and config must not be None")
    _rt.require("load_model").control("load_model", (model_name, config, dict(files or {})))


def unload_model(model_name: str, unload_dependents: bool = False) -> None:
    if model_name is None or unload_dependents is None:
        raise TypeError("unload_model(): arguments must not be None")
    _rt.require("unload_model").control("unload_model", (model_name, bool(unload_dependents)))


def is_model_ready(model_name: str, model_version: str = "") -> bool:
    if model_name is None or model_version is None:
        raise TypeError("is_model_ready(): arguments must not be None")
    return bool(_rt.require("is_model_ready").control("is_model_ready", (model_name, str(model_version))))


def get_model_dir() -> str:
    return _rt.require("get_model_dir").model_dir
