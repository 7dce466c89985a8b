"""Soak: naiad under steady load for minutes, its memory sampled, once per allocator.

    python bench/soak.py                  # 10 minutes per allocator (system, then jemalloc)
    python bench/soak.py --minutes 1      # a short check
    make soak                             # the same as the first line, with libjemalloc2 installed

For each allocator a fresh `naiad serve` of bench/models serves the target workload
(identity_fp32_dyn, FP32 1x1024) at c=8 over HTTP and c=8 over gRPC at once, from
perf_analyzer (bench/.peers, built by `python bench/run.py --setup-only`; runs of three 5 s
windows back to back) or, where it is absent, from tritonclient loops (`--client`). Every
`--interval` seconds the RSS of the server process and of its stubs (its child processes)
is sampled. jemalloc is Debian's libjemalloc2 in LD_PRELOAD, so the stubs (which inherit the
environment) run on it too; the run checks that it is mapped. Results: bench/results/soak-<time>.csv (every sample) and .md (per allocator
and series: start, max, end, slope per minute from a least-squares line, requests, errors).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
import perf  # noqa: E402
import procs  # noqa: E402
import servers  # noqa: E402

RESULTS = peers.BENCH / "results"
WORKLOAD = perf.WORKLOADS["identity_4k_dyn"]
PROTOCOLS = ("http", "grpc")
SERIES = ("server_mib", "stubs_mib", "total_mib")


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Load:
    """What one protocol's client got through: requests answered and failed, client runs."""
    protocol: str
    requests: int = 0
    errors: int = 0
    runs: int = 0
    failed_runs: int = 0
    measured_s: float = 0.0  # seconds the counted requests span
    notes: list[str] = field(default_factory=list)


def jemalloc_path() -> str | None:
    try:  # naiad's own lookup (the .venv that runs this has naiad installed)
        from naiad.kernel.allocator import find_jemalloc
    except ImportError:
        return None
    return find_jemalloc()


def perf_analyzer() -> tuple[Path, dict] | None:
    """perf_analyzer and its environment when bench/.peers has it (never built here)."""
    binary = peers.PEERS / "perf" / "bin" / "perf_analyzer"
    if not binary.exists():
        return None
    lib = peers.site_packages("perf") / "nvidia" / "cuda_runtime" / "lib"
    return binary, {"LD_LIBRARY_PATH": str(lib)}


def drive_perf_analyzer(pa: tuple[Path, dict], load: Load, url: str, deadline: float, workdir: Path) -> None:
    """perf_analyzer runs of three 5 s windows, one after another, until the deadline."""
    binary, extra = pa
    env = dict(os.environ, **extra)
    env.pop("LD_PRELOAD", None)  # the client keeps its own allocator
    n = 0
    while time.monotonic() + 17 < deadline:
        n += 1
        csv_path = workdir / f"pa-{load.protocol}-{n}.csv"
        args = perf.perf_analyzer_args(str(binary), WORKLOAD, load.protocol, url, 8, 5000, str(csv_path))
        out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        (workdir / f"pa-{load.protocol}-{n}.out").write_text(out.stdout + out.stderr)
        load.runs += 1
        count = perf.parse_request_count(out.stdout)
        if out.returncode != 0 or count is None:
            load.failed_runs += 1
            load.notes.append(f"run {n}: rc {out.returncode}: {(out.stdout + out.stderr)[-300:]!r}")
            time.sleep(1)
            continue
        load.requests += count
        load.measured_s += 15.0  # perf_analyzer counts its three 5 s windows, not its warm-up


def drive_tritonclient(load: Load, url: str, deadline: float, workdir: Path) -> None:
    """Eight threads, each a tritonclient sending the workload back to back."""
    import numpy as np

    if load.protocol == "grpc":
        import tritonclient.grpc as client_mod
    else:
        import tritonclient.http as client_mod
    lock = threading.Lock()
    data = np.ones((1, WORKLOAD.elements), np.float32)

    def worker() -> None:
        client = client_mod.InferenceServerClient(url)
        x = client_mod.InferInput("INPUT0", list(data.shape), "FP32")
        x.set_data_from_numpy(data)
        ok = bad = 0
        while time.monotonic() < deadline:
            try:
                client.infer(WORKLOAD.model, [x])
                ok += 1
            except Exception:  # any failed request counts; the soak goes on
                bad += 1
        with lock:
            load.requests += ok
            load.errors += bad

    threads = [threading.Thread(target=worker) for _ in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    load.runs = 1
    load.measured_s = time.monotonic() - started


def sample(pid: int) -> dict:
    """RSS (MiB) of the server process, of its children (the stubs), and both."""
    server = stubs = 0.0
    n = 0
    for p in procs.tree(pid):
        try:
            rss = p.memory_info().rss / 2**20
        except Exception:  # a child that just exited
            continue
        n += 1
        if p.pid == pid:
            server = rss
        else:
            stubs += rss
    return {"server_mib": server, "stubs_mib": stubs, "total_mib": server + stubs, "processes": n}


def mapped_jemalloc(pid: int) -> list[bool]:
    out = []
    for p in procs.tree(pid):
        try:
            out.append("libjemalloc" in Path(f"/proc/{p.pid}/maps").read_text())
        except OSError:
            pass
    return out


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return 60.0 * sum((t - mx) * (v - my) for t, v in points) / var if var else 0.0


def soak(allocator: str, minutes: float, interval: float, workdir: Path,
         client: str = "auto") -> tuple[list[dict], dict[str, Load], str]:
    workdir.mkdir(parents=True, exist_ok=True)
    env_note = "system allocator"
    saved = os.environ.get("LD_PRELOAD")
    os.environ.pop("LD_PRELOAD", None)
    if allocator == "jemalloc":
        path = jemalloc_path()
        if path is None:
            raise SystemExit("libjemalloc.so.2 not found: apt-get install libjemalloc2 (make soak does)")
        os.environ["LD_PRELOAD"] = path  # the server and, through it, its stubs
        env_note = f"LD_PRELOAD={path}"
    try:
        server = servers.Running(servers.SERVERS["naiad"], workdir)
    finally:
        os.environ.pop("LD_PRELOAD", None)
        if saved is not None:
            os.environ["LD_PRELOAD"] = saved
    try:
        if allocator == "jemalloc":
            maps = mapped_jemalloc(server.pid)
            env_note += f"; jemalloc mapped in {sum(maps)} of {len(maps)} processes"
        pa = perf_analyzer() if client != "tritonclient" else None
        if client == "perf_analyzer" and pa is None:
            raise SystemExit("perf_analyzer not found under bench/.peers: python bench/run.py --setup-only")
        client = "perf_analyzer" if pa else "tritonclient loops"
        log(f"{allocator}: naiad pid {server.pid} ready in {server.start_s:.1f}s; {minutes:g} min at c=8 "
            f"over HTTP and gRPC from {client}")
        start = time.monotonic()
        deadline = start + minutes * 60
        loads = {p: Load(p) for p in PROTOCOLS}
        threads = []
        for p in PROTOCOLS:
            url = server.url(p)
            target = (lambda ld=loads[p], u=url: drive_perf_analyzer(pa, ld, u, deadline, workdir)) if pa else \
                (lambda ld=loads[p], u=url: drive_tritonclient(ld, u, deadline, workdir))
            threads.append(threading.Thread(target=target, daemon=True))
        rows = [{"allocator": allocator, "t_s": 0.0, **sample(server.pid)}]
        for t in threads:
            t.start()
        while time.monotonic() < deadline:
            time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
            rows.append({"allocator": allocator, "t_s": round(time.monotonic() - start, 1), **sample(server.pid)})
            r = rows[-1]
            log(f"{allocator} t={r['t_s']:.0f}s server {r['server_mib']:.1f} MiB, stubs {r['stubs_mib']:.1f} MiB")
        for t in threads:
            t.join(timeout=180)
        if server.proc.poll() is not None:
            env_note += f"; SERVER EXITED with {server.proc.returncode}"
        return rows, loads, env_note + f"; client {client}"
    finally:
        server.stop()


def summary(allocator: str, rows: list[dict], loads: dict[str, Load], note: str, minutes: float) -> list[str]:
    lines = [f"## {allocator} ({note})", "",
             "| series | start MiB | max MiB | end MiB | slope MiB/min |", "| --- | --- | --- | --- | --- |"]
    for s in SERIES:
        pts = [(r["t_s"], r[s]) for r in rows]
        vals = [v for _, v in pts]
        lines.append(f"| {s[:-4]} | {vals[0]:.1f} | {max(vals):.1f} | {vals[-1]:.1f} | {slope_per_minute(pts):+.3f} |")
    lines.append("")
    for p, ld in loads.items():
        rate = ld.requests / ld.measured_s if ld.measured_s else 0.0
        lines.append(f"- {p}: {ld.requests} requests (~{rate:.0f}/s), {ld.errors} failed requests, "
                     f"{ld.runs} client runs of which {ld.failed_runs} failed")
        lines += [f"  - {n}" for n in ld.notes[:5]]
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="load time per allocator (default 10)")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between RSS samples (default 10)")
    ap.add_argument("--allocators", default="system,jemalloc", help="comma list of system,jemalloc")
    ap.add_argument("--client", choices=["auto", "perf_analyzer", "tritonclient"], default="auto",
                    help="load generator (auto: perf_analyzer when bench/.peers has it)")
    ap.add_argument("--out", default=str(RESULTS), help="results folder (default bench/results)")
    args = ap.parse_args(argv)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = peers.BENCH / "work" / f"soak-{stamp}"
    all_rows: list[dict] = []
    md = [f"# naiad soak {stamp} UTC", "",
          f"{args.minutes:g} min per allocator, {WORKLOAD.description}, c=8 HTTP + c=8 gRPC at once, "
          f"RSS every {args.interval:g} s; slope from a least-squares line over all samples.", ""]
    failed = False
    for allocator in args.allocators.split(","):
        rows, loads, note = soak(allocator, args.minutes, args.interval, work / allocator, args.client)
        all_rows += rows
        md += summary(allocator, rows, loads, note, args.minutes)
        failed |= "SERVER EXITED" in note or any(ld.requests == 0 for ld in loads.values())
    csv_path = out / f"soak-{stamp}.csv"
    keys = ["allocator", "t_s", *SERIES, "processes"]
    csv_path.write_text(",".join(keys) + "\n" + "".join(
        ",".join(f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + "\n" for r in all_rows))
    md_path = out / f"soak-{stamp}.md"
    md_path.write_text("\n".join(md))
    print("\n".join(md))
    log(f"wrote {csv_path} and {md_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
