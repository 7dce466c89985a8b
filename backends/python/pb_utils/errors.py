"""TritonError, TritonModelException, and the argument check pybind11 would make."""

from __future__ import annotations

from typing import Any

# Triton's codes are the server's own (TritonError.INTERNAL == ErrorCode.INTERNAL, ...).
from naiad.kernel.inference.errors import ErrorCode as _ErrorCode


def _typed(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    """An argument Triton's C++ binding (pybind11) would refuse — None, or another type —
    is a TypeError, as there; checks on the value itself are TritonModelExceptions."""
    if value is None or not isinstance(value, kind):
        raise TypeError(f"{where}: incompatible argument type {type(value).__name__}")
    return value


class TritonError:
    """An error a model reports in a response (`InferenceResponse(error=...)`)."""

    UNKNOWN = _ErrorCode.UNKNOWN
    INTERNAL = _ErrorCode.INTERNAL
    NOT_FOUND = _ErrorCode.NOT_FOUND
    INVALID_ARG = _ErrorCode.INVALID_ARG
    UNAVAILABLE = _ErrorCode.UNAVAILABLE
    UNSUPPORTED = _ErrorCode.UNSUPPORTED
    ALREADY_EXISTS = _ErrorCode.ALREADY_EXISTS
    CANCELLED = _ErrorCode.CANCELLED

    __slots__ = ("_message", "_code")

    def __init__(self, message: str, code: int = _ErrorCode.INTERNAL) -> None:
        if message is None:
            raise TypeError("TritonError(): 'message' must not be None")
        self._message = str(message)
        self._code = _ErrorCode(int(code))

    def code(self) -> _ErrorCode:
        return self._code

    def message(self) -> str:
        return self._message

    def __str__(self) -> str:
        return self._message

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, {self._code.name})"


class TritonModelException(Exception):
    """Raised by pb_utils calls that fail (BLS, tensors, senders)."""

    def __init__(self, msg: str = "") -> None:
        super().__init__(msg)
        self._msg = msg

    def message(self) -> str:
        return self._msg
