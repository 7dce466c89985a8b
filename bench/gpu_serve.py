"""naiad beside real Triton on a machine with a GPU and many cores (the device machine), where
bench/run.py's peer venvs cannot be built: every path comes on the command line.

    python3 bench/gpu_serve.py --perf-analyzer BIN [--triton-root DIR] [--concurrency 8,64]

Workloads: `identity_4k_dyn` (bench/models/identity_fp32_dyn, the Python-backend identity of
bench/run.py) on both servers, and `torch_gpu` (a TorchScript affine model on KIND_GPU, two
instances, FP32 1x1024) on naiad alone when torch sees a GPU. `--triton-root` is a folder with
bin/tritonserver, backends/, caches/ and lib/ (the shared libraries it needs). Prints a
markdown table with naiad/Triton ratios and writes the rows as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf import WORKLOADS, Workload, parse_perf_csv, perf_analyzer_args  # noqa: E402
from servers import MODELS, Ports, Running, ServerSpec, naiad_argv  # noqa: E402

TORCH_GPU = Workload("torch_gpu", "torch_gpu_affine", "INPUT__0:1024", 1024,
                     description="TorchScript affine FP32 1x1024 on KIND_GPU x2, dynamic batching")
TORCH_CONFIG = """name: "torch_gpu_affine"
backend: "pytorch"
max_batch_size: 64
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 1024 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1024 ] } ]
dynamic_batching { }
instance_group [ { kind: KIND_GPU count: 2 } ]
"""


def build_repository(root: Path, with_torch: bool) -> Path:
    repo = root / "models"
    shutil.copytree(MODELS / "identity_fp32_dyn", repo / "identity_fp32_dyn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if with_torch:
        import torch

        class Affine(torch.nn.Module):
            def forward(self, x):
                return x * 3 - 1

        (repo / "torch_gpu_affine" / "1").mkdir(parents=True)
        (repo / "torch_gpu_affine" / "config.pbtxt").write_text(TORCH_CONFIG)
        torch.jit.save(torch.jit.script(Affine()), str(repo / "torch_gpu_affine" / "1" / "model.pt"))
    return repo


def naiad_spec(repo: Path) -> ServerSpec:
    def command(ports: Ports, workdir: Path, opts: dict) -> tuple[list[str], dict]:
        return naiad_argv(sys.executable, ports, repo), {}

    return ServerSpec("naiad", "naiad", ("http", "grpc"), command, "naiad serve")


def triton_spec(repo: Path, root: Path) -> ServerSpec:
    def command(ports: Ports, workdir: Path, opts: dict) -> tuple[list[str], dict]:
        env = {"LD_LIBRARY_PATH": f"{root / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
        return [str(root / "bin" / "tritonserver"), "--backend-directory", str(root / "backends"),
                "--cache-directory", str(root / "caches"), "--model-repository", str(repo),
                "--model-control-mode=explicit", "--load-model=identity_fp32_dyn",
                f"--http-port={ports.http}", f"--grpc-port={ports.grpc}", f"--metrics-port={ports.metrics}"], env

    return ServerSpec("triton", "peer", ("http", "grpc"), command, "tritonserver")


def measure(server: Running, binary: str, workload: Workload, protocol: str, concurrency: int,
            window_ms: int, workdir: Path) -> dict:
    csv_path = workdir / f"{server.spec.name}-{workload.name}-{protocol}-c{concurrency}.csv"
    args = perf_analyzer_args(binary, workload, protocol, server.url(protocol), concurrency, window_ms, str(csv_path))
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not csv_path.exists():
        return {"error": (done.stdout + done.stderr)[-600:]}
    row = parse_perf_csv(csv_path.read_text())[0]
    row.pop("raw", None)
    return row


def fmt(value: object, scale: float = 1.0) -> str:
    return f"{value / scale:,.1f}" if isinstance(value, (int, float)) else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perf-analyzer", required=True)
    parser.add_argument("--triton-root", type=Path)
    parser.add_argument("--concurrency", default="8,64")
    parser.add_argument("--protocols", default="http,grpc")
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("gpu_serve.json"))
    args = parser.parse_args()
    try:
        import torch

        with_torch = bool(torch.cuda.is_available())
    except ImportError:
        with_torch = False
    workdir = Path(tempfile.mkdtemp(prefix="naiad-gpu-bench-"))
    repo = build_repository(workdir, with_torch)
    specs = [naiad_spec(repo)] + ([triton_spec(repo, args.triton_root)] if args.triton_root else [])
    rows = []
    for spec in specs:
        try:
            server = Running(spec, workdir / spec.name, timeout=180)
        except RuntimeError as exc:
            print(f"{spec.name}: did not start: {exc}", flush=True)
            continue
        try:
            workloads = [WORKLOADS["identity_4k_dyn"]] + ([TORCH_GPU] if with_torch and spec.name == "naiad" else [])
            for workload in workloads:
                for protocol in args.protocols.split(","):
                    for c in (int(x) for x in args.concurrency.split(",")):
                        row = measure(server, args.perf_analyzer, workload, protocol, c, args.window_ms, workdir)
                        row.update(server=spec.name, workload=workload.name, protocol=protocol, concurrency=c)
                        print(json.dumps(row), flush=True)
                        rows.append(row)
        finally:
            server.stop()
    args.out.write_text(json.dumps(rows, indent=1))
    by_key = {(r["server"], r["workload"], r["protocol"], r["concurrency"]): r for r in rows}
    print("\n| workload | protocol | c | naiad inf/s | naiad p99 ms | Triton inf/s | Triton p99 ms | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, workload, protocol, c), r in by_key.items():
        if name != "naiad":
            continue
        t = by_key.get(("triton", workload, protocol, c), {})
        ratio = (r.get("throughput") or 0) / t["throughput"] if t.get("throughput") else None
        print(f"| {workload} | {protocol} | {c} | {fmt(r.get('throughput'))} | {fmt(r.get('p99_us'), 1e3)} | "
              f"{fmt(t.get('throughput'))} | {fmt(t.get('p99_us'), 1e3)} | {'-' if ratio is None else f'{ratio:.2f}x'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
