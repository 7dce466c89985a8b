"""Logger: a model's log lines, sent to the server's log."""

from __future__ import annotations

import enum
import sys

from . import runtime as _rt
from .errors import _typed


class Logger:
    """Log lines go to the server's log (logger `naiad.backends.python`)."""

    class LogLevel(enum.IntEnum):
        INFO = 0
        WARNING = 1
        ERROR = 2
        VERBOSE = 3

    INFO = LogLevel.INFO
    WARNING = LogLevel.WARNING
    ERROR = LogLevel.ERROR
    VERBOSE = LogLevel.VERBOSE

    @staticmethod
    def log(message: str, level: LogLevel = LogLevel.INFO) -> None:
        _log(message, _typed(level, Logger.LogLevel, "Logger.log(): level"), 2)

    @staticmethod
    def log_info(message: str) -> None:
        _log(message, Logger.LogLevel.INFO, 2)

    @staticmethod
    def log_warn(message: str) -> None:
        _log(message, Logger.LogLevel.WARNING, 2)

    @staticmethod
    def log_error(message: str) -> None:
        _log(message, Logger.LogLevel.ERROR, 2)

    @staticmethod
    def log_verbose(message: str) -> None:
        _log(message, Logger.LogLevel.VERBOSE, 2)


def _log(message: str, level: int, depth: int) -> None:
    _typed(message, str, "Logger: message")
    try:
        frame = sys._getframe(depth)
        filename, lineno = frame.f_code.co_filename, frame.f_lineno
    except ValueError:
        filename, lineno = "", 0
    if _rt.current is None:
        print(f"{'IWEV'[int(level)]} {filename}:{lineno}] {message}", file=sys.stderr)
        return
    _rt.current.log(int(level), str(message), filename, lineno)
