"""What batching buys: the dynamic batcher end to end, and the native gather/scatter.

1. Server: naiad serving `bench/models` (identity FP32 1x1024 per request, Python backend),
   measured with perf_analyzer over HTTP at concurrency 1, 8 and 32 on `identity_fp32` (no
   batcher: one request per execute) and `identity_fp32_dyn` (`dynamic_batching {}`).
   Reported: throughput and p99 of each, and the ratio dynamic / none per concurrency.
2. Copy loop: `naiad.ext.batching.gather` into a pooled `HostBuffer` and `scatter(copy=True)`,
   and `services.models.batching.gather_inputs` / `scatter_outputs` (what the ONNX / PyTorch
   backends will call per batch), against a pure-numpy reference (`np.concatenate` into a
   fresh array, `np.split` + copies). Reported: median µs per call and numpy / naiad.

    .venv/bin/python bench/batching.py                 # both parts (~1.5 min on 2 cores)
    .venv/bin/python bench/batching.py --copy-only     # part 2 only (no peers needed)
    .venv/bin/python bench/batching.py --window-ms 1000 --concurrency 1,8

Part 1 needs perf_analyzer, which `bench/peers.py` installs under `bench/.peers/perf` on first
use. Client and server share the machine, so absolute numbers follow its core count; the
ratios are the point.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import peers  # noqa: E402
from perf import WORKLOADS, parse_perf_csv, perf_analyzer_args  # noqa: E402
from servers import Ports, http_ready  # noqa: E402

REPO = BENCH.parent


# ------------------------------------------------------------------ part 1: the server --


def start_naiad(workdir: Path) -> tuple[subprocess.Popen, Ports]:
    ports = Ports()
    python = REPO / ".venv" / "bin" / "python"
    argv = [str(python if python.exists() else sys.executable), "-m", "naiad.kernel.main", "serve",
            "--model-repository", str(BENCH / "models"),
            f"--http-port={ports.http}", "--http-address=127.0.0.1",
            f"--grpc-port={ports.grpc}", "--grpc-address=127.0.0.1",
            f"--metrics-port={ports.metrics}", "--metrics-address=127.0.0.1"]
    log = open(workdir / "naiad.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    deadline = time.monotonic() + 120
    while not http_ready(ports.http):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"naiad did not start; see {workdir / 'naiad.log'}")
        time.sleep(0.1)
    return proc, ports


def measure(pa, ports: Ports, workload_name: str, concurrency: int, window_ms: int, workdir: Path) -> dict:
    workload = WORKLOADS[workload_name]
    csv_path = workdir / f"{workload_name}-c{concurrency}.csv"
    args = perf_analyzer_args(str(pa.binary), workload, "http", f"127.0.0.1:{ports.http}", concurrency,
                              window_ms, str(csv_path))
    env = dict(os.environ)
    env.update(pa.env)
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    if out.returncode != 0 or not csv_path.exists():
        raise RuntimeError(f"perf_analyzer failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    row = parse_perf_csv(csv_path.read_text())[0]
    return {"throughput": row["throughput"], "p99_us": row.get("p99_us", 0.0)}


def server_part(concurrencies: list[int], window_ms: int) -> list[str]:
    pa = peers.ensure_perf_analyzer()
    lines = ["## Dynamic batcher: identity FP32 1x1024, HTTP, perf_analyzer", "",
             "| concurrency | no batcher | dynamic_batching {} | dynamic / none |", "| --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory(prefix="naiad-bench-batching-") as tmp:
        workdir = Path(tmp)
        proc, ports = start_naiad(workdir)
        try:
            for c in concurrencies:
                plain = measure(pa, ports, "identity_4k", c, window_ms, workdir)
                dyn = measure(pa, ports, "identity_4k_dyn", c, window_ms, workdir)
                ratio = dyn["throughput"] / plain["throughput"] if plain["throughput"] else float("nan")
                lines.append(f"| {c} | {plain['throughput']:.0f}/s, p99 {plain['p99_us']:.0f} µs "
                             f"| {dyn['throughput']:.0f}/s, p99 {dyn['p99_us']:.0f} µs | {ratio:.2f}× |")
                print(lines[-1], flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return lines


# ------------------------------------------------------------------ part 2: the copy loop --


def median_us(fn, number: int, repeat: int = 21) -> float:
    fn()  # warm (first pooled acquire allocates)
    return statistics.median(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def copy_part() -> list[str]:
    from naiad.ext import batching as nb
    from naiad.ext.host_buffers import default_pool
    from naiad.kernel.inference.types import InferenceRequest, Tensor
    from naiad.services.models.batching import gather_inputs, scatter_outputs

    pool = default_pool()
    rng = np.random.default_rng(0)
    cases = {
        "32 × 1x1024 FP32 (4 KiB each)": [rng.random((1, 1024), dtype=np.float32) for _ in range(32)],
        "8 × 256x1024 FP32 (1 MiB each)": [rng.random((256, 1024), dtype=np.float32) for _ in range(8)],
        "64 × 1x16 INT64 (small)": [rng.integers(0, 9, (1, 16)) for _ in range(64)],
    }
    lines = ["## Gather / scatter: naiad.ext.batching vs numpy", "",
             f"native module: {nb.NATIVE}. Median µs per call; numpy / naiad > 1 means naiad is faster.", "",
             "| case | operation | numpy | naiad | numpy / naiad |", "| --- | --- | --- | --- | --- |"]
    for label, parts in cases.items():
        number = 2000 if parts[0].nbytes < 65536 else 50
        counts = [p.shape[0] for p in parts]
        total = sum(p.nbytes for p in parts)
        batch = np.concatenate(parts)
        requests = [InferenceRequest("m", [Tensor.from_numpy("X", p)]) for p in parts]

        def np_gather():
            return np.concatenate(parts)

        def nx_gather():
            buf = pool.acquire(total)
            arr = nb.gather(parts, out=buf)
            del arr
            buf.release()

        def np_scatter():
            return [piece.copy() for piece in np.split(batch, np.cumsum(counts)[:-1])]

        def nx_scatter():
            return nb.scatter(batch, counts, copy=True)

        def np_helper():
            arrays = np.concatenate([r.input("X").array for r in requests])
            return [piece.copy() for piece in np.split(arrays, np.cumsum(counts)[:-1])]

        def nx_helper():
            with gather_inputs(requests, pool=pool) as g:
                return scatter_outputs({"Y": g["X"]}, g.counts, copy=True)

        for op, ref, ours in (("gather (into a pooled buffer)", np_gather, nx_gather),
                              ("scatter (copies)", np_scatter, nx_scatter),
                              ("gather_inputs + scatter_outputs", np_helper, nx_helper)):
            a, b = median_us(ref, number), median_us(ours, number)
            lines.append(f"| {label} | {op} | {a:.2f} | {b:.2f} | {a / b:.2f}× |")
            print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated concurrencies (default 1,8,32)")
    ap.add_argument("--window-ms", type=int, default=2000, help="perf_analyzer window (3 windows per point)")
    ap.add_argument("--copy-only", action="store_true", help="only the gather/scatter part")
    ap.add_argument("--server-only", action="store_true", help="only the perf_analyzer part")
    args = ap.parse_args(argv)
    out: list[str] = []
    if not args.server_only:
        out += copy_part() + [""]
    if not args.copy_only:
        out += server_part([int(c) for c in args.concurrency.split(",")], args.window_ms)
    print("\n" + "\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
