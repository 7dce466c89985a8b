"""Errors of the HTTP protocol: Triton's code -> HTTP status mapping, and the error type the
codecs raise when a reply needs headers of its own (an unsupported Content-Encoding)."""

from __future__ import annotations

from naiad.kernel.inference.errors import ErrorCode, InferenceError

# server:src/http_server.cc HttpCodeFromError (SPEC §1.2).
_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INTERNAL: 500,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.UNSUPPORTED: 501,
}


def status_for(code: ErrorCode) -> int:
    """HTTP status for a Triton error code (UNKNOWN, INVALID_ARG, ALREADY_EXISTS,
    CANCELLED and anything else: 400)."""
    return _STATUS.get(code, 400)


class HttpError(InferenceError):
    """An InferenceError whose HTTP reply carries extra headers."""

    __slots__ = ("headers",)

    def __init__(self, message: str, code: ErrorCode, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, code)
        self.headers = headers


# What a bus request type without a handler means to an HTTP client (the service that
# answers it is not running). Triton's words where its build can leave a feature out.
_MISSING_FEATURE: dict[str, str] = {
    "TraceSettingRequest": "the server does not support tracing",
    "LogSettingRequest": "the server does not support dynamic logging",
    "ModelStatisticsQuery": "the server does not support model statistics",
}


def no_handler_message(message_type: str) -> str:
    words = _MISSING_FEATURE.get(message_type)
    if words is not None:
        return words
    return f"the service that answers {message_type} is not running"
