"""import_framework: a library that is there and has what the backend runs is returned; a
missing one, or one without that, is UNAVAILABLE in the backend's words."""

from __future__ import annotations

import json

import pytest

from naiad.backends.common.framework import import_framework
from naiad.kernel.inference.errors import ErrorCode, InferenceError


def test_found_with_its_attribute():
    assert import_framework("json", "needs json", "loads", "loads") is json


def test_missing_module():
    with pytest.raises(InferenceError) as err:
        import_framework("naiad_no_such_framework", "the x backend needs the 'x' package (pip install x)", "a", "a")
    assert err.value.code == ErrorCode.UNAVAILABLE
    assert err.value.message.startswith("the x backend needs the 'x' package (pip install x): No module named")


def test_module_without_what_the_backend_runs():
    with pytest.raises(InferenceError) as err:
        import_framework("json", "needs json", "NoSuchRuntime", "Runtime")
    assert err.value.code == ErrorCode.UNAVAILABLE
    assert err.value.message == "the installed 'json' package has no Runtime"
