"""The PyTorch (TorchScript) backend: naming conventions (pure), then in-process through the
Backend interface (forward-argument names, INPUT__n names, Dict and List[str] inputs,
auto-complete of outputs by probing, errors), then end to end through one real
`naiad serve` for the whole module (torch is slow to import) over HTTP and gRPC."""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from naiad.backends.pytorch import naming
from naiad.kernel.inference.errors import InferenceError

torch = pytest.importorskip("torch")

from naiad.backends.pytorch import PyTorchBackend  # noqa: E402
from naiad.kernel.inference import model_config as mcfg  # noqa: E402
from naiad.kernel.inference.backend import BackendContext, InstanceSpec, ModelSpec  # noqa: E402
from naiad.kernel.inference.types import FutureSink, InferenceRequest, Tensor  # noqa: E402

from support.naiad_process import NaiadProcess  # noqa: E402

pytestmark = [
    pytest.mark.timeout(90),
    # torch 2.13 deprecates TorchScript (torch.jit.*), which is what Triton's libtorch models are.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

# --------------------------------------------------------------------------- models --


class AddSub(torch.nn.Module):
    def forward(self, x, y):
        return x + y, x - y


class Scale(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([2.0]))

    def forward(self, a, b):
        return a * self.weight + b


class DictIn(torch.nn.Module):
    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {"total": inputs["p"] + inputs["q"], "prod": inputs["p"] * inputs["q"]}


class Upper(torch.nn.Module):
    def forward(self, words: List[str]) -> List[str]:
        return [w.upper() for w in words]


class InPlace(torch.nn.Module):
    def forward(self, x):
        x.add_(1)
        return x


def save(module: torch.nn.Module, model_dir: Path, config: str | None = None, version: int = 1) -> Path:
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(module), str(model_dir / str(version) / "model.pt"))
    if config is not None:
        (model_dir / "config.pbtxt").write_text(config)
    return model_dir


ADD_SUB_INPUTS = ('max_batch_size: 8\ninput [{name: "x" data_type: TYPE_FP32 dims: [4]}, '
                  '{name: "y" data_type: TYPE_FP32 dims: [4]}]\n')
INDEXED = ('max_batch_size: 4\ninput [{name: "INPUT__1" data_type: TYPE_FP32 dims: [-1]}, '
           '{name: "INPUT__0" data_type: TYPE_FP32 dims: [-1]}]\n'
           'output [{name: "OUTPUT__0" data_type: TYPE_FP32 dims: [-1]}]\n')
DICT = ('input [{name: "p" data_type: TYPE_INT64 dims: [3]}, {name: "q" data_type: TYPE_INT64 dims: [3]}]\n'
        'output [{name: "prod" data_type: TYPE_INT64 dims: [3]}, {name: "total" data_type: TYPE_INT64 dims: [3]}]\n')

# --------------------------------------------------------------------------- naming (pure) --


def test_naming_conventions() -> None:
    m = naming.map_inputs("m", ["x", "y"], False, ["y", "x"])
    assert m.convention == naming.FORWARD_ARGUMENT and m.positions == {"y": 1, "x": 0}
    m = naming.map_inputs("m", ["a", "b"], False, ["INPUT__1", "INPUT__0"])
    assert m.convention == naming.NAMED_INDEX and m.positions == {"INPUT__1": 1, "INPUT__0": 0}
    m = naming.map_inputs("m", ["a", "b"], False, ["first", "second"])
    assert m.convention == naming.STRICT_CONFIG_ORDERING and m.positions == {"first": 0, "second": 1}
    assert naming.map_inputs("m", ["d"], True, ["p", "q"]).convention == naming.DICT
    with pytest.raises(InferenceError, match="configuration expects 1 inputs, model provides 2"):
        naming.map_inputs("m", ["a", "b"], False, ["a"])
    with pytest.raises(InferenceError, match="has index 5"):
        naming.map_inputs("m", ["a", "b"], False, ["IN__0", "IN__5"])
    out = naming.map_outputs("m", ["OUTPUT__1", "OUTPUT__0"], False)
    assert out.convention == naming.NAMED_INDEX and out.positions == {"OUTPUT__1": 1, "OUTPUT__0": 0}
    assert naming.map_outputs("m", ["sum", "diff"], False).positions == {"sum": 0, "diff": 1}
    assert naming.named_index("OUTPUT__12") == 12 and naming.named_index("OUT__x") is None


# --------------------------------------------------------------------------- in-process --


def _backend(**settings: str) -> PyTorchBackend:
    async def _none(*_a):
        return None

    return PyTorchBackend(BackendContext(_none, _none, _none, _none, _none, config=dict(settings)))


async def _load(backend, model_dir: Path, kind: str = "CPU"):
    name = model_dir.name
    path = model_dir / "config.pbtxt"
    config = mcfg.parse_file(path) if path.exists() else mcfg.ModelConfig()
    config.name = name
    if not config.backend and not config.platform:
        config.backend = "pytorch"
    mcfg.normalize(config, name)
    config = await backend.auto_complete(model_dir, 1, config)
    mcfg.normalize(config, name)
    spec = ModelSpec(name, 1, model_dir.parent, model_dir, config)
    instance = await backend.create_instance(spec, InstanceSpec(f"{name}_0_0", kind))
    return config, instance


async def _infer(instance, requests):
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in requests]
    await instance.execute(requests, [FutureSink(f) for f in futures])
    return [f.result() for f in futures]


def test_forward_argument_names_with_outputs_auto_completed(tmp_path: Path) -> None:
    model_dir = save(AddSub(), tmp_path / "add_sub", ADD_SUB_INPUTS)

    async def scenario():
        config, inst = await _load(_backend(), model_dir)
        try:
            reqs = [InferenceRequest("add_sub", [Tensor.from_numpy("x", np.full((i + 1, 4), i, np.float32)),
                                                 Tensor.from_numpy("y", np.ones((i + 1, 4), np.float32))], id=str(i))
                    for i in range(3)]
            return config, await _infer(inst, reqs)
        finally:
            await inst.close()

    config, responses = asyncio.run(scenario())
    assert config.platform == "pytorch_libtorch"
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [("OUTPUT__0", 11, [4]), ("OUTPUT__1", 11, [4])]
    for i, r in enumerate(responses):
        assert r.error is None and r.id == str(i)
        np.testing.assert_array_equal(r.output("OUTPUT__0").array, np.full((i + 1, 4), i + 1, np.float32))
        np.testing.assert_array_equal(r.output("OUTPUT__1").array, np.full((i + 1, 4), i - 1, np.float32))


def test_indexed_names_dict_input_and_strings(tmp_path: Path) -> None:
    indexed = save(Scale(), tmp_path / "indexed", INDEXED)
    dict_dir = save(DictIn(), tmp_path / "dict_in", DICT)
    upper = save(Upper(), tmp_path / "upper")  # no config: List[str] inputs complete fully

    async def scenario():
        backend = _backend()
        out = {}
        _, inst = await _load(backend, indexed)
        a = np.array([[1.0, 2.0]], np.float32)
        b = np.array([[10.0, 20.0]], np.float32)
        # INPUT__0 is forward's first argument (a), INPUT__1 its second (b), whatever the config order.
        out["indexed"] = (await _infer(inst, [InferenceRequest("indexed", [
            Tensor.from_numpy("INPUT__0", a), Tensor.from_numpy("INPUT__1", b)])]))[0]
        await inst.close()
        _, inst = await _load(backend, dict_dir)
        out["dict"] = (await _infer(inst, [InferenceRequest("dict_in", [
            Tensor.from_numpy("p", np.array([1, 2, 3], np.int64)),
            Tensor.from_numpy("q", np.array([4, 5, 6], np.int64))])]))[0]
        await inst.close()
        out["upper_config"], inst = await _load(backend, upper)
        out["upper"] = (await _infer(inst, [InferenceRequest("upper", [
            Tensor("words", "BYTES", (2,), array=np.array([b"ab", b"c\xc3\xa9"], dtype=object))])]))[0]
        await inst.close()
        return out

    out = asyncio.run(scenario())
    np.testing.assert_array_equal(out["indexed"].output("OUTPUT__0").array, [[12.0, 24.0]])
    assert out["dict"].output("total").array.tolist() == [5, 7, 9]
    assert out["dict"].output("prod").array.tolist() == [4, 10, 18]
    cfg = out["upper_config"]
    assert [(t.name, t.data_type) for t in cfg.input] == [("words", 13)]
    assert [(t.name, t.data_type) for t in cfg.output] == [("OUTPUT__0", 13)]
    # TorchScript's str.upper() changes ASCII only; the UTF-8 bytes round-trip unchanged.
    assert out["upper"].output("OUTPUT__0").array.tolist() == [b"AB", "C\u00e9".encode()]


def test_inputs_are_private_copies_and_errors_are_responses(tmp_path: Path) -> None:
    model_dir = save(InPlace(), tmp_path / "inplace",
                     'input [{name: "x" data_type: TYPE_FP32 dims: [2]}]\n'
                     'output [{name: "OUTPUT__0" data_type: TYPE_FP64 dims: [2]}]\n')

    async def scenario():
        _, inst = await _load(_backend(), model_dir)
        try:
            data = np.array([1.0, 2.0], np.float32)
            raw = bytearray(data.tobytes())
            r = (await _infer(inst, [InferenceRequest("inplace", [Tensor("x", "FP32", (2,), raw=raw)])]))[0]
            return raw, r
        finally:
            await inst.close()

    raw, r = asyncio.run(scenario())
    assert np.frombuffer(raw, np.float32).tolist() == [1.0, 2.0]  # the request buffer is untouched
    assert r.error is not None and "unexpected datatype float32" in r.error.message  # config says FP64


def test_auto_complete_needs_typed_tensor_inputs_and_gpu_needs_cuda(tmp_path: Path) -> None:
    bare = save(AddSub(), tmp_path / "bare")
    typed = save(AddSub(), tmp_path / "typed", ADD_SUB_INPUTS)

    async def scenario():
        backend = _backend()
        with pytest.raises(InferenceError, match=r"data type and shape of tensor argument\(s\) x, y"):
            await _load(backend, bare)
        if not torch.cuda.is_available():
            with pytest.raises(InferenceError, match="KIND_GPU instance group, but torch sees no CUDA device"):
                await _load(backend, typed, kind="GPU")

    asyncio.run(scenario())


# --------------------------------------------------------------------------- end to end --


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch")
    repo = root / "models"
    save(AddSub(), repo / "add_sub", ADD_SUB_INPUTS + 'dynamic_batching { max_queue_delay_microseconds: 200000 }\n')
    save(Scale(), repo / "indexed", INDEXED)
    save(Upper(), repo / "upper")
    proc = NaiadProcess(root / "run", ["--model-repository", str(repo)], ready_timeout=60)
    try:
        proc.start()
        yield proc
    finally:
        proc.kill_if_running()


def test_http_config_route_and_concurrent_batched_requests(server) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_address)
    config = client.get_model_config("add_sub")
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [
        ("OUTPUT__0", "TYPE_FP32", [4]), ("OUTPUT__1", "TYPE_FP32", [4])]
    assert [t["name"] for t in client.get_model_config("upper")["input"]] == ["words"]
    n = 8

    def call(i: int):
        c = httpclient.InferenceServerClient(server.http_address)
        try:
            x = httpclient.InferInput("x", [1, 4], "FP32")
            x.set_data_from_numpy(np.full((1, 4), i, np.float32))
            y = httpclient.InferInput("y", [1, 4], "FP32")
            y.set_data_from_numpy(np.full((1, 4), 2 * i, np.float32))
            r = c.infer("add_sub", [x, y])
            return r.as_numpy("OUTPUT__0"), r.as_numpy("OUTPUT__1")
        finally:
            c.close()

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(call, range(n), timeout=30))
    for i, (s, d) in enumerate(results):
        np.testing.assert_array_equal(s, np.full((1, 4), 3 * i, np.float32))
        np.testing.assert_array_equal(d, np.full((1, 4), -i, np.float32))
    stats = client.get_inference_statistics("add_sub")["model_stats"][0]
    assert stats["execution_count"] < stats["inference_count"]
    words = httpclient.InferInput("words", [3], "BYTES")
    words.set_data_from_numpy(np.array([b"a", b"bc", b""], dtype=object))
    assert client.infer("upper", [words]).as_numpy("OUTPUT__0").tolist() == [b"A", b"BC", b""]


def test_grpc_indexed_names(server) -> None:
    from naiad.kernel.config import BUILTIN_SERVICES

    if "grpc" not in BUILTIN_SERVICES:
        pytest.skip("this build has no gRPC service")
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_address)
    a = grpcclient.InferInput("INPUT__0", [2, 3], "FP32")
    a.set_data_from_numpy(np.ones((2, 3), np.float32))
    b = grpcclient.InferInput("INPUT__1", [2, 3], "FP32")
    b.set_data_from_numpy(np.full((2, 3), 5, np.float32))
    out = client.infer("indexed", [a, b]).as_numpy("OUTPUT__0")
    np.testing.assert_array_equal(out, np.full((2, 3), 7, np.float32))
