"""Trace settings in Triton's shape: a global setting over the command-line default, and
per-model settings that override some keys and follow the global setting for the rest
(`server:src/tracer.cc` TraceManager::UpdateTraceSetting).

A `TraceSetting` is replaced, never edited, when it is updated; its counters (requests
seen, traces left to take) live on it, so an update starts a fresh count as Triton's does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from naiad.kernel.inference.errors import ErrorCode, InferenceError

from .options import OFF, TENSORS, TIMESTAMPS, TraceOptions, level_names

_KEYS = ("level", "rate", "count", "log_frequency", "file")


class TraceSetting:
    """One scope's setting (global or one model). Counters are touched on the event loop
    (`sample`); the writer's buffer fields only by the writer thread."""

    __slots__ = ("level", "rate", "count", "log_frequency", "file", "mode", "specified",
                 "invalid_reason", "seen", "created", "retired",
                 "buffer", "in_buffer", "collected")

    def __init__(self, level: int, rate: int, count: int, log_frequency: int, file: str, mode: str,
                 specified: frozenset[str] = frozenset()) -> None:
        self.level = level
        self.rate = rate
        self.count = count
        self.log_frequency = log_frequency
        self.file = file
        self.mode = mode
        self.specified = specified
        if level == OFF:
            self.invalid_reason = "tracing is disabled"
        elif rate == 0 and mode == "triton":
            self.invalid_reason = "sample rate must be non-zero"
        elif mode == "triton" and not file:
            self.invalid_reason = "trace file name is not given"
        else:
            self.invalid_reason = ""
        self.seen = 0  # requests offered to this setting
        self.created = 0  # traces taken
        self.retired = False
        # Writer-thread state (Triton's trace_stream_ / sample_in_stream_ / collected_).
        self.buffer: list[str] = []
        self.in_buffer = 0
        self.collected = 0

    @property
    def active(self) -> bool:
        return not self.invalid_reason and self.count != 0

    @property
    def timestamps(self) -> bool:
        return bool(self.level & TIMESTAMPS)

    @property
    def tensors(self) -> bool:
        return bool(self.level & TENSORS)

    def value(self, key: str) -> Any:
        return getattr(self, key)

    def __repr__(self) -> str:
        return (f"TraceSetting(level={level_names(self.level)}, rate={self.rate}, count={self.count}, "
                f"log_frequency={self.log_frequency}, file={self.file!r})")


@dataclass
class NewSetting:
    """An update: a value to set, or a key to clear (fall back), per setting."""

    values: dict[str, Any]
    cleared: frozenset[str]


_INT32 = (-2**31, 2**31 - 1)
_SPACES = " \t\n\v\f\r"


def _stoi(text: str) -> int | None:
    """C++ `std::stoi` as Triton calls it: leading blanks, a sign, then digits up to the first
    other character. None when there is no number (invalid_argument); an int outside
    int32 when it overflows (out_of_range)."""
    rest = text.lstrip(_SPACES)
    sign = ""
    if rest[:1] in ("+", "-"):
        sign, rest = rest[0], rest[1:]
    digits = len(rest) - len(rest.lstrip("0123456789"))
    return int(sign + rest[:digits]) if digits else None


def _one_value(key: str, value: Any, protocol: str) -> str:
    """One setting's single string, or Triton's error for what the front end carried."""
    if type(value) is str:
        return value
    if protocol == "grpc":
        raise InferenceError.invalid(f"expect only 1 value for '{key}'")
    raise InferenceError.internal("attempt to access JSON non-string as string")


def _parse_number(key: str, value: Any, protocol: str, low: int, high: int) -> int:
    text = _one_value(key, value, protocol)
    n = _stoi(text)
    if n is None:
        raise InferenceError.invalid(f"Unable to parse '{key}', got: {text}")
    if not _INT32[0] <= n <= _INT32[1]:
        raise InferenceError.invalid(
            f"Unable to parse '{key}', value is out of range [ {low}, {high} ], got: {text}")
    if key == "trace_count":
        if n < -1:  # HTTP and gRPC word this one apart
            sep = " " if protocol == "grpc" else ""
            raise InferenceError.invalid(f"Unable to parse 'trace_count'. Expecting value >= -1, got:{sep}{text}")
        return n
    return n % 2**32  # stored as uint32, as Triton does: "-1" is 4294967295


def _parse_level(value: Any, protocol: str) -> int | None:
    """`trace_level`'s words -> level bits, None when no known word was given (Triton
    skips words other than OFF, TIMESTAMPS and TENSORS, case-sensitively)."""
    if type(value) is not list:
        raise InferenceError.internal("attempt to access JSON non-array as array")
    level: int | None = None
    for word in value:
        if type(word) is not str:
            raise InferenceError.internal("attempt to access JSON non-string as string")
        if word == "OFF":
            if len(value) != 1:
                raise InferenceError.invalid("Expect only one trace level 'OFF' is specified")
            level = OFF
        elif word == "TIMESTAMPS":
            level = (level or OFF) | TIMESTAMPS
        elif word == "TENSORS":
            level = (level or OFF) | TENSORS
    return level


_NUMBERS = {  # setting -> (NewSetting key, range in Triton's out-of-range words)
    "trace_rate": ("rate", 0, 2**32 - 1),
    "trace_count": ("count", -1, 2**31 - 1),
    "log_frequency": ("log_frequency", 0, 2**32 - 1),
}


def parse_updates(updates: dict[str, Any], protocol: str = "http") -> NewSetting:
    """The settings API's keys, as `TraceSettingRequest.updates` carries them, -> a
    NewSetting, with the errors of Triton's `protocol` front end ("http" or "grpc"), checked
    in Triton's order of keys. Other keys are ignored, as Triton's front ends do."""
    if "trace_file" in updates:
        raise InferenceError("trace file location can not be updated through network protocol",
                             ErrorCode.UNSUPPORTED)
    values: dict[str, Any] = {}
    cleared: set[str] = set()
    if "trace_level" in updates:
        value = updates["trace_level"]
        if value is None:
            cleared.add("level")
        else:
            level = _parse_level(value, protocol)
            if level is not None:
                values["level"] = level
    for key, (name, low, high) in _NUMBERS.items():
        if key not in updates:
            continue
        if updates[key] is None:
            cleared.add(name)
        else:
            values[name] = _parse_number(key, updates[key], protocol, low, high)
    return NewSetting(values, frozenset(cleared))


class SettingsTable:
    """The command-line default, the live global setting, and the model overrides."""

    def __init__(self, options: TraceOptions) -> None:
        self.mode = options.mode
        self.mode_settings = dict(options.mode_settings)
        self.default = self._make(options.level, options.rate, options.count, options.log_frequency,
                                  options.file)
        self.global_ = self._make(options.level, options.rate, options.count, options.log_frequency,
                                  options.file)
        self.models: dict[str, TraceSetting] = {}
        self._following: set[str] = set()  # models whose setting mirrors some global keys

    def _make(self, level: int, rate: int, count: int, log_frequency: int, file: str,
              specified: frozenset[str] = frozenset()) -> TraceSetting:
        return TraceSetting(level, rate, count, log_frequency, file, self.mode, specified)

    def get(self, model: str = "") -> TraceSetting:
        if model:
            return self.models.get(model, self.global_)
        return self.global_

    def any_active(self) -> bool:
        return self.global_.active or any(s.active for s in self.models.values())

    def all_settings(self) -> Iterator[TraceSetting]:
        yield self.global_
        yield from self.models.values()

    def update(self, model: str, new: NewSetting) -> list[TraceSetting]:
        """Apply an update; returns the settings it replaced (their traces are flushed)."""
        replaced: list[TraceSetting] = []
        self._update(model, new, replaced)
        if not model:
            for name in list(self._following):
                self._update(name, NewSetting({}, frozenset()), replaced)
        return replaced

    def _update(self, model: str, new: NewSetting, replaced: list[TraceSetting]) -> None:
        if model:
            current = self.models.get(model)
            fallback = self.global_
        else:
            current = self.global_
            fallback = self.default
        values = {k: fallback.value(k) for k in _KEYS}
        specified = set()
        for key in _KEYS:
            if key in new.cleared:
                continue
            if key in new.values:
                values[key] = new.values[key]
                specified.add(key)
            elif current is not None and key in current.specified:
                values[key] = current.value(key)
                specified.add(key)
        if model and not specified:  # nothing of its own left: the model follows the global setting
            old = self.models.pop(model, None)
            self._following.discard(model)
            if old is not None:
                replaced.append(old)
            return
        setting = self._make(values["level"], values["rate"], values["count"], values["log_frequency"],
                             values["file"], frozenset(specified))
        if setting.level != OFF and (setting.invalid_reason or setting.count == 0):  # Valid()
            raise InferenceError.invalid(f"Attempting to set invalid trace setting :{setting.invalid_reason}")
        if model:
            if len(specified) == len(_KEYS):
                self._following.discard(model)
            else:
                self._following.add(model)
            old = self.models.get(model)
            self.models[model] = setting
        else:
            old = self.global_
            self.global_ = setting
        if old is not None:
            replaced.append(old)

    def reply(self, model: str = "") -> dict[str, Any]:
        """Every setting of a scope, as the settings API shows it (strings)."""
        s = self.get(model)
        out: dict[str, Any] = {
            "trace_level": level_names(s.level),
            "trace_rate": str(s.rate),
            "trace_count": str(s.count),
        }
        if self.mode == "triton":
            out["log_frequency"] = str(s.log_frequency)
            out["trace_file"] = s.file
        out["trace_mode"] = self.mode
        out.update(self.mode_settings)
        return out
