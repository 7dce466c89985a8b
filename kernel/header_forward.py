"""Triton's header-forward patterns (`--http-header-forward-pattern`,
`--grpc-header-forward-pattern`): RE2 expressions matched anywhere in a header name.

Triton puts `(?i)` in front of the pattern (server `command_line_parser.cc`), so matching is
case-insensitive unless the pattern turns that off itself, e.g. `(?-i)MY_HEADER.*`. Python's
`re` refuses a flag change in the middle of a pattern, so this uses RE2 itself (google-re2).
"""

from __future__ import annotations

from typing import Callable

import re2

from .schema import ConfigError

_CASE_INSENSITIVE = "(?i)"


def _options() -> "re2.Options":
    options = re2.Options()
    options.log_errors = False  # the ConfigError below says it once, without absl's log noise
    return options


def compile_pattern(pattern: str) -> Callable[[str], bool] | None:
    """A test for header names (True = forward it), or None when `pattern` is empty.
    Raises ConfigError for a pattern RE2 cannot parse."""
    if not pattern:
        return None
    try:
        regex = re2.compile(_CASE_INSENSITIVE + pattern, _options())
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        reason = reason.replace(_CASE_INSENSITIVE + pattern, pattern)  # name the pattern as the user wrote it
        raise ConfigError(f"header_forward_pattern: not a valid RE2 expression: {reason}") from None
    search = regex.search

    def matches(name: str) -> bool:
        return search(name) is not None

    return matches
