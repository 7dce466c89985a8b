"""CUDA shared memory end to end, as a Triton user does it: device buffers made and filled
with tritonclient's own `cuda_shared_memory` utilities, registered over HTTP and gRPC, used
for inputs and outputs of an inference on a real `naiad serve`, read back on the device,
then unregistered. Needs an NVIDIA GPU and cuda-python (tritonclient 2.45 imports
`cuda.cudart`); skipped elsewhere, saying why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from naiad.ext import cuda_path
from support.models import ADD_SUB_MODEL, add_sub_config, write_model
from support.naiad_process import NaiadProcess

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(120)]

try:
    import tritonclient.utils.cuda_shared_memory as cudashm
except Exception as exc:  # ImportError, or cuda-python without the legacy `cuda.cudart`
    cudashm = None
    _why_no_client = f"tritonclient's cuda_shared_memory does not import: {exc}"

if not cuda_path.has_gpu():
    pytest.skip(f"needs an NVIDIA GPU ({cuda_path.why_not()})", allow_module_level=True)
if cudashm is None:
    pytest.skip(_why_no_client, allow_module_level=True)

N = 16
NBYTES = N * 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cudashm")
    write_model(root / "models", "add_sub", add_sub_config(dims=f"[ {N} ]"), ADD_SUB_MODEL)
    proc = NaiadProcess(root, [f"--model-repository={root / 'models'}"])
    proc.start()
    yield proc
    proc.stop()
    proc.kill_if_running()


def _client(protocol: str, server: NaiadProcess):
    if protocol == "http":
        import tritonclient.http as client_module

        return client_module, client_module.InferenceServerClient(server.http_address)
    import tritonclient.grpc as client_module

    return client_module, client_module.InferenceServerClient(server.grpc_address)


def _names(status, protocol: str) -> set[str]:
    if protocol == "http":
        return {r["name"] for r in status}
    return set(status.regions)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_inputs_and_outputs_in_cuda_shared_memory(server: NaiadProcess, protocol: str) -> None:
    mod, client = _client(protocol, server)
    a = np.arange(N, dtype=np.float32)
    b = np.full(N, 3, dtype=np.float32)
    regions = {name: cudashm.create_shared_memory_region(f"{protocol}_{name}", size, 0)
               for name, size in (("in", 2 * NBYTES), ("out0", NBYTES), ("out1", NBYTES))}
    try:
        cudashm.set_shared_memory_region(regions["in"], [a, b])  # both inputs in one region
        for name, handle in regions.items():
            size = 2 * NBYTES if name == "in" else NBYTES
            client.register_cuda_shared_memory(f"{protocol}_{name}", cudashm.get_raw_handle(handle), 0, size)
        assert {f"{protocol}_in", f"{protocol}_out0", f"{protocol}_out1"} <= _names(
            client.get_cuda_shared_memory_status(), protocol)

        inputs = [mod.InferInput("INPUT0", [N], "FP32"), mod.InferInput("INPUT1", [N], "FP32")]
        inputs[0].set_shared_memory(f"{protocol}_in", NBYTES, 0)
        inputs[1].set_shared_memory(f"{protocol}_in", NBYTES, NBYTES)
        outputs = [mod.InferRequestedOutput("OUTPUT0"), mod.InferRequestedOutput("OUTPUT1")]
        outputs[0].set_shared_memory(f"{protocol}_out0", NBYTES)
        outputs[1].set_shared_memory(f"{protocol}_out1", NBYTES)
        result = client.infer("add_sub", inputs, outputs=outputs)

        # As Triton, the reply carries no data for outputs in shared memory.
        if protocol == "http":
            assert "data" not in result.get_output("OUTPUT0")
        else:
            assert not result.get_response().raw_output_contents
        sums = cudashm.get_contents_as_numpy(regions["out0"], np.float32, [N])
        diffs = cudashm.get_contents_as_numpy(regions["out1"], np.float32, [N])
        np.testing.assert_array_equal(sums, a + b)
        np.testing.assert_array_equal(diffs, a - b)

        # A read past the region is Triton's error, and the server keeps serving.
        bad = mod.InferInput("INPUT0", [N], "FP32")
        bad.set_shared_memory(f"{protocol}_in", NBYTES, 2 * NBYTES - 8)
        with pytest.raises(Exception, match="Invalid offset"):
            client.infer("add_sub", [bad, inputs[1]], outputs=outputs)
    finally:
        client.unregister_cuda_shared_memory()
        assert not _names(client.get_cuda_shared_memory_status(), protocol)
        for handle in regions.values():
            cudashm.destroy_shared_memory_region(handle)
        client.close()
