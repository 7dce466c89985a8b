"""Settings from a model config's `parameters` map and from `--backend-config` values.

Triton's framework backends read numbers and flags as strings (`string_value`); a value
that does not parse is a load error naming the key and the model, as Triton's
`TryParseModelStringParameter` does. Backend-config keys are matched with '-' and '_'
treated alike (`default-max-batch-size` = `default_max_batch_size`).
"""

from __future__ import annotations

from typing import Any, Mapping

from naiad.kernel.inference.errors import InferenceError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def model_parameters(config: Any) -> dict[str, str]:
    """`parameters { key: ... value: { string_value: ... } }` as a plain dict."""
    return {k: v.string_value for k, v in config.parameters.items()}


def parse_int(value: str, key: str, where: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise InferenceError.invalid(f"{where}: parameter '{key}' must be an integer, got '{value}'") from None


def parse_bool(value: str, key: str, where: str) -> bool:
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InferenceError.invalid(f"{where}: parameter '{key}' must be true or false, got '{value}'")


class Params:
    """Typed reads of one string map (model parameters or backend settings)."""

    def __init__(self, values: Mapping[str, str], where: str, fold_dashes: bool = False) -> None:
        self.fold = fold_dashes
        self.values = {self._key(k): v for k, v in values.items()}
        self.where = where

    def _key(self, key: str) -> str:
        return key.replace("-", "_").lower() if self.fold else key

    def has(self, key: str) -> bool:
        return self._key(key) in self.values

    def text(self, key: str, default: str = "") -> str:
        value = self.values.get(self._key(key))
        return default if value is None else value

    def integer(self, key: str, default: int) -> int:
        value = self.values.get(self._key(key))
        if value is None or str(value).strip() == "":
            return default
        return parse_int(value, key, self.where)

    def flag(self, key: str, default: bool) -> bool:
        value = self.values.get(self._key(key))
        if value is None or str(value).strip() == "":
            return default
        return parse_bool(value, key, self.where)


def backend_params(settings: Mapping[str, str], backend: str) -> Params:
    return Params(settings or {}, f"{backend} backend config", fold_dashes=True)


def model_params(config: Any, backend: str) -> Params:
    return Params(model_parameters(config), f"model '{config.name}' ({backend})")


def auto_complete_enabled(settings: Params) -> bool:
    """The model manager sets `auto_complete=false` when the server runs with
    `--disable-auto-complete-config`; a backend config may set it too."""
    return settings.flag("auto_complete", True)


def default_max_batch_size(settings: Params) -> int:
    """Triton's `default-max-batch-size` backend config (default 4), used when
    auto-complete finds that a model can batch but the config sets no max_batch_size."""
    return max(settings.integer("default_max_batch_size", 4), 0)
