"""A TensorRT engine built in the test from an ONNX model made in the test, then served by a
real `naiad serve` as a Triton user's `model.plan` (config auto-completed from the engine)
and called over HTTP and gRPC. Needs the `tensorrt` package and an NVIDIA GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from naiad.ext import cuda_path
from support.naiad_process import NaiadProcess

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]

trt = pytest.importorskip("tensorrt", reason="needs the tensorrt package")
onnx = pytest.importorskip("onnx")
if not cuda_path.has_gpu():
    pytest.skip(f"needs an NVIDIA GPU ({cuda_path.why_not()})", allow_module_level=True)


def _onnx_scale_add() -> bytes:
    """Y = X * 2 + 1 over [batch, 8] FP32."""
    from onnx import TensorProto, helper, numpy_helper

    two = numpy_helper.from_array(np.array([2.0], np.float32), "two")
    one = numpy_helper.from_array(np.array([1.0], np.float32), "one")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["X", "two"], ["T"]), helper.make_node("Add", ["T", "one"], ["Y"])],
        "scale_add",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 8])],
        initializer=[two, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _engine_from_onnx(data: bytes) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(data), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    profile = builder.create_optimization_profile()
    profile.set_shape("X", (1, 8), (8, 8), (16, 8))
    config = builder.create_builder_config()
    config.add_optimization_profile(profile)
    return bytes(builder.build_serialized_network(network, config))


def test_engine_from_onnx_is_served(tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    model_dir = tmp_path / "models" / "scale_add_plan"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.plan").write_bytes(_engine_from_onnx(_onnx_scale_add()))
    (model_dir / "config.pbtxt").write_text(
        'backend: "tensorrt"\ninstance_group [ { kind: KIND_GPU count: 1 } ]\ndynamic_batching { }\n')
    server = NaiadProcess(tmp_path, [f"--model-repository={tmp_path / 'models'}"])
    server.start()
    try:
        config = httpclient.InferenceServerClient(server.http_address).get_model_config("scale_add_plan")
        assert config["max_batch_size"] == 16 and [i["name"] for i in config["input"]] == ["X"]
        for mod, address in ((httpclient, server.http_address), (grpcclient, server.grpc_address)):
            client = mod.InferenceServerClient(address)
            x = np.arange(24, dtype=np.float32).reshape(3, 8)
            inp = mod.InferInput("X", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            np.testing.assert_allclose(client.infer("scale_add_plan", [inp]).as_numpy("Y"), x * 2 + 1)
            client.close()
    finally:
        server.stop()
        server.kill_if_running()
