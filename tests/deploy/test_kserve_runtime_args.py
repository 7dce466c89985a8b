"""The manifests' command lines run for real: `naiad serve` with exactly the arguments of
the KServe ClusterServingRuntime (its ports swapped for free ones) against a local
repository standing in for /mnt/models, and with the Deployment's `--config` on the
ConfigMap's naiad.toml; ready, answering the probes' paths, and inferring over HTTP and gRPC."""

from __future__ import annotations

import re
import tomllib

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from support.manifests import container, load
from support.models import ADD_SUB_MODEL, add_sub_config, write_model
from support.naiad_process import NaiadProcess, free_port, http_get


def _repository(root):
    repo = root / "mnt" / "models"  # the storage initializer's /mnt/models
    write_model(repo, "add_sub", add_sub_config(), ADD_SUB_MODEL)
    return repo


def _check_add_sub(http_port: int, grpc_port: int) -> None:
    a, b = np.arange(4, dtype=np.float32), np.ones(4, np.float32)
    for module, client in ((httpclient, httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")),
                           (grpcclient, grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}"))):
        assert client.is_server_ready() and client.is_model_ready("add_sub")
        inputs = [module.InferInput("INPUT0", [4], "FP32"), module.InferInput("INPUT1", [4], "FP32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer("add_sub", inputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_kserve_runtime_args_serve(tmp_path) -> None:
    c = container("kserve-runtime.yaml")
    assert c["command"] == ["naiad", "serve"]
    repo = _repository(tmp_path)
    http_port, grpc_port = free_port(), free_port()
    swaps = {"--model-store": str(repo), "--http-port": str(http_port), "--grpc-port": str(grpc_port)}
    args = []
    for arg in c["args"]:
        name, _, value = arg.partition("=")
        args.append(f"{name}={swaps.get(name, value)}")
    assert [a.partition("=")[0] for a in args] == [a.partition("=")[0] for a in c["args"]]  # nothing added
    # Loopback only; the runtime's own flags decide everything else. (NaiadProcess adds no
    # HTTP or gRPC port flags when the args carry them.)
    proc = NaiadProcess(tmp_path / "naiad", args + ["--http-address=127.0.0.1", "--grpc-address=127.0.0.1"])
    try:
        proc.http_port = http_port  # where it waits for ready
        proc.start()
        _check_add_sub(http_port, grpc_port)
    finally:
        proc.kill_if_running()


def test_deployment_config_serves_and_answers_the_probes(tmp_path) -> None:
    """The ConfigMap's naiad.toml (its repository and ports moved to the test's) behind
    the Deployment's args: the probe paths answer 200 and models infer."""
    repo = _repository(tmp_path)
    text = load("configmap.yaml")["data"]["naiad.toml"]
    ports = {name: free_port() for name in ("http", "grpc", "metrics")}
    text = text.replace('model_repository = ["/models"]', f'model_repository = ["{repo}"]')
    for name, default in (("http", 8000), ("grpc", 8001), ("metrics", 8002)):
        text = text.replace(f"port = {default}\n", f'port = {ports[name]}\nhost = "127.0.0.1"\n')
    config = tomllib.loads(text)
    assert config["server"]["model_repository"] == [str(repo)]
    assert {name: config["services"][name]["port"] for name in ports} == ports
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "naiad.toml").write_text(text)
    c = container("deployment.yaml")
    (arg,) = c["args"]
    args = [re.sub(r"^--config=.*$", f"--config={tmp_path / 'etc' / 'naiad.toml'}", arg)]
    # The ports come from the file: NaiadProcess's own port flags would override them, so the
    # flags it adds are set to the same values.
    proc = NaiadProcess(tmp_path / "naiad", args + [f"--http-port={ports['http']}", f"--grpc-port={ports['grpc']}",
                                                    f"--metrics-port={ports['metrics']}"])
    try:
        proc.http_port = ports["http"]
        proc.start()
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            status, _ = http_get(f"http://127.0.0.1:{ports['http']}{c[probe]['httpGet']['path']}")
            assert status == 200, probe
        _check_add_sub(ports["http"], ports["grpc"])
        status, body = http_get(f"http://127.0.0.1:{ports['metrics']}/metrics")
        assert status == 200 and b"nv_inference_first_response_histogram_ms_bucket" in body  # histogram_latencies
    finally:
        proc.kill_if_running()
