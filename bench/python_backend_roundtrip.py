"""Round-trip overhead of naiad's Python backend: parent -> stub -> parent.

Drives `PythonBackend` directly (no protocol, no scheduler) with an identity model:
  * sequential single requests, FP32 1x1024 (4 KiB): median / p99 latency in µs
  * sequential batches of 8 such requests: per batch and per request
  * model load time: `create_instance` of add_sub (and auto_complete + create_instance)

    .venv/bin/python bench/python_backend_roundtrip.py [--n 5000] [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from naiad.backends.python.backend import PythonBackend
from naiad.kernel.inference.backend import BackendContext, InstanceSpec, ModelSpec
from naiad.kernel.inference.types import FutureSink, InferenceRequest, Tensor
from naiad.protos import model_config_pb2

IDENTITY = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", r.inputs()[0].as_numpy())])
                for r in requests]
"""

IDENTITY_CONFIG = """
name: "identity"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 1, 1024 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1, 1024 ] } ]
"""

ADD_SUB = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        out = []
        for r in requests:
            a = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(r, "INPUT1").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", a + b), pb_utils.Tensor("OUTPUT1", a - b)]))
        return out
"""

ADD_SUB_CONFIG = """
name: "add_sub"
backend: "python"
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


def _model(root: Path, name: str, source: str, config_text: str) -> ModelSpec:
    (root / name / "1").mkdir(parents=True, exist_ok=True)
    (root / name / "1" / "model.py").write_text(source)
    config = text_format.Parse(config_text, model_config_pb2.ModelConfig())
    return ModelSpec(name=name, version=1, repository=root, model_dir=root / name, config=config)


def _context() -> BackendContext:
    async def nope(*_a, **_k):  # BLS is not exercised here
        raise RuntimeError("not used")

    return BackendContext(infer=nope, stream=nope, model_ready=nope, load_model=nope, unload_model=nope, run_id="bench")


def _stats(samples_ns: list[int]) -> str:
    us = sorted(s / 1000 for s in samples_ns)
    p99 = us[min(len(us) - 1, int(len(us) * 0.99))]
    return f"median {statistics.median(us):8.1f} µs   p99 {p99:8.1f} µs   mean {statistics.fmean(us):8.1f} µs"


async def roundtrip(root: Path, n: int) -> None:
    backend = PythonBackend(_context())
    spec = _model(root, "identity", IDENTITY, IDENTITY_CONFIG)
    inst = await backend.create_instance(spec, InstanceSpec("identity_0", "CPU"))
    loop = asyncio.get_running_loop()
    data = np.random.default_rng(0).random((1, 1024), dtype=np.float32)
    raw = data.tobytes()

    def make() -> InferenceRequest:
        return InferenceRequest("identity", [Tensor("INPUT0", "FP32", (1, 1024), raw=raw)])

    async def one(batch: int) -> int:
        reqs = [make() for _ in range(batch)]
        futs = [loop.create_future() for _ in range(batch)]
        t0 = time.perf_counter_ns()
        await inst.execute(reqs, [FutureSink(f) for f in futs])
        for f in futs:
            resp = await f
        t1 = time.perf_counter_ns()
        assert resp.error is None and len(resp.outputs[0].raw) == 4096
        return t1 - t0

    for _ in range(500):  # warm-up
        await one(1)
    for batch, count in ((1, n), (8, max(1, n // 8))):
        c0, p0 = _stub_cpu(inst.pid), _own_cpu()
        samples = [await one(batch) for _ in range(count)]
        stub_us = (_stub_cpu(inst.pid) - c0) * 1e6 / count
        parent_us = (_own_cpu() - p0) * 1e6 / count
        label = f"{batch} request{'s' if batch > 1 else ''} / batch (FP32 1x1024, {count} batches)"
        print(f"{label:46s} {_stats(samples)}")
        if batch > 1:
            print(f"{'  per request':46s} {_stats([x // batch for x in samples])}")
        print(f"{'  CPU per batch: parent / stub':46s} {parent_us:8.1f} µs / {stub_us:.1f} µs")
    s = inst.session
    print(f"packets: sent {s.ep.sent}, received {s.ep.received}, reader wake-ups {s.wakeups}")
    await backend.close()


def _stub_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def load_time(root: Path, repeats: int) -> None:
    """Cold: a stub process is started for the load. Warm: the backend's spare stub
    (started ahead, `spare_stub`) has had a second to boot before the load."""
    spec = _model(root, "add_sub", ADD_SUB, ADD_SUB_CONFIG)
    ms = lambda xs: f"median {statistics.median(xs) / 1e6:7.1f} ms  min {min(xs) / 1e6:7.1f} ms"  # noqa: E731
    for label, spare in (("cold", "false"), ("warm", "true")):
        ctx = _context()
        ctx.config["spare_stub"] = spare
        backend = PythonBackend(ctx)
        create, full = [], []
        for i in range(repeats):
            if spare == "true":
                backend.spare._refill()
                await asyncio.sleep(1.0)
            t0 = time.perf_counter_ns()
            inst = await backend.create_instance(spec, InstanceSpec(f"add_sub_{i}", "CPU"))
            create.append(time.perf_counter_ns() - t0)
            await inst.close()
        for i in range(repeats):
            if spare == "true":
                backend.spare._refill()
                await asyncio.sleep(1.0)
            t0 = time.perf_counter_ns()
            config = await backend.auto_complete(spec.model_dir, 1, spec.config)
            s2 = ModelSpec(spec.name, 1, spec.repository, spec.model_dir, config)
            inst = await backend.create_instance(s2, InstanceSpec(f"add_sub_ac_{i}", "CPU"))
            full.append(time.perf_counter_ns() - t0)
            await inst.close()
        print(f"load add_sub ({label}): create_instance                  {ms(create)}")
        print(f"load add_sub ({label}): auto_complete + create_instance  {ms(full)}")
        await backend.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    print(f"python {sys.version.split()[0]}, loop {args.loop}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(roundtrip(Path(tmp), args.n))
        asyncio.run(load_time(Path(tmp), args.loads))


if __name__ == "__main__":
    main()
