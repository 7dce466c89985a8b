"""Model loading in the stub: import model.py as Triton does, auto-complete its config,
create and initialize the `TritonPythonModel`, and finalize it at the end."""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import TYPE_CHECKING, Any

from .. import pb_utils
from ..ipc import FINALIZE_DONE
from .errors import error_text

if TYPE_CHECKING:
    import asyncio


class ModelLoading:
    """The model's life in the stub (a mixin of `Stub`)."""

    def _init_loading(self) -> None:
        self.model: Any = None
        self.model_name = ""
        self.instance_name = ""  # Triton's stub names itself after its instance ("m_0_0")
        self.model_path = ""
        self.model_dir = ""
        self.decoupled = False
        self.all_outputs: tuple | None = None
        self.initialized = False
        self.finalizing = False
        self.loop: asyncio.AbstractEventLoop | None = None  # async mode: execute runs here
        self.aux_loop: asyncio.AbstractEventLoop | None = None  # sync code awaiting a coroutine

    def _load_model_class(self, cfg: dict) -> type:
        if cfg.get("label"):  # a spare stub learns whom it serves (names its regions)
            self.label = cfg["label"]
            self.ep.arena.prefix = f"naiad-{self.label}-out"
        self.model_name = cfg["model_name"]
        self.model_path = cfg["model_path"]
        self.model_dir = cfg["version_dir"]
        for entry in (cfg["version_dir"], cfg["model_dir"]):
            if entry not in sys.path:
                sys.path.append(entry)
        # Triton imports model.py as "<version>.<stem>"; a package for the version folder
        # makes that import (and relative imports inside model.py) resolve to this model.
        package, _, stem = cfg["module"].rpartition(".")
        if package and package not in sys.modules:
            pkg = types.ModuleType(package)
            pkg.__path__ = [cfg["version_dir"]]
            sys.modules[package] = pkg
        module = importlib.import_module(cfg["module"])
        # Without the class: Python's own AttributeError, as Triton reports it.
        return getattr(module, "TritonPythonModel")

    def _auto_complete(self, cfg: dict) -> tuple[str | None, str | None, bool]:
        """(error, completed config JSON, primed: no user code ran besides the import)."""
        import json

        try:
            cls = self._load_model_class(cfg)
            if not hasattr(cls, "auto_complete_config"):
                return None, cfg["config_json"], True
            config = cls.auto_complete_config(pb_utils.ModelConfig(cfg["config_json"]))
            if not isinstance(config, pb_utils.ModelConfig):
                return (
                    f"auto_complete_config function in model '{self.model_name}' must return "
                    "a valid pb.ModelConfig object.",
                    None,
                    False,
                )
            return None, json.dumps(config.as_dict()), False
        except BaseException as exc:  # noqa: BLE001 (anything the model raises)
            return error_text(exc), None, False

    def _initialize(self, cfg: dict) -> tuple[str | None, dict]:
        self.decoupled = bool(cfg["decoupled"])
        self.instance_name = cfg.get("instance_name") or cfg["model_name"]
        self.all_outputs = tuple(cfg["all_outputs"]) or None
        arena = self.ep.arena
        arena.region_size = max(int(cfg.get("region_size", arena.region_size)), 1 << 16)
        arena.first_region_size = max(int(cfg.get("first_region_size", arena.region_size)), 1 << 16)
        try:
            cls = self._load_model_class(cfg)
            self.model = cls()
            execute = getattr(cls, "execute", None)
            is_async = execute is not None and is_coroutine_function(execute)
            if is_async:
                import asyncio

                self.loop = asyncio.new_event_loop()
                asyncio.set_event_loop(self.loop)
            init = getattr(self.model, "initialize", None)
            if init is not None:
                result = init(dict(cfg["args"]))
                if is_awaitable(result):
                    self._run_blocking(result)
        except BaseException as exc:  # noqa: BLE001
            return error_text(exc), {}
        return None, {"is_async": is_async, "pid": os.getpid()}

    def _run_blocking(self, coro: Any) -> Any:
        """Run a coroutine to completion from synchronous code (sync execute/initialize
        that return one)."""
        if self.loop is not None and not self.loop.is_running():
            return self.loop.run_until_complete(coro)
        if self.aux_loop is None:
            import asyncio

            self.aux_loop = asyncio.new_event_loop()
        return self.aux_loop.run_until_complete(coro)

    def _finalize(self) -> None:
        self.finalizing = True
        fin = getattr(self.model, "finalize", None)
        if fin is not None:
            try:
                result = fin()
                if is_awaitable(result):
                    self._run_blocking(result)
            except BaseException as exc:  # noqa: BLE001
                self.log(pb_utils.Logger.LogLevel.ERROR, f"finalize failed: {error_text(exc)}", self.model_path, 0)
        self._send(FINALIZE_DONE)


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE


def is_coroutine_function(fn: Any) -> bool:
    fn = getattr(fn, "__func__", fn)
    return bool(getattr(getattr(fn, "__code__", None), "co_flags", 0) & _CO_COROUTINE)


def is_awaitable(obj: Any) -> bool:
    return obj is not None and not isinstance(obj, list) and hasattr(obj, "__await__")
