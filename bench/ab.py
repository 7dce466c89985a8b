"""Two builds of naiad side by side in one run: A/B by git revision, alternating, pair by pair.

    python3 bench/ab.py --a d8cd6a2~1 --b d8cd6a2 [--rounds 6] [--concurrency 1,8]

Each revision is checked out as a git worktree under bench/work/ab/<rev>, built in place
(protos copied from this tree, ext/ compiled with this venv), and run as `naiad serve` with
that tree first on PYTHONPATH (the editable install's finder comes after PYTHONPATH). Each
round starts both servers and measures each cell on A then B (B then A on odd rounds) with perf_analyzer on
the identity workload, and records throughput, p99 and the server tree's CPU per inference.
The figures to quote are the medians of the per-round B/A ratios: the machine's drift
cancels within a round. Needs the peers (`python3 bench/run.py --setup-only`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
from perf import WORKLOADS, parse_perf_csv, perf_analyzer_args  # noqa: E402
from procs import tree_cpu  # noqa: E402
from servers import Ports, Running, ServerSpec, naiad_argv  # noqa: E402

REPO = peers.REPO
WORK = peers.BENCH / "work" / "ab"
PACKAGES = ("kernel", "ext", "services", "protos", "backends")


def build(rev: str) -> Path:
    """A worktree of `rev` built in place, and a folder whose `naiad` package is that tree."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], check=True,
                         capture_output=True, text=True).stdout.strip()
    tree, farm = WORK / sha, WORK / f"{sha}-path"
    if not (farm / "naiad").exists():
        if tree.exists():
            shutil.rmtree(tree)
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-f", "--detach", str(tree), sha],
                       check=True, capture_output=True)
        for generated in (REPO / "protos").glob("*_pb2*.py"):
            shutil.copy2(generated, tree / "protos" / generated.name)
            os.utime(tree / "protos" / generated.name)  # newer than the .proto files: not regenerated
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree, check=True,
                       capture_output=True)
        package = farm / "naiad"
        package.mkdir(parents=True)
        for item in (tree / "api").iterdir():
            (package / item.name).symlink_to(item)
        for name in PACKAGES:
            (package / name).symlink_to(tree / name)
    return farm


def spec(label: str, farm: Path) -> ServerSpec:
    def command(ports: Ports, workdir: Path, opts: dict) -> tuple[list[str], dict]:
        return naiad_argv(sys.executable, ports), {"PYTHONPATH": str(farm)}

    return ServerSpec(label, "naiad", ("http", "grpc"), command, f"naiad at {label}")


def measure(server: Running, pa: peers.PerfAnalyzer, protocol: str, concurrency: int, window_ms: int,
            workdir: Path) -> dict:
    workload = WORKLOADS["identity_4k_dyn"]
    csv_path = workdir / f"{server.spec.name}-{protocol}-c{concurrency}.csv"
    args = perf_analyzer_args(str(pa.binary), workload, protocol, server.url(protocol), concurrency,
                              window_ms, str(csv_path))
    before, started = tree_cpu(server.pid), time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, **pa.env})
    cpu, wall = tree_cpu(server.pid) - before, time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed: {(done.stdout + done.stderr)[-400:]}")
    row = parse_perf_csv(csv_path.read_text())[0]
    # The load runs the whole time perf_analyzer does, at about the reported rate.
    return {"throughput": row["throughput"], "p99_us": row.get("p99_us"),
            "cpu_us_per_inf": cpu / (row["throughput"] * wall) * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="git revision A (the baseline)")
    parser.add_argument("--b", required=True, help="git revision B (the change)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--protocols", default="http,grpc")
    parser.add_argument("--window-ms", type=int, default=2000)
    args = parser.parse_args()
    pa = peers.ensure_perf_analyzer()
    farms = {"A": build(args.a), "B": build(args.b)}
    cells = [(p, int(c)) for p in args.protocols.split(",") for c in args.concurrency.split(",")]
    ratios: dict[tuple, dict[str, list[float]]] = {cell: {"throughput": [], "p99_us": [], "cpu_us_per_inf": []}
                                                  for cell in cells}
    rows = []
    for rnd in range(args.rounds):
        order = ("A", "B") if rnd % 2 == 0 else ("B", "A")
        workdir = WORK / "runs" / f"r{rnd}"
        servers = {label: Running(spec(label, farms[label]), workdir / label, timeout=120) for label in order}
        try:
            for protocol, c in cells:
                figures = {label: measure(servers[label], pa, protocol, c, args.window_ms, workdir / label)
                           for label in order}
                for key in ratios[(protocol, c)]:
                    if figures["A"].get(key) and figures["B"].get(key):
                        ratios[(protocol, c)][key].append(figures["B"][key] / figures["A"][key])
                rows.append({"round": rnd, "protocol": protocol, "concurrency": c, **{
                    f"{label}_{k}": v for label, f in figures.items() for k, v in f.items()}})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            for server in servers.values():
                server.stop()
    print(f"\nB ({args.b}) / A ({args.a}), median of {args.rounds} paired rounds (min-max):")
    print("| protocol | c | throughput B/A | p99 B/A | server CPU per inference B/A |")
    print("|---|---|---|---|---|")
    for (protocol, c), per in ratios.items():
        cells_text = [f"{statistics.median(v):.3f} ({min(v):.2f}-{max(v):.2f})" if v else "-" for v in per.values()]
        print(f"| {protocol} | {c} | " + " | ".join(cells_text) + " |")
    (WORK / "last.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
