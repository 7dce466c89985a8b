"""model_file: the version folder's file named by the config, else the backend's default;
a folder of that name holding the file where the backend says so (ONNX external data);
Triton's INVALID_ARG words when it is absent."""

from __future__ import annotations

import pytest

from naiad.backends.common.model_file import model_file
from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.model_config import parse_text


def _config(extra: str = ""):
    return parse_text(f'name: "m"\nbackend: "onnxruntime"\n{extra}')


def test_default_and_configured_names(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.onnx").write_bytes(b"x")
    (tmp_path / "1" / "other.onnx").write_bytes(b"y")
    assert model_file(tmp_path, 1, _config(), "model.onnx") == tmp_path / "1" / "model.onnx"
    assert model_file(str(tmp_path), 1, _config('default_model_filename: "other.onnx"'), "model.onnx") \
        == tmp_path / "1" / "other.onnx"


def test_a_folder_holds_the_file_only_where_the_backend_says_so(tmp_path):
    (tmp_path / "2" / "model.onnx").mkdir(parents=True)
    (tmp_path / "2" / "model.onnx" / "model.onnx").write_bytes(b"x")
    assert model_file(tmp_path, 2, _config(), "model.onnx", folder_holds="model.onnx") \
        == tmp_path / "2" / "model.onnx" / "model.onnx"
    with pytest.raises(InferenceError) as err:
        model_file(tmp_path, 2, _config(), "model.onnx")
    assert err.value.code == ErrorCode.INVALID_ARG


def test_missing_file_in_tritons_words(tmp_path):
    with pytest.raises(InferenceError) as err:
        model_file(tmp_path, 3, _config(), "model.pt")
    assert err.value.code == ErrorCode.INVALID_ARG
    assert err.value.message == f"unable to find '{tmp_path / '3' / 'model.pt'}' for model 'm'"
