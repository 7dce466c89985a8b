"""A load with files names the folder the files are written to: a model name that is not one
folder name is refused before anything is written (it could otherwise reach outside the
temporary folder)."""

from __future__ import annotations

import json

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from support.models import empty_repository

CONFIG = json.dumps({"backend": "python", "max_batch_size": 0,
                     "input": [{"name": "IN", "data_type": "TYPE_FP32", "dims": [1]}],
                     "output": [{"name": "OUT", "data_type": "TYPE_FP32", "dims": [1]}]})


@pytest.mark.parametrize("name", ["x/../../../escaped_model", "../escaped_model", ".hidden", "a/b"])
def test_load_with_files_refuses_a_name_that_is_not_one_folder(naiad, tmp_path, name):
    proc = naiad(f"--model-repository={empty_repository(tmp_path)}", "--model-control-mode=explicit")
    client = grpcclient.InferenceServerClient(proc.grpc_address)
    with pytest.raises(InferenceServerException) as info:
        client.load_model(name, config=CONFIG, files={"file:1/model.py": b"raise SystemExit\n"})
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert info.value.message() == f"failed to load '{name}': a model name must be one folder name"
    assert not list(tmp_path.glob("**/escaped_model")) and not list(tmp_path.parent.glob("escaped_model"))
    assert client.is_server_live()
    client.close()
