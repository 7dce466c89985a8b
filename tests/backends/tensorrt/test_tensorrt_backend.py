"""The TensorRT backend where TensorRT cannot run: its config logic (auto-complete from an
engine's tensors and profiles, config checks, profile choice) against a stand-in engine,
and the errors a TensorRT model gets without tensorrt, cuda-python or a GPU. The real
engine path runs only where a GPU and TensorRT are present (`test_real_engine`)."""

from __future__ import annotations

import asyncio
import enum
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from naiad.backends.common.io import ModelIO
from naiad.backends.tensorrt import TensorRTBackend
from naiad.backends.tensorrt import engine as eng
from naiad.ext import cuda_path
from naiad.kernel.inference import model_config as mcfg
from naiad.kernel.inference.backend import BackendContext, InstanceSpec, ModelSpec
from naiad.kernel.inference.errors import ErrorCode, InferenceError

pytestmark = pytest.mark.timeout(60)

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


# --------------------------------------------------------------------------- a stand-in engine --


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT32 = 3
    INT64 = 9
    BOOL = 4
    FP8 = 10


FAKE_TRT = SimpleNamespace(TensorIOMode=SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"), DataType=DataType)


class FakeEngine:
    """TensorRT 10's ICudaEngine surface that naiad reads."""

    def __init__(self, tensors: list[dict], profiles: int = 1) -> None:
        self.tensors = tensors
        self.num_io_tensors = len(tensors)
        self.num_optimization_profiles = profiles
        self.by_name = {t["name"]: t for t in tensors}

    def get_tensor_name(self, i: int) -> str:
        return self.tensors[i]["name"]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if self.by_name[name]["input"] else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> DataType:
        return self.by_name[name].get("dtype", DataType.FLOAT)

    def get_tensor_shape(self, name: str) -> tuple:
        return self.by_name[name]["shape"]

    def is_shape_inference_io(self, name: str) -> bool:
        return self.by_name[name].get("shape_tensor", False)

    def get_tensor_profile_shape(self, name: str, profile: int) -> list:
        return self.by_name[name]["profiles"][profile]

    def get_tensor_profile_values(self, profile: int, name: str) -> list:
        return self.by_name[name]["profiles"][profile]


def batching_engine() -> FakeEngine:
    return FakeEngine([
        {"name": "INPUT0", "input": True, "shape": (-1, 16),
         "profiles": [[(1, 16), (4, 16), (8, 16)], [(1, 16), (16, 16), (32, 16)]]},
        {"name": "INPUT1 [profile 0]", "input": True, "shape": (-1, 16), "dtype": DataType.HALF,
         "profiles": [[(1, 16), (4, 16), (8, 16)], [(1, 16), (16, 16), (32, 16)]]},
        {"name": "OUTPUT0", "input": False, "shape": (-1, 16)},
        {"name": "OUTPUT1", "input": False, "shape": (-1,), "dtype": DataType.BOOL},
    ], profiles=2)


def fixed_engine() -> FakeEngine:
    return FakeEngine([
        {"name": "IN", "input": True, "shape": (3, 4), "profiles": [[(3, 4), (3, 4), (3, 4)]]},
        {"name": "OUT", "input": False, "shape": (3, 4), "dtype": DataType.INT32},
    ])


def _config(text: str = "") -> object:
    config = mcfg.parse_text('name: "plan"\nplatform: "tensorrt_plan"\n' + text)
    mcfg.normalize(config, "plan")
    return config


def _tensors(engine: FakeEngine) -> list[eng.EngineTensor]:
    return eng.read_engine(engine, FAKE_TRT)


# --------------------------------------------------------------------------- auto-complete --


def test_reads_engine_tensors_and_profiles() -> None:
    tensors = _tensors(batching_engine())
    assert [(t.config_name, t.is_input, t.data_type) for t in tensors] == [
        ("INPUT0", True, "TYPE_FP32"), ("INPUT1", True, "TYPE_FP16"),
        ("OUTPUT0", False, "TYPE_FP32"), ("OUTPUT1", False, "TYPE_BOOL")]
    assert tensors[0].profiles[1] == ((1, 16), (16, 16), (32, 16))


def test_auto_complete_batching_engine_uses_the_instance_profiles() -> None:
    config = _config()
    eng.auto_complete(config, _tensors(batching_engine()))
    assert config.max_batch_size == 8  # profile 0 by default
    assert config.HasField("dynamic_batching")
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("INPUT0", 11, [16]), ("INPUT1", 10, [16])]
    out1 = config.output[1]
    assert (out1.name, list(out1.dims), out1.HasField("reshape")) == ("OUTPUT1", [1], True)

    both = _config('instance_group [{kind: KIND_GPU profile: ["0", "1"]}]')
    eng.auto_complete(both, _tensors(batching_engine()))
    assert both.max_batch_size == 32

    with pytest.raises(InferenceError, match="configuration specified max-batch 64 but TensorRT engine only supports max-batch 8"):
        eng.auto_complete(_config("max_batch_size: 64"), _tensors(batching_engine()))
    with pytest.raises(InferenceError, match="invalid profile 5"):
        eng.auto_complete(_config('instance_group [{profile: ["5"]}]'), _tensors(batching_engine()))


def test_auto_complete_fixed_engine_and_config_hints() -> None:
    config = _config()
    eng.auto_complete(config, _tensors(fixed_engine()))
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert [list(t.dims) for t in config.input] == [[3, 4]]
    assert config.output[0].data_type == 8  # TYPE_INT32

    # Dims that leave out the engine's first dim hint at batching the engine cannot do.
    with pytest.raises(InferenceError, match="hints for dynamic batching"):
        eng.auto_complete(_config('input [{name: "IN" data_type: TYPE_FP32 dims: [4]}]'), _tensors(fixed_engine()))
    # Full-rank dims on a batching engine turn batching off.
    config = _config('input [{name: "INPUT0" data_type: TYPE_FP32 dims: [-1, 16]}]')
    eng.auto_complete(config, _tensors(batching_engine()))
    assert config.max_batch_size == 0 and [t.name for t in config.input] == ["INPUT0"]
    assert [list(t.dims) for t in config.output] == [[-1, 16], [-1]]


def test_config_checks_and_profile_choice() -> None:
    tensors = _tensors(batching_engine())
    good = _config('max_batch_size: 8\ninput [{name: "INPUT0" data_type: TYPE_FP32 dims: [16]}, '
                   '{name: "INPUT1" data_type: TYPE_FP16 dims: [16]}]\n'
                   'output [{name: "OUTPUT0" data_type: TYPE_FP32 dims: [16]}]')
    eng.check_config("plan", ModelIO(good), tensors)
    for text, message in (
        ('input [{name: "INPUT0" data_type: TYPE_FP16 dims: [16]}, {name: "INPUT1" data_type: TYPE_FP16 dims: [16]}]',
         "unexpected datatype TYPE_FP16 for input 'INPUT0', model provides TYPE_FP32"),
        ('input [{name: "INPUT0" data_type: TYPE_FP32 dims: [16]}]', "configuration expects 1 inputs, model provides 2"),
        ('input [{name: "INPUT0" data_type: TYPE_FP32 dims: [16, 1]}, {name: "INPUT1" data_type: TYPE_FP16 dims: [16]}]',
         "has 2 dimensions in the engine"),
        ('input [{name: "NOPE" data_type: TYPE_FP32 dims: [16]}]', "unexpected inference input 'NOPE'"),
    ):
        with pytest.raises(InferenceError, match=message):
            eng.check_config("plan", ModelIO(_config("max_batch_size: 8\n" + text)), tensors)
    by_name = {t.config_name: t for t in tensors}
    assert eng.pick_profile(by_name, {"INPUT0": (4, 16), "INPUT1": (4, 16)}, [0, 1]) == 0
    assert eng.pick_profile(by_name, {"INPUT0": (20, 16), "INPUT1": (20, 16)}, [0, 1]) == 1
    assert eng.pick_profile(by_name, {"INPUT0": (20, 16), "INPUT1": (20, 16)}, [0]) is None
    assert eng.instance_profiles(_config('instance_group [{name: "g" profile: ["1"]}]'), "g", 2) == [1]


# --------------------------------------------------------------------------- without TensorRT / GPU --


def _backend() -> TensorRTBackend:
    async def _none(*_a):
        return None

    return TensorRTBackend(BackendContext(_none, _none, _none, _none, _none, config={}))


@pytest.mark.skipif(HAS_TRT and cuda_path.has_gpu(), reason="TensorRT and a GPU are present")
def test_a_plan_without_tensorrt_or_gpu_fails_to_load_with_the_reason(tmp_path: Path) -> None:
    model_dir = tmp_path / "plan"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.plan").write_bytes(b"not really an engine")
    config = _config('max_batch_size: 8\ninput [{name: "IN" data_type: TYPE_FP32 dims: [4]}]\n'
                     'output [{name: "OUT" data_type: TYPE_FP32 dims: [4]}]')

    async def scenario():
        backend = _backend()
        with pytest.raises(InferenceError) as auto:
            await backend.auto_complete(model_dir, 1, config)
        with pytest.raises(InferenceError) as create:
            await backend.create_instance(ModelSpec("plan", 1, tmp_path, model_dir, config),
                                          InstanceSpec("plan_0_0", "GPU"))
        with pytest.raises(InferenceError, match="unable to find"):
            await backend.auto_complete(tmp_path / "missing", 1, config)
        return auto.value, create.value

    auto, create = asyncio.run(scenario())
    for err in (auto, create):
        assert err.code == ErrorCode.UNAVAILABLE
        if not HAS_TRT:
            assert "needs the 'tensorrt' package" in err.message
        else:
            assert "needs CUDA" in err.message


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed")
def test_import_error_names_the_extra() -> None:
    with pytest.raises(InferenceError, match=r"pip install 'naiad\[tensorrt\]'"):
        eng.import_trt()


# --------------------------------------------------------------------------- with a GPU --


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TRT and cuda_path.has_gpu()), reason="needs TensorRT and an NVIDIA GPU")
def test_real_engine(tmp_path: Path) -> None:
    """Build a tiny engine (Y = X + X over [-1, 4], profile 1..8) and run batches through it."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    x = network.add_input("X", trt.float32, (-1, 4))
    y = network.add_elementwise(x, x, trt.ElementWiseOperation.SUM).get_output(0)
    y.name = "Y"
    network.mark_output(y)
    profile = builder.create_optimization_profile()
    profile.set_shape("X", (1, 4), (4, 4), (8, 4))
    build = builder.create_builder_config()
    build.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, build)
    model_dir = tmp_path / "double"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.plan").write_bytes(bytes(plan))

    from naiad.kernel.inference.types import FutureSink, InferenceRequest, Tensor

    async def scenario():
        backend = _backend()
        config = _config('instance_group [{kind: KIND_GPU}]')
        config = await backend.auto_complete(model_dir, 1, config)
        assert config.max_batch_size == 8 and [t.name for t in config.input] == ["X"]
        inst = await backend.create_instance(ModelSpec("plan", 1, tmp_path, model_dir, config),
                                             InstanceSpec("plan_0_0", "GPU", 0, config.instance_group[0].name))
        try:
            loop = asyncio.get_running_loop()
            requests = [InferenceRequest("plan", [Tensor.from_numpy("X", np.full((i + 1, 4), i, np.float32))])
                        for i in range(3)]
            futures = [loop.create_future() for _ in requests]
            await inst.execute(requests, [FutureSink(f) for f in futures])
            return [f.result() for f in futures]
        finally:
            await inst.close()

    for i, r in enumerate(asyncio.run(scenario())):
        assert r.error is None
        np.testing.assert_array_equal(r.output("Y").array, np.full((i + 1, 4), 2 * i, np.float32))
