"""How the stub reports a model's errors: Triton's stub wording and trace layout."""

from __future__ import annotations

import os

from .. import pb_utils


class StubError(Exception):
    """An error the stub itself reports (Triton's C++ stub throws these): its text as is."""



def _sources(package_file: str) -> list[str]:
    folder = os.path.dirname(package_file)
    return [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".py")]


# The stub's own frames (and pb_utils') are not shown in an error's trace: in Triton the
# caller is C++.
_OWN_FILES = frozenset(_sources(__file__) + _sources(pb_utils.__file__))


def error_text(exc: BaseException) -> str:
    """An exception as Triton's stub reports it (pybind11's error text): 'Type: message',
    then the model's frames, innermost first."""
    if isinstance(exc, StubError):
        return str(exc)
    head = f"{type(exc).__name__}: {exc}"
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename not in _OWN_FILES]
    if not frames:
        return head
    lines = [f"  {f.filename}({f.lineno}): {f.name}" for f in reversed(frames)]
    return head + "\n\nAt:\n" + "\n".join(lines) + "\n"


def failed_text(instance_name: str, message: str) -> str:
    """How Triton's stub logs a decoupled batch that failed."""
    return f"Failed to process the request(s) for model '{instance_name}', message: {message}"
