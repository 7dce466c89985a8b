"""What every floor answers besides inference: the metadata, config, health and statistics calls
perf_analyzer makes, for one identity model (FP32 in, FP32 out, any name) under any model name."""

from __future__ import annotations

import argparse
import json

SERVER_METADATA = {"name": "floor", "version": "2.45.0",
                   "extensions": ["binary_tensor_data", "model_configuration", "statistics"]}


def model_metadata(name: str) -> dict:
    return {"name": name, "versions": ["1"], "platform": "python",
            "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, -1]}],
            "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, -1]}]}


def model_config(name: str) -> dict:
    return {"name": name, "platform": "", "backend": "python", "max_batch_size": 64,
            "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
            "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
            "instance_group": [{"name": name, "kind": "KIND_CPU", "count": 1}]}


class Counter:
    """Inferences served. perf_analyzer reads statistics between windows and, with no version
    asked for, takes the version whose success count grew: a floor must count to be measured."""
    n = 0


COUNT = Counter()


def model_stats(name: str) -> dict:
    n = COUNT.n
    zero = {"count": 0, "ns": 0}
    stats = {k: {"count": n, "ns": 0} for k in ("success", "queue", "compute_input", "compute_infer",
                                                 "compute_output")}
    stats.update({k: zero for k in ("fail", "cache_hit", "cache_miss")})
    return {"model_stats": [{"name": name, "version": "1", "last_inference": 0,
                             "inference_count": n, "execution_count": n,
                             "inference_stats": stats, "batch_stats": []}]}


def get_json(path: str) -> bytes | None:
    """The body for a GET on `path`, or None when the floor has no such route."""
    if path == "/v2":
        return json.dumps(SERVER_METADATA).encode()
    parts = path.split("/")
    # /v2/models/{m}[/versions/{v}][/config|/ready|/stats]
    if len(parts) < 4 or parts[1] != "v2" or parts[2] != "models":
        return None
    name = parts[3]
    rest = parts[4:]
    if rest[:1] == ["versions"]:
        rest = rest[2:]
    if not rest:
        return json.dumps(model_metadata(name)).encode()
    if rest == ["config"]:
        return json.dumps(model_config(name)).encode()
    if rest == ["stats"]:
        return json.dumps(model_stats(name)).encode()
    if rest == ["ready"]:
        return b""
    return None


def echo_header(request_header: bytes, model: str) -> tuple[bytes, int]:
    """Parse a binary-tensor request's JSON header; return the response header and tensor bytes."""
    COUNT.n += 1
    req = json.loads(request_header)
    inp = req["inputs"][0]
    size = inp.get("parameters", {}).get("binary_data_size")
    if size is None:
        raise ValueError("floor expects binary tensors")
    out = {"model_name": model, "model_version": "1",
           "outputs": [{"name": "OUTPUT0", "datatype": inp["datatype"], "shape": inp["shape"],
                        "parameters": {"binary_data_size": size}}]}
    if "id" in req:
        out["id"] = req["id"]
    return json.dumps(out, separators=(",", ":")).encode(), size


def canned_response(elements: int, model: str = "identity_fp32") -> tuple[bytes, bytes]:
    """A fixed binary-tensor response of `elements` FP32 zeros: (JSON header, whole body)."""
    size = elements * 4
    header = json.dumps({"model_name": model, "model_version": "1",
                         "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [1, elements],
                                      "parameters": {"binary_data_size": size}}]},
                        separators=(",", ":")).encode()
    return header, header + bytes(size)


def args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--elements", type=int, default=1024, help="FP32 elements in a canned response")
    return p.parse_args()
