"""The CUDA path (`naiad.ext.cuda_path`): what works everywhere (probing, errors without a
GPU, DLPack producers over host memory consumed by numpy and torch), and, on a machine
with an NVIDIA GPU and cuda-python, streams, events, pinned copies, CUDA shared memory
opened from another process, and GPU instances of the framework backends."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from naiad.ext import cuda_path
from naiad.kernel.inference.errors import ErrorCode, InferenceError

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")]


def has_gpu() -> bool:
    return cuda_path.has_gpu()


needs_gpu = pytest.mark.skipif(not has_gpu(), reason=f"needs an NVIDIA GPU and cuda-python ({cuda_path.why_not()})")

# --------------------------------------------------------------------------- everywhere --


@pytest.mark.skipif(has_gpu(), reason="a GPU is present")
def test_without_a_gpu_every_entry_point_says_why() -> None:
    assert cuda_path.cudart() is None and cuda_path.device_count() == 0
    assert cuda_path.why_not()
    with pytest.raises(InferenceError, match="GPUs not supported") as exc:
        cuda_path.CudaShmRegion.open("region", b"\0" * 64, 0, 1024)
    assert exc.value.code == ErrorCode.INVALID_ARG
    for make in (lambda: cuda_path.Stream(0), cuda_path.Event, lambda: cuda_path.DeviceBuffer(0, 16)):
        with pytest.raises(InferenceError, match="needs CUDA, which is not available") as exc:
            make()
        assert exc.value.code == ErrorCode.UNAVAILABLE


def test_dlpack_over_host_memory_is_zero_copy_and_released() -> None:
    try:  # resets the process-wide ctypes.pythonapi prototypes; naiad's must not care
        import tritonclient.utils._dlpack  # noqa: F401
    except ImportError:
        pass
    base = cuda_path.live_dlpack_count()
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    producer = cuda_path.DLPackTensor.from_host(array)
    assert producer.__dlpack_device__() == (cuda_path.DLPackTensor.CPU, 0)
    view = np.from_dlpack(producer)
    assert view.shape == (3, 4) and view.dtype == np.float32
    assert view.__array_interface__["data"][0] == array.__array_interface__["data"][0]
    assert cuda_path.live_dlpack_count() == base + 1
    del view
    gc.collect()
    assert cuda_path.live_dlpack_count() == base
    capsule = producer.__dlpack__()  # never consumed: its destructor releases it
    del capsule
    gc.collect()
    assert cuda_path.live_dlpack_count() == base


def test_dlpack_into_torch_with_bfloat16() -> None:
    torch = pytest.importorskip("torch")
    array = np.arange(6, dtype=np.int64).reshape(2, 3)
    t = torch.from_dlpack(cuda_path.DLPackTensor.from_host(array))
    t[0, 0] = 42
    assert array[0, 0] == 42  # the same memory
    bits = torch.tensor([1.5, -2.0], dtype=torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    bf = torch.from_dlpack(cuda_path.DLPackTensor.from_host(bits.copy(), bfloat16=True))
    assert bf.dtype == torch.bfloat16 and bf.tolist() == [1.5, -2.0]
    with pytest.raises(InferenceError, match="no DLPack equivalent"):
        cuda_path.DLPackTensor.from_host(np.array(["x"], dtype=object)).__dlpack__()


def test_host_address() -> None:
    a = np.zeros(16, np.uint8)
    assert cuda_path.host_address(a) == (a.__array_interface__["data"][0], 16)
    with pytest.raises(ValueError):
        cuda_path.host_address(np.zeros((4, 4))[:, 1])


# --------------------------------------------------------------------------- with a GPU --


@pytest.mark.gpu
@needs_gpu
def test_stream_event_and_pinned_round_trip() -> None:
    from naiad.ext.host_buffers import default_pool

    stream = cuda_path.Stream(0)
    event = cuda_path.Event()
    device = cuda_path.DeviceBuffer(0, 1 << 20)
    try:
        pool = default_pool()
        src = np.frombuffer(pool.acquire(1 << 20), dtype=np.uint8)
        src[:] = np.arange(1 << 20, dtype=np.uint64).astype(np.uint8)
        dst = np.frombuffer(pool.acquire(1 << 20), dtype=np.uint8)
        cuda_path.copy_to_device(device.ptr, src, stream)
        cuda_path.copy_to_host(dst, device.ptr, stream)
        event.record(stream)
        event.synchronize()
        assert event.query()
        np.testing.assert_array_equal(src, dst)
    finally:
        device.close()
        event.close()
        stream.close()


_EXPORTER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from naiad.ext import cuda_path as cp
    rt = cp.require()
    ptr = cp.check(rt.cudaMalloc(64), "cudaMalloc")
    stream = cp.Stream(0)
    cp.copy_to_device(ptr, np.arange(16, dtype=np.float32), stream)
    stream.synchronize()
    print(cp.ipc_handle(ptr).hex(), flush=True)
    sys.stdin.readline()  # until the test has read and written
    out = np.zeros(16, np.float32)
    cp.copy_to_host(out, ptr, stream)
    stream.synchronize()
    print(",".join(str(int(v)) for v in out), flush=True)
""")


@pytest.mark.gpu
@needs_gpu
def test_cuda_shared_memory_from_another_process(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _EXPORTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ))
    try:
        handle = bytes.fromhex(proc.stdout.readline().strip())
        region = cuda_path.CudaShmRegion.open("r0", handle, 0, 64)
        try:
            assert np.frombuffer(region.read(0, 64), np.float32).tolist() == list(range(16))
            region.write(8, np.array([100, 101], np.float32))
            with pytest.raises(InferenceError, match="Invalid offset"):
                region.read(60, 8)
            torch = pytest.importorskip("torch")
            view = torch.from_dlpack(region.dlpack(0, (16,), np.float32))
            assert view.device.type == "cuda" and view[2].item() == 100
        finally:
            region.close()
        proc.stdin.write("\n")
        proc.stdin.flush()
        values = proc.stdout.readline().strip().split(",")
        assert values[:4] == ["0", "1", "100", "101"]
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.gpu
def test_pytorch_gpu_instance_uses_its_stream(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    from naiad.backends.pytorch import PyTorchBackend
    from naiad.kernel.inference import model_config as mcfg
    from naiad.kernel.inference.backend import BackendContext, InstanceSpec, ModelSpec
    from naiad.kernel.inference.types import FutureSink, InferenceRequest, Tensor

    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2

    model_dir = tmp_path / "double"
    (model_dir / "1").mkdir(parents=True)
    torch.jit.save(torch.jit.script(Double()), str(model_dir / "1" / "model.pt"))
    config = mcfg.parse_text('name: "double"\nbackend: "pytorch"\nmax_batch_size: 8\n'
                             'input [{name: "x" data_type: TYPE_FP32 dims: [-1]}]\n'
                             'output [{name: "OUTPUT__0" data_type: TYPE_FP32 dims: [-1]}]\n'
                             'instance_group [{kind: KIND_GPU}]')
    mcfg.normalize(config, "double", has_gpu=True)

    async def _none(*_a):
        return None

    async def scenario():
        backend = PyTorchBackend(BackendContext(_none, _none, _none, _none, _none))
        inst = await backend.create_instance(ModelSpec("double", 1, tmp_path, model_dir, config),
                                             InstanceSpec("double_0_0", "GPU", 0))
        try:
            assert inst.stream is not None and inst.device.type == "cuda"
            loop = asyncio.get_running_loop()
            big = np.random.default_rng(0).random((4, 50_000), dtype=np.float32)  # pooled pinned staging
            reqs = [InferenceRequest("double", [Tensor.from_numpy("x", big[i:i + 1])]) for i in range(4)]
            futures = [loop.create_future() for _ in reqs]
            await inst.execute(reqs, [FutureSink(f) for f in futures])
            return [f.result() for f in futures], big
        finally:
            await inst.close()

    responses, big = asyncio.run(scenario())
    for i, r in enumerate(responses):
        assert r.error is None
        np.testing.assert_allclose(r.output("OUTPUT__0").array, big[i:i + 1] * 2)


@pytest.mark.gpu
def test_onnxruntime_gpu_instance(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    if "CUDAExecutionProvider" not in ort.get_available_providers() or not has_gpu():
        pytest.skip("needs onnxruntime-gpu and an NVIDIA GPU")
    from onnx import TensorProto, helper

    from naiad.backends.onnxruntime import OnnxRuntimeBackend
    from naiad.kernel.inference import model_config as mcfg
    from naiad.kernel.inference.backend import BackendContext, InstanceSpec, ModelSpec
    from naiad.kernel.inference.types import FutureSink, InferenceRequest, Tensor

    graph = helper.make_graph([helper.make_node("Add", ["A", "A"], ["B"])], "g",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["n", 2])],
                              [helper.make_tensor_value_info("B", TensorProto.FLOAT, ["n", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    model_dir = tmp_path / "gpu_add"
    (model_dir / "1").mkdir(parents=True)
    onnx.save(model, str(model_dir / "1" / "model.onnx"))

    async def _none(*_a):
        return None

    async def scenario():
        backend = OnnxRuntimeBackend(BackendContext(_none, _none, _none, _none, _none))
        config = mcfg.parse_text('name: "gpu_add"\nbackend: "onnxruntime"\ninstance_group [{kind: KIND_GPU}]')
        mcfg.normalize(config, "gpu_add", has_gpu=True)
        config = await backend.auto_complete(model_dir, 1, config)
        inst = await backend.create_instance(ModelSpec("gpu_add", 1, tmp_path, model_dir, config),
                                             InstanceSpec("gpu_add_0_0", "GPU", 0))
        try:
            assert inst.providers[0] == "CUDAExecutionProvider"
            fut = asyncio.get_running_loop().create_future()
            await inst.execute([InferenceRequest("gpu_add", [Tensor.from_numpy("A", np.ones((1, 2), np.float32))])],
                               [FutureSink(fut)])
            return fut.result()
        finally:
            await inst.close()

    assert asyncio.run(scenario()).output("B").array.tolist() == [[2.0, 2.0]]
