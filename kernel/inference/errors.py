"""Triton's error codes and the one exception type that carries them across naiad."""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Triton's TRITONSERVER_Error codes; protocols map them to HTTP / gRPC status."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7


class InferenceError(Exception):
    """An error with a Triton code and a message meant for the client, as Triton words it."""

    __slots__ = ("code", "message")

    def __init__(self, message: str, code: ErrorCode = ErrorCode.INTERNAL) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"InferenceError({self.code.name}: {self.message!r})"

    # Short constructors keep call sites readable.
    @classmethod
    def invalid(cls, message: str) -> "InferenceError":
        return cls(message, ErrorCode.INVALID_ARG)

    @classmethod
    def not_found(cls, message: str) -> "InferenceError":
        return cls(message, ErrorCode.NOT_FOUND)

    @classmethod
    def unavailable(cls, message: str) -> "InferenceError":
        return cls(message, ErrorCode.UNAVAILABLE)

    @classmethod
    def unsupported(cls, message: str) -> "InferenceError":
        return cls(message, ErrorCode.UNSUPPORTED)

    @classmethod
    def internal(cls, message: str) -> "InferenceError":
        return cls(message, ErrorCode.INTERNAL)

    @classmethod
    def cancelled(cls, message: str = "request cancelled") -> "InferenceError":
        return cls(message, ErrorCode.CANCELLED)


def log_request(request_id: str) -> str:
    """The prefix Triton's core puts on the request errors it raises (`LogRequest()`)."""
    return f"[request id: {request_id or '<id_unknown>'}] "
