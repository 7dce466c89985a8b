"""Logging in Triton's shape: its levels (info, warning, error, verbose N), its two line
formats (default `I1125 11:41:00.123456 <pid> <where>] msg` and ISO8601), and a log
file fixed at start."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass

from .config import LogConfig


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


def update_settings(updates: dict) -> dict:
    """Apply a logging-API update as Triton does; returns every setting afterwards.

    Raises InferenceError with Triton's codes and words for refused values."""
    from .inference.errors import ErrorCode, InferenceError

    checked: dict = {}
    for key, value in updates.items():
        if key == "log_file":
            if value is not None:
                raise InferenceError("log file location can not be updated through network protocol",
                                     ErrorCode.UNSUPPORTED)
        elif key in ("log_info", "log_warning", "log_error"):
            if not isinstance(value, bool):
                raise InferenceError.invalid(f"expect boolean for '{key}'")
            checked[key] = value
        elif key == "log_verbose_level":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InferenceError.invalid("expect unsigned integer for 'log_verbose_level'")
            checked[key] = value
        elif key == "log_format":
            if value not in ("default", "ISO8601"):
                raise InferenceError.unavailable(
                    f"invalid argument for log_format, got: {value}. Expected one of: default, ISO8601")
            checked[key] = value
        else:
            raise InferenceError.invalid(f"unknown log setting '{key}'")
    s = SETTINGS
    s.info = checked.get("log_info", s.info)
    s.warning = checked.get("log_warning", s.warning)
    s.error = checked.get("log_error", s.error)
    s.verbose = checked.get("log_verbose_level", s.verbose)
    s.format = checked.get("log_format", s.format)
    apply_levels()
    return settings_reply()
