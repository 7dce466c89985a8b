"""Typed config sections: a TOML table validated into a dataclass, with errors that name
the file, the key and what was expected.

Each section is a plain dataclass whose field types say what is allowed: bool, int,
float, str, list[str], list[int], dict[str, str], `Literal[...]` choices, or a nested
dataclass. Field metadata may carry `doc` (for the README reference), `triton` (the
tritonserver flag it mirrors), `minimum` and `maximum`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints


class ConfigError(Exception):
    """A config value that cannot be used; the message is shown to the user as is."""


def setting(default: Any, doc: str = "", triton: str = "", minimum: float | None = None,
            maximum: float | None = None) -> Any:
    """A documented config field."""
    meta = {"doc": doc, "triton": triton, "minimum": minimum, "maximum": maximum}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (list, typing.List):
        (inner,) = get_args(tp) or (Any,)
        plural = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
        return f"a list of {plural.get(inner, _describe(inner))}"
    if origin in (dict, typing.Dict):
        return "a table"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp) if a is not type(None))
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if dataclasses.is_dataclass(tp):
        return "a table"
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        if isinstance(value, str):  # choices are matched case-insensitively, as Triton's flags
            for c in choices:
                if isinstance(c, str) and c.lower() == value.lower():
                    return c
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
    if origin in (list, typing.List):
        (inner,) = get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, typing.Dict):
        key_t, val_t = get_args(tp) or (str, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {str(k): _coerce(v, val_t, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected a boolean (true or false), got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported setting type {tp!r}")  # a bug in a schema


def build(cls: type, table: dict[str, Any], where: str) -> Any:
    """Validate `table` into an instance of dataclass `cls`. Unknown keys are refused."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    known = {name.replace("_", "-"): name for name in fields} | {name: name for name in fields}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        name = known.get(key)
        if name is None:
            expected = ", ".join(sorted(fields)) or "no keys"
            raise ConfigError(f"{where}: unknown key '{key}' (expected one of: {expected})")
        field_where = f"{where}.{key}" if where else key
        coerced = _coerce(value, hints[name], field_where)
        minimum = fields[name].metadata.get("minimum")
        if minimum is not None and isinstance(coerced, (int, float)) and coerced < minimum:
            raise ConfigError(f"{field_where}: expected a value >= {minimum}, got {coerced!r}")
        maximum = fields[name].metadata.get("maximum")
        if maximum is not None and isinstance(coerced, (int, float)) and coerced > maximum:
            raise ConfigError(f"{field_where}: expected a value <= {maximum}, got {coerced!r}")
        kwargs[name] = coerced
    try:
        obj = cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return obj


def to_table(obj: Any) -> dict[str, Any]:
    """A dataclass instance back to a plain table (for `config show` and tests)."""
    return dataclasses.asdict(obj)


def reference(cls: type, prefix: str) -> list[tuple[str, str, str, str]]:
    """(key, default, triton flag, doc) rows for the README's TOML reference."""
    rows = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(reference(hints[f.name], f"{prefix}.{f.name}"))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = ""
        rows.append((f"{prefix}.{f.name}" if prefix else f.name, repr(default),
                     f.metadata.get("triton", ""), f.metadata.get("doc", "")))
    return rows
