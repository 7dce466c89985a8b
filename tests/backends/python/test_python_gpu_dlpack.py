"""A GPU tensor through a Python model by DLPack, on a real `naiad serve`: the model moves
its input to the GPU with torch, computes there, hands the CUDA tensor to
`pb_utils.Tensor.from_dlpack` (no host copy inside the model), reads it back with
`to_dlpack`, and the server copies it to the host only to answer. Needs torch with CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from support.models import write_model
from support.naiad_process import NaiadProcess

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(120)]

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs torch with a CUDA device", allow_module_level=True)

GPU_MODEL = '''
import numpy as np
import torch
from torch.utils.dlpack import to_dlpack
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0")
            on_gpu = torch.from_dlpack(x.to_dlpack()).to("cuda")
            y = pb_utils.Tensor.from_dlpack("OUTPUT0", to_dlpack(on_gpu * 2 + 1))
            back = torch.from_dlpack(y.to_dlpack())  # still the device tensor, not a copy
            facts = np.array([int(y.is_cpu()), int(back.device.type == "cuda"),
                              int(back.data_ptr() != 0)], dtype=np.int32)
            out.append(pb_utils.InferenceResponse([y, pb_utils.Tensor("FACTS", facts)]))
        return out
'''

CONFIG = '''
name: "gpu_dlpack"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] },
         { name: "FACTS" data_type: TYPE_INT32 dims: [ 3 ] } ]
instance_group [ { kind: KIND_GPU count: 1 } ]
'''


def test_cuda_tensor_out_of_a_python_model(tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    write_model(tmp_path / "models", "gpu_dlpack", CONFIG, GPU_MODEL)
    server = NaiadProcess(tmp_path, [f"--model-repository={tmp_path / 'models'}"])
    server.start()
    try:
        x = np.linspace(-1, 1, 4096, dtype=np.float32)
        for mod, address in ((httpclient, server.http_address), (grpcclient, server.grpc_address)):
            client = mod.InferenceServerClient(address)
            inp = mod.InferInput("INPUT0", [x.size], "FP32")
            inp.set_data_from_numpy(x)
            result = client.infer("gpu_dlpack", [inp])
            np.testing.assert_allclose(result.as_numpy("OUTPUT0"), x * 2 + 1, rtol=1e-6)
            assert result.as_numpy("FACTS").tolist() == [0, 1, 1]  # not CPU; a CUDA tensor
            client.close()
    finally:
        server.stop()
        server.kill_if_running()
