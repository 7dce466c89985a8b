"""A TorchScript model on KIND_GPU served by a real `naiad serve`: two GPU instances,
dynamic batching, concurrent HTTP and gRPC clients, the statistics' counts, and the GPU
figures Triton exports (`nv_gpu_*` with `gpu_uuid`) on the metrics port. Needs torch with
CUDA; skipped elsewhere."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import numpy as np
import pytest

from support.metrics import scrape
from support.naiad_process import NaiadProcess

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(180),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs torch with a CUDA device", allow_module_level=True)

CONFIG = '''
name: "gpu_affine"
backend: "pytorch"
max_batch_size: 32
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 1024 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1024 ] } ]
dynamic_batching { max_queue_delay_microseconds: 500 }
instance_group [ { kind: KIND_GPU count: 2 gpus: [ 0 ] } ]
'''


class Affine(torch.nn.Module):
    def forward(self, x):
        return x * 3 - 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("torch_gpu")
    model_dir = root / "models" / "gpu_affine"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(CONFIG)
    torch.jit.save(torch.jit.script(Affine()), str(model_dir / "1" / "model.pt"))
    proc = NaiadProcess(root, [f"--model-repository={root / 'models'}"])
    proc.start()
    yield proc
    proc.stop()
    proc.kill_if_running()


def _infer(mod, address: str, i: int) -> np.ndarray:
    client = mod.InferenceServerClient(address)
    try:
        x = mod.InferInput("INPUT__0", [1, 1024], "FP32")
        x.set_data_from_numpy(np.full((1, 1024), i, np.float32))
        return client.infer("gpu_affine", [x]).as_numpy("OUTPUT__0")
    finally:
        client.close()


def test_gpu_instances_answer_http_and_grpc_at_once(server: NaiadProcess) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    config = httpclient.InferenceServerClient(server.http_address).get_model_config("gpu_affine")
    groups = config["instance_group"]
    assert groups[0]["kind"] == "KIND_GPU" and groups[0]["gpus"] == [0] and groups[0]["count"] == 2

    jobs = [(httpclient, server.http_address, i) if i % 2 else (grpcclient, server.grpc_address, i)
            for i in range(48)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda job: _infer(*job), jobs, timeout=60))
    for (_, _, i), out in zip(jobs, results):
        np.testing.assert_array_equal(out, np.full((1, 1024), 3 * i - 1, np.float32))

    stats = httpclient.InferenceServerClient(server.http_address).get_inference_statistics("gpu_affine")
    model = stats["model_stats"][0]
    assert model["inference_count"] == 48
    assert model["inference_stats"]["success"]["count"] == 48
    assert 1 <= model["execution_count"] <= 48


def test_gpu_figures_on_the_metrics_port(server: NaiadProcess) -> None:
    samples = scrape(server)
    for family in ("nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes",
                   "nv_gpu_power_usage"):
        series = [labels for (name, labels) in samples if name == family]
        assert series, f"{family} missing"
        assert all(dict(labels).get("gpu_uuid", "").startswith("GPU-") for labels in series)
    total = [v for (name, _), v in samples.items() if name == "nv_gpu_memory_total_bytes"]
    assert total and total[0] > 1 << 30
