"""The ONNX Runtime backend: in-process through the Backend interface (auto-complete,
session settings, config checks, batching, strings, errors), then end to end through a
real `naiad serve` with tritonclient over HTTP and gRPC (dynamic batching with concurrent
clients, auto-complete seen on the config route)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from naiad.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from naiad.backends.onnxruntime import session as ort_session  # noqa: E402
from naiad.backends.common.params import Params  # noqa: E402
from naiad.kernel.inference import model_config as mcfg  # noqa: E402
from naiad.kernel.inference.backend import BackendContext, InstanceSpec, ModelSpec  # noqa: E402
from naiad.kernel.inference.errors import ErrorCode, InferenceError  # noqa: E402
from naiad.kernel.inference.types import FutureSink, InferenceRequest, RequestedOutput, Tensor  # noqa: E402

from support.naiad_process import NaiadProcess  # noqa: E402

pytestmark = pytest.mark.timeout(60)

# --------------------------------------------------------------------------- models --


def _save(graph, path: Path, opset: int = 13) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def add_sub_model(path: Path, batch="batch") -> None:
    """SUM = A + B, DIFF = A - B over [batch, 4] FP32."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["A", "B"], ["SUM"]), helper.make_node("Sub", ["A", "B"], ["DIFF"])],
        "add_sub",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [batch, 4]),
         helper.make_tensor_value_info("B", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("SUM", TensorProto.FLOAT, [batch, 4]),
         helper.make_tensor_value_info("DIFF", TensorProto.FLOAT, [batch, 4])])
    _save(graph, path)


def matmul_model(path: Path) -> None:
    """Y = X @ W with W = arange(12).reshape(3, 4) as an initializer, X [batch, 3]."""
    w = helper.make_tensor("W", TensorProto.FLOAT, [3, 4], np.arange(12, dtype=np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])], "matmul",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 4])],
        initializer=[w])
    _save(graph, path)


def string_model(path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["TEXT"], ["TEXT_OUT"])], "strings",
        [helper.make_tensor_value_info("TEXT", TensorProto.STRING, ["n", 2])],
        [helper.make_tensor_value_info("TEXT_OUT", TensorProto.STRING, ["n", 2])])
    _save(graph, path)


def scalar_model(path: Path) -> None:
    """OUT = IN * 2 for one scalar per batch item ([batch])."""
    two = helper.make_tensor("TWO", TensorProto.INT64, [], [2])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["IN", "TWO"], ["OUT"])], "scalar",
        [helper.make_tensor_value_info("IN", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("OUT", TensorProto.INT64, ["n"])],
        initializer=[two])
    _save(graph, path)


def accumulator_model(path: Path) -> None:
    """A sequence model: ACC = STATE_IN + IN + START * 100; OUT = ACC; STATE_OUT = ACC."""
    hundred = helper.make_tensor("HUNDRED", TensorProto.INT32, [], [100])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["START", "HUNDRED"], ["S100"]),
         helper.make_node("Add", ["STATE_IN", "IN"], ["PARTIAL"]),
         helper.make_node("Add", ["PARTIAL", "S100"], ["OUT"]),
         helper.make_node("Identity", ["OUT"], ["STATE_OUT"])], "accumulator",
        [helper.make_tensor_value_info(n, TensorProto.INT32, ["b", 1]) for n in ("IN", "START", "STATE_IN")],
        [helper.make_tensor_value_info(n, TensorProto.INT32, ["b", 1]) for n in ("OUT", "STATE_OUT")],
        initializer=[hundred])
    _save(graph, path)


ACCUMULATOR_CONFIG = """
backend: "onnxruntime"
max_batch_size: 2
input [{name: "IN" data_type: TYPE_INT32 dims: [1]}]
output [{name: "OUT" data_type: TYPE_INT32 dims: [1]}]
sequence_batching {
  control_input [{name: "START" control [{kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1]}]}]
  state [{input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_INT32 dims: [1]}]
}
"""

A_B = np.arange(8, dtype=np.float32).reshape(2, 4)
W = np.arange(12, dtype=np.float32).reshape(3, 4)

# --------------------------------------------------------------------------- harness --


def _backend(**settings: str) -> OnnxRuntimeBackend:
    async def _none(*_a):
        return None

    return OnnxRuntimeBackend(BackendContext(_none, _none, _none, _none, _none, config=dict(settings)))


async def _load(backend: OnnxRuntimeBackend, model_dir: Path, config_text: str | None = None, version: int = 1):
    name = model_dir.name
    config = mcfg.parse_text(config_text) if config_text is not None else mcfg.ModelConfig()
    config.name = name
    if not config.backend and not config.platform:
        config.backend = "onnxruntime"
    mcfg.normalize(config, name)
    config = await backend.auto_complete(model_dir, version, config)
    mcfg.normalize(config, name)
    spec = ModelSpec(name, version, model_dir.parent, model_dir, config)
    return config, spec


async def _infer(instance, requests):
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in requests]
    await instance.execute(requests, [FutureSink(f) for f in futures])
    return [f.result() for f in futures]


def _req(model: str, *tensors: Tensor, outputs: list[str] | None = None, id: str = "") -> InferenceRequest:
    return InferenceRequest(model, list(tensors), id=id,
                            outputs=[RequestedOutput(n) for n in outputs] if outputs else None)


# --------------------------------------------------------------------------- in-process --


def test_auto_complete_fills_io_batching_and_platform(tmp_path: Path) -> None:
    add_sub_model(tmp_path / "add_sub" / "1" / "model.onnx")

    async def scenario():
        config, _ = await _load(_backend(), tmp_path / "add_sub")
        return config

    config = asyncio.run(scenario())
    assert config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime"
    assert config.max_batch_size == 4  # Triton's default-max-batch-size
    assert config.HasField("dynamic_batching")
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("A", 11, [4]), ("B", 11, [4])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("SUM", [4]), ("DIFF", [4])]
    assert config.default_model_filename == "model.onnx"


def test_auto_complete_default_max_batch_size_and_fixed_shapes(tmp_path: Path) -> None:
    add_sub_model(tmp_path / "dyn" / "1" / "model.onnx")
    add_sub_model(tmp_path / "fixed" / "1" / "model.onnx", batch=2)

    async def scenario():
        dyn, _ = await _load(_backend(**{"default-max-batch-size": "16"}), tmp_path / "dyn")
        fixed, _ = await _load(_backend(), tmp_path / "fixed")
        with pytest.raises(InferenceError, match="does not support batching while non-zero max_batch_size"):
            await _load(_backend(), tmp_path / "fixed", "max_batch_size: 8")
        return dyn, fixed

    dyn, fixed = asyncio.run(scenario())
    assert dyn.max_batch_size == 16
    assert fixed.max_batch_size == 0 and not fixed.HasField("dynamic_batching")
    assert [list(t.dims) for t in fixed.input] == [[2, 4], [2, 4]]


def test_auto_complete_keeps_a_complete_config_and_can_be_disabled(tmp_path: Path) -> None:
    add_sub_model(tmp_path / "m" / "1" / "model.onnx")
    text = ('max_batch_size: 2\ninput [{name: "A" data_type: TYPE_FP32 dims: [4]}, {name: "B" data_type: TYPE_FP32 dims: [4]}]\n'
            'output [{name: "SUM" data_type: TYPE_FP32 dims: [4]}]\n')

    async def scenario():
        kept, _ = await _load(_backend(), tmp_path / "m", text)
        off, _ = await _load(_backend(auto_complete="false"), tmp_path / "m", 'backend: "onnxruntime"')
        return kept, off

    kept, off = asyncio.run(scenario())
    assert kept.max_batch_size == 2 and [t.name for t in kept.output] == ["SUM"]
    assert len(off.input) == 0 and off.max_batch_size == 0


def test_batched_execution_splits_outputs_per_request(tmp_path: Path) -> None:
    add_sub_model(tmp_path / "add_sub" / "1" / "model.onnx")

    async def scenario():
        backend = _backend()
        _, spec = await _load(backend, tmp_path / "add_sub")
        inst = await backend.create_instance(spec, InstanceSpec("add_sub_0_0", "CPU"))
        try:
            requests = [
                _req("add_sub", Tensor.from_numpy("A", np.full((i + 1, 4), i, np.float32)),
                     Tensor.from_numpy("B", np.ones((i + 1, 4), np.float32)), id=str(i),
                     outputs=["DIFF"] if i == 1 else None)
                for i in range(3)
            ]
            return await _infer(inst, requests)
        finally:
            await inst.close()

    responses = asyncio.run(scenario())
    for i, r in enumerate(responses):
        assert r.error is None and r.id == str(i) and r.final
        names = [t.name for t in r.outputs]
        assert names == (["DIFF"] if i == 1 else ["SUM", "DIFF"])
        diff = r.output("DIFF")
        assert diff.shape == (i + 1, 4)
        np.testing.assert_array_equal(diff.array, np.full((i + 1, 4), i - 1, np.float32))
        if i != 1:
            np.testing.assert_array_equal(r.output("SUM").array, np.full((i + 1, 4), i + 1, np.float32))


def test_raw_inputs_strings_and_scalars(tmp_path: Path) -> None:
    matmul_model(tmp_path / "matmul" / "1" / "model.onnx")
    string_model(tmp_path / "strings" / "1" / "model.onnx")
    scalar_model(tmp_path / "scalar" / "1" / "model.onnx")

    async def scenario():
        backend = _backend()
        out = {}
        for name in ("matmul", "strings", "scalar"):
            config, spec = await _load(backend, tmp_path / name)
            out[name + "_config"] = config
            inst = await backend.create_instance(spec, InstanceSpec(f"{name}_0_0", "CPU"))
            try:
                if name == "matmul":
                    x = np.arange(6, dtype=np.float32).reshape(2, 3)
                    req = _req(name, Tensor("X", "FP32", (2, 3), raw=x.tobytes()))  # raw bytes, as HTTP delivers
                elif name == "strings":
                    text = np.array([[b"hello", "w\u00f6rld".encode()], [b"", b"x"]], dtype=object)
                    req = _req(name, Tensor("TEXT", "BYTES", (2, 2), array=text))
                else:
                    req = _req(name, Tensor.from_numpy("IN", np.array([[3], [4]], np.int64)))
                out[name] = (await _infer(inst, [req]))[0]
            finally:
                await inst.close()
        return out

    out = asyncio.run(scenario())
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(out["matmul"].output("Y").array, x @ W)
    assert [t.name for t in out["matmul_config"].input] == ["X"]  # the initializer is no input
    text = out["strings"].output("TEXT_OUT")
    assert text.datatype == "BYTES" and text.array.tolist() == [[b"hello", "w\u00f6rld".encode()], [b"", b"x"]]
    scalar_in = out["scalar_config"].input[0]
    assert list(scalar_in.dims) == [1] and scalar_in.HasField("reshape")  # a scalar per batch item
    result = out["scalar"].output("OUT")
    assert result.shape == (2, 1) and result.array.tolist() == [[6], [8]]


def test_model_errors_become_error_responses(tmp_path: Path) -> None:
    """A shape ONNX Runtime refuses fails every request of the batch, not the instance."""
    add_sub_model(tmp_path / "m" / "1" / "model.onnx")

    async def scenario():
        backend = _backend()
        _, spec = await _load(backend, tmp_path / "m", 'max_batch_size: 4\ninput [{name: "A" data_type: TYPE_FP32 '
                              'dims: [-1]}, {name: "B" data_type: TYPE_FP32 dims: [-1]}]\noutput [{name: "SUM" '
                              'data_type: TYPE_FP32 dims: [-1]}]')
        inst = await backend.create_instance(spec, InstanceSpec("m_0_0", "CPU"))
        try:
            bad = _req("m", Tensor.from_numpy("A", np.ones((1, 3), np.float32)),
                       Tensor.from_numpy("B", np.ones((1, 3), np.float32)))
            good = _req("m", Tensor.from_numpy("A", np.ones((1, 4), np.float32)),
                        Tensor.from_numpy("B", np.ones((1, 4), np.float32)))
            return (await _infer(inst, [bad]))[0], (await _infer(inst, [good]))[0]
        finally:
            await inst.close()

    bad, good = asyncio.run(scenario())
    assert bad.error is not None and bad.error.code == ErrorCode.INTERNAL
    assert "onnx runtime error" in bad.error.message
    assert good.error is None and good.output("SUM").array.tolist() == [[2.0] * 4]


@pytest.mark.parametrize("text, message", [
    ('input [{name: "A" data_type: TYPE_FP64 dims: [-1, 4]}, {name: "B" data_type: TYPE_FP32 dims: [-1, 4]}]\n'
     'output [{name: "SUM" data_type: TYPE_FP32 dims: [-1, 4]}]', "unexpected datatype TYPE_FP64 for input 'A'"),
    ('input [{name: "A" data_type: TYPE_FP32 dims: [-1, 4]}, {name: "C" data_type: TYPE_FP32 dims: [-1, 4]}]\n'
     'output [{name: "SUM" data_type: TYPE_FP32 dims: [-1, 4]}]', "unexpected inference input 'C'"),
    ('input [{name: "A" data_type: TYPE_FP32 dims: [-1, 4]}]\n'
     'output [{name: "SUM" data_type: TYPE_FP32 dims: [-1, 4]}]', "configuration expects 1 inputs, model provides 2"),
    ('input [{name: "A" data_type: TYPE_FP32 dims: [-1, 5]}, {name: "B" data_type: TYPE_FP32 dims: [-1, 4]}]\n'
     'output [{name: "SUM" data_type: TYPE_FP32 dims: [-1, 4]}]', "tensor 'A'"),
    ('input [{name: "A" data_type: TYPE_FP32 dims: [-1, 4]}, {name: "B" data_type: TYPE_FP32 dims: [-1, 4]}]\n'
     'output [{name: "OUT" data_type: TYPE_FP32 dims: [-1, 4]}]', "unexpected inference output 'OUT'"),
])
def test_config_mismatches_fail_the_load(tmp_path: Path, text: str, message: str) -> None:
    add_sub_model(tmp_path / "m" / "1" / "model.onnx")

    async def scenario():
        backend = _backend()
        _, spec = await _load(backend, tmp_path / "m", text)
        await backend.create_instance(spec, InstanceSpec("m_0_0", "CPU"))

    with pytest.raises(InferenceError, match=message):
        asyncio.run(scenario())


def test_missing_model_file_and_gpu_without_cuda_provider(tmp_path: Path) -> None:
    add_sub_model(tmp_path / "m" / "1" / "model.onnx")
    (tmp_path / "empty" / "1").mkdir(parents=True)

    async def scenario():
        backend = _backend()
        with pytest.raises(InferenceError, match="unable to find"):
            await _load(backend, tmp_path / "empty")
        _, spec = await _load(backend, tmp_path / "m")
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            with pytest.raises(InferenceError, match="CUDAExecutionProvider"):
                await backend.create_instance(spec, InstanceSpec("m_0_0", "GPU"))

    asyncio.run(scenario())


def test_session_options_follow_triton_keys() -> None:
    config = mcfg.parse_text(
        'name: "m"\noptimization { graph { level: 1 } }\n'
        'parameters { key: "intra_op_thread_count" value: { string_value: "2" } }\n'
        'parameters { key: "execution_mode" value: { string_value: "1" } }\n'
        'parameters { key: "enable_mem_arena" value: { string_value: "0" } }\n'
        'parameters { key: "memory.enable_memory_arena_shrinkage" value: { string_value: "cpu:0" } }\n')
    params = Params({k: v.string_value for k, v in config.parameters.items()}, "m")
    defaults = Params({"inter_op_thread_count": "3"}, "backend", fold_dashes=True)
    so = ort_session.session_options(ort, config, params, defaults)
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert so.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert (so.intra_op_num_threads, so.inter_op_num_threads) == (2, 3)
    assert so.enable_cpu_mem_arena is False
    assert ort_session.run_options(ort, params) is not None
    for level, want in ((-1, "ORT_ENABLE_BASIC"), (2, "ORT_DISABLE_ALL"), (0, "ORT_ENABLE_ALL")):
        c = mcfg.parse_text(f'name: "m"\noptimization {{ graph {{ level: {level} }} }}')
        assert ort_session.graph_level(ort, c) == getattr(ort.GraphOptimizationLevel, want)
    bad = Params({"execution_mode": "2"}, "m")
    with pytest.raises(InferenceError, match="execution_mode are 0 or 1"):
        ort_session.session_options(ort, config, bad, Params({}, "b"))
    assert ort_session.providers(ort, config, params, "CPU", 0) == ["CPUExecutionProvider"]


# --------------------------------------------------------------------------- end to end --


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ort")
    repo = root / "models"
    add_sub_model(repo / "add_sub" / "1" / "model.onnx")  # no config.pbtxt: auto-complete
    matmul_model(repo / "matmul" / "1" / "model.onnx")
    (repo / "matmul" / "config.pbtxt").write_text(
        'platform: "onnxruntime_onnx"\nmax_batch_size: 16\n'
        'input [{name: "X" data_type: TYPE_FP32 dims: [3]}]\n'
        'output [{name: "Y" data_type: TYPE_FP32 dims: [4]}]\n'
        'dynamic_batching { max_queue_delay_microseconds: 200000 }\n'
        'instance_group [{count: 1 kind: KIND_CPU}]\n'
        'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n')
    string_model(repo / "strings" / "1" / "model.onnx")
    accumulator_model(repo / "accumulator" / "1" / "model.onnx")
    (repo / "accumulator" / "config.pbtxt").write_text(ACCUMULATOR_CONFIG)
    proc = NaiadProcess(root / "run", ["--model-repository", str(repo)])
    try:
        proc.start()
        yield proc
    finally:
        proc.kill_if_running()


def test_http_inference_and_auto_completed_config(server) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_address)
    config = client.get_model_config("add_sub")
    assert config["max_batch_size"] == 4 and config["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("A", "TYPE_FP32", [4]), ("B", "TYPE_FP32", [4])]
    assert [t["name"] for t in config["output"]] == ["SUM", "DIFF"]
    a = httpclient.InferInput("A", [2, 4], "FP32")
    a.set_data_from_numpy(A_B)
    b = httpclient.InferInput("B", [2, 4], "FP32")
    b.set_data_from_numpy(np.ones((2, 4), np.float32))
    result = client.infer("add_sub", [a, b])
    np.testing.assert_array_equal(result.as_numpy("SUM"), A_B + 1)
    np.testing.assert_array_equal(result.as_numpy("DIFF"), A_B - 1)
    text = httpclient.InferInput("TEXT", [1, 2], "BYTES")
    text.set_data_from_numpy(np.array([[b"abc", b"d"]], dtype=object))
    out = client.infer("strings", [text]).as_numpy("TEXT_OUT")
    assert out.tolist() == [[b"abc", b"d"]]


def test_dynamic_batching_with_concurrent_clients(server) -> None:
    import tritonclient.http as httpclient

    n = 8

    def call(i: int) -> np.ndarray:
        client = httpclient.InferenceServerClient(server.http_address)
        try:
            x = httpclient.InferInput("X", [1, 3], "FP32")
            x.set_data_from_numpy(np.full((1, 3), i, np.float32))
            return client.infer("matmul", [x]).as_numpy("Y")
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(call, range(n), timeout=30))
    for i, y in enumerate(results):
        np.testing.assert_allclose(y, np.full((1, 3), i, np.float32) @ W)
    stats = httpclient.InferenceServerClient(server.http_address).get_inference_statistics("matmul")
    model_stats = stats["model_stats"][0]
    assert model_stats["inference_count"] >= n
    assert model_stats["execution_count"] < model_stats["inference_count"]  # requests were batched


def test_grpc_inference(server) -> None:
    from naiad.kernel.config import BUILTIN_SERVICES

    if "grpc" not in BUILTIN_SERVICES:
        pytest.skip("this build has no gRPC service")
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_address)
    config = client.get_model_config("add_sub", as_json=True)["config"]
    assert [t["name"] for t in config["input"]] == ["A", "B"]
    n = 6

    def call(i: int):
        x = grpcclient.InferInput("X", [2, 3], "FP32")
        x.set_data_from_numpy(np.full((2, 3), i, np.float32))
        return client.infer("matmul", [x]).as_numpy("Y")

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(call, range(n), timeout=30))
    for i, y in enumerate(results):
        np.testing.assert_allclose(y, np.full((2, 3), i, np.float32) @ W)
    a = grpcclient.InferInput("A", [2, 4], "FP32")
    a.set_data_from_numpy(A_B)
    b = grpcclient.InferInput("B", [2, 4], "FP32")
    b.set_data_from_numpy(A_B)
    result = client.infer("add_sub", [a, b], outputs=[grpcclient.InferRequestedOutput("SUM")])
    np.testing.assert_array_equal(result.as_numpy("SUM"), A_B * 2)
    assert result.as_numpy("DIFF") is None


def test_sequence_control_inputs_and_implicit_state(server) -> None:
    """The sequence batcher's START control and implicit state reach the ONNX model."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_address)
    outs = []
    for step, (value, start, end) in enumerate(((1, True, False), (2, False, False), (3, False, True))):
        x = httpclient.InferInput("IN", [1, 1], "INT32")
        x.set_data_from_numpy(np.array([[value]], np.int32))
        result = client.infer("accumulator", [x], sequence_id=42, sequence_start=start, sequence_end=end)
        outs.append(int(result.as_numpy("OUT")[0, 0]))
        assert result.as_numpy("STATE_OUT") is None  # state stays inside the server
    assert outs == [101, 103, 106]
