"""Logging in Triton's shape: its levels (info, warning, error, verbose N), its two line
formats (default `I1125 11:41:00.123456 <pid> <where>] msg` and ISO8601), and a log
file fixed at start."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from .config import LogConfig
from .inference.errors import ErrorCode, InferenceError


@dataclass
class LogSettings:
    """The live settings (the logging API reads and writes these, except `file`)."""

    info: bool = True
    warning: bool = True
    error: bool = True
    verbose: int = 0
    format: str = "default"
    file: str = ""


_LETTER = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E", logging.CRITICAL: "E"}


class TritonFormatter(logging.Formatter):
    def __init__(self, settings: LogSettings) -> None:
        super().__init__()
        self.settings = settings
        self.pid = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        letter = _LETTER.get(record.levelno, "I")
        secs = record.created
        # where the line comes from: the logger's name, or a model's file:line as Triton writes it
        source = getattr(record, "source", record.name)
        micros = int((secs - int(secs)) * 1_000_000)
        if self.settings.format == "ISO8601":
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs))
            head = f"{stamp} {letter} {self.pid} {source}]"
        else:
            stamp = time.strftime("%m%d %H:%M:%S", time.localtime(secs))
            head = f"{letter}{stamp}.{micros:06d} {self.pid} {source}]"
        msg = record.getMessage()
        if record.exc_info:
            msg = msg + "\n" + self.formatException(record.exc_info)
        return f"{head} {msg}"


class LevelFilter(logging.Filter):
    """Drops records whose level is switched off in the live settings."""

    def __init__(self, settings: LogSettings) -> None:
        super().__init__()
        self.settings = settings

    def filter(self, record: logging.LogRecord) -> bool:
        s = self.settings
        if record.levelno >= logging.ERROR:
            return s.error
        if record.levelno >= logging.WARNING:
            return s.warning
        if record.levelno >= logging.INFO:
            return s.info
        # DEBUG records are verbose messages; their `verbose` attribute (default 1) is
        # the level at which they start to show.
        return s.verbose >= getattr(record, "verbose", 1)


SETTINGS = LogSettings()


def configure(config: LogConfig) -> LogSettings:
    """Install naiad's handler on the `naiad` logger (idempotent)."""
    SETTINGS.info, SETTINGS.warning, SETTINGS.error = config.info, config.warning, config.error
    SETTINGS.verbose, SETTINGS.format, SETTINGS.file = config.verbose, config.format, config.file
    root = logging.getLogger("naiad")
    for h in list(root.handlers):
        if getattr(h, "_naiad", False):
            root.removeHandler(h)
            h.close()
    if config.file:
        handler: logging.Handler = logging.FileHandler(config.file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler._naiad = True  # type: ignore[attr-defined]
    handler.setFormatter(TritonFormatter(SETTINGS))
    handler.addFilter(LevelFilter(SETTINGS))
    root.addHandler(handler)
    root.propagate = False
    apply_levels()
    return SETTINGS


def apply_levels() -> None:
    """Keep the logger's own level as high as the settings allow, so that debug calls on
    hot paths cost one comparison when verbose logging is off."""
    logging.getLogger("naiad").setLevel(logging.DEBUG if SETTINGS.verbose > 0 else logging.INFO)


def settings_reply() -> dict:
    s = SETTINGS
    return {
        "log_file": s.file,
        "log_info": s.info,
        "log_warning": s.warning,
        "log_error": s.error,
        "log_verbose_level": s.verbose,
        "log_format": s.format,
    }


# Triton's order of the settings a logging request may change: it applies each in turn,
# so a refused one leaves the ones before it applied (`http_server.cc` HandleLogging,
# `grpc/grpc_server.cc` LogSettings).
_ORDER = ("log_file", "log_info", "log_warning", "log_error", "log_verbose_level", "log_format")
_FORMATS = ("default", "ISO8601")


def _refusal(key: str, value: Any, protocol: str) -> InferenceError | None:
    """Triton's error for one setting's value as the protocol's front end gave it, or None.

    HTTP: JSON values (null = leave as is), type errors are TritonJson's (INTERNAL).
    gRPC: the oneof's value (None = no oneof set), type errors are INVALID_ARG."""
    if key == "log_file":
        if value is None and protocol == "http":
            return None
        return InferenceError("log file location can not be updated through network protocol",
                              ErrorCode.UNSUPPORTED)
    if key == "log_verbose_level":
        ok = type(value) is int and value >= 0
        if protocol == "http":
            return None if ok and value < 2**64 else InferenceError.internal(
                "attempt to access JSON non-unsigned-integer as unsigned-integer")
        return None if ok else InferenceError.invalid("expect int32 for 'log_verbose_level'")
    if key == "log_format":
        if type(value) is not str:
            return (InferenceError.internal("attempt to access JSON non-string as string") if protocol == "http"
                    else InferenceError.invalid("expect string for 'log_format'"))
        if value in _FORMATS:
            return None
        if protocol == "http":
            return InferenceError.unavailable(f"invalid argument for --log_format, got: {value}")
        return InferenceError.invalid(f"invalid argument for log_format, got: {value}")
    if type(value) is bool:
        return None
    return (InferenceError.internal("attempt to access JSON non-boolean as boolean") if protocol == "http"
            else InferenceError.invalid(f"expect boolean for '{key}'"))


def update_settings(updates: dict, protocol: str = "http") -> dict:
    """Apply a logging-API update as Triton's `protocol` front end ("http" or "grpc") does;
    returns every setting afterwards. Keys Triton does not know are ignored; HTTP's nulls
    leave a setting as it is.

    Raises InferenceError with Triton's codes and words for the first refused value, after
    applying the settings that come before it in Triton's order."""
    s = SETTINGS
    try:
        for key in _ORDER:
            if key not in updates or (protocol == "http" and updates[key] is None):
                continue
            value = updates[key]
            error = _refusal(key, value, protocol)
            if error is not None:
                raise error
            if key == "log_info":
                s.info = value
            elif key == "log_warning":
                s.warning = value
            elif key == "log_error":
                s.error = value
            elif key == "log_verbose_level":
                s.verbose = (value + 2**31) % 2**32 - 2**31  # Triton keeps it as an int32
            elif key == "log_format":
                s.format = value
    finally:
        apply_levels()
    return settings_reply()
