"""naiad side by side with real Triton, MLServer and transport floors, one server at a time.

    python3 bench/run.py              # full run (about 15 minutes on 2 cores)
    python3 bench/run.py --quick      # under 3 minutes: the target workload, c=1 and 8
    python3 bench/run.py --servers naiad,triton --workloads identity_4k_dyn --concurrency 8
    python3 bench/run.py --setup-only # only build the peers' venvs under bench/.peers/

The first run builds the peers under bench/.peers/ (git-ignored): real Triton from nvidia-pytriton,
perf_analyzer from the tritonclient 2.45.0 wheel, MLServer, and a tools venv (floors, matplotlib,
py-spy, psutil); `wrk` and `libb64-0d` come from apt. Then this script re-executes itself in the
tools venv and measures. Results: bench/results/<timestamp>.json, .md and .png, with
bench/results/latest.md and latest.png pointing at the last run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402  (standard library only)

BENCH = peers.BENCH
RESULTS = BENCH / "results"
WORK = BENCH / "work"

QUICK = {"workloads": ["identity_4k_dyn"], "concurrency": [1, 8], "window_ms": 1000, "wrk_seconds": 3,
         "wrk_concurrency": [8], "protocols": ["http", "grpc", "http-json"], "quiet_timeout": 1.5}
FULL = {"workloads": ["identity_4k_dyn", "identity_4k", "identity_1m", "add_sub", "bytes"],
        "concurrency": [1, 8, 32], "window_ms": 2000, "wrk_seconds": 5, "wrk_concurrency": [1, 8, 32],
        "protocols": ["http", "grpc", "http-json"], "quiet_timeout": 10.0}
SERVER_ORDER = ["naiad", "triton", "mlserver", "floor-canned", "floor-aiohttp", "floor-protocol", "floor-grpc"]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the target workload only, c=1,8, 1 s windows")
    p.add_argument("--servers", help=f"comma list from {','.join(SERVER_ORDER)} (default: all)")
    p.add_argument("--workloads", help="comma list (default: by mode); see bench/perf.py WORKLOADS")
    p.add_argument("--protocols", help="comma list of http,grpc,http-json")
    p.add_argument("--concurrency", help="comma list of concurrencies for perf_analyzer")
    p.add_argument("--window-ms", type=int, help="perf_analyzer measurement window")
    p.add_argument("--passes", type=int, default=3, help="perf_analyzer windows per row (min 3)")
    p.add_argument("--wrk-seconds", type=float)
    p.add_argument("--quiet-timeout", type=float,
                   help="seconds to wait before each row for other processes to calm down")
    p.add_argument("--repeat", type=int, default=1,
                   help="measure each row this many times and keep the fastest (noisy machines)")
    p.add_argument("--quiet-cores", type=float, default=0.25,
                   help="'quiet' means other processes use less than this many cores")
    p.add_argument("--profile", action="store_true",
                   help="also record naiad with py-spy during an HTTP c=8 run of identity_4k_dyn")
    p.add_argument("--profile-seconds", type=int, default=10)
    p.add_argument("--naiad-flag", action="append", default=[], help="extra flag for naiad serve")
    p.add_argument("--setup-only", action="store_true", help="build the peers and stop")
    p.add_argument("--no-setup", action="store_true", help="do not (re)build the peers")
    p.add_argument("--out", help="results folder (default bench/results)")
    p.add_argument("--tag", default="", help="appended to the results' file names")
    return p.parse_args(argv)


def settings(args: argparse.Namespace) -> dict:
    base = dict(QUICK if args.quick else FULL)
    if args.workloads:
        base["workloads"] = args.workloads.split(",")
    if args.protocols:
        base["protocols"] = args.protocols.split(",")
    if args.concurrency:
        base["concurrency"] = [int(c) for c in args.concurrency.split(",")]
        base["wrk_concurrency"] = base["concurrency"] if not args.quick else base["wrk_concurrency"]
    if args.window_ms:
        base["window_ms"] = args.window_ms
    if args.wrk_seconds:
        base["wrk_seconds"] = args.wrk_seconds
    if args.quiet_timeout is not None:
        base["quiet_timeout"] = args.quiet_timeout
    base["passes"] = max(3, args.passes)
    base["servers"] = args.servers.split(",") if args.servers else list(SERVER_ORDER)
    return base


# ---------------------------------------------------------------------------------------------
# one row

class Bench:
    def __init__(self, args: argparse.Namespace, cfg: dict, workdir: Path) -> None:
        import perf
        import procs
        import servers
        self.perf, self.procs, self.servers = perf, procs, servers
        self.args = args
        self.cfg = cfg
        self.workdir = workdir
        self.pa = peers.ensure_perf_analyzer()
        self.rows: list[dict] = []
        self.server_info: dict = {}
        self.profile: dict | None = None
        self.busy_streak = 0

    def wait_quiet(self, running) -> float:
        """Wait for other processes to calm down; on a machine that stays busy (two waits in a row
        ran out), wait only briefly from then on rather than lose the timeout on every row."""
        timeout = self.cfg["quiet_timeout"] if self.busy_streak < 2 else min(1.0, self.cfg["quiet_timeout"])
        deadline = time.monotonic() + timeout
        load = self.procs.other_load([running.pid, os.getpid()], 0.3)
        while load > self.args.quiet_cores and time.monotonic() < deadline:
            load = self.procs.other_load([running.pid, os.getpid()], 0.5)
        self.busy_streak = self.busy_streak + 1 if load > self.args.quiet_cores else 0
        return load

    def perf_row(self, running, workload, protocol: str, concurrency: int, window_ms: int | None = None,
                 during=None) -> dict:
        perf, procs = self.perf, self.procs
        window_ms = window_ms or self.cfg["window_ms"]
        row = {"server": running.spec.name, "workload": workload.name, "model": workload.model,
               "protocol": protocol, "concurrency": concurrency, "client": "perf_analyzer",
               "window_ms": window_ms}
        row["other_cores_before"] = self.wait_quiet(running)
        csv_path = self.workdir / f"{running.spec.name}-{workload.name}-{protocol}-c{concurrency}.csv"
        csv_path.unlink(missing_ok=True)
        argv = perf.perf_analyzer_args(str(self.pa.binary), workload, protocol, running.url(protocol),
                                       concurrency, window_ms, str(csv_path), self.cfg["passes"])
        if shutil.which("stdbuf"):
            argv = ["stdbuf", "-oL"] + argv   # line-buffered, so each pass is seen as it ends
        env = dict(os.environ)
        env.update(self.pa.env)
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        meter = procs.CpuMeter(running.pid, proc.pid)
        start = meter.sample()
        passes: dict[int, tuple] = {}
        lines = []
        watcher = during(proc) if during else None
        timeout = self.cfg["passes"] * (window_ms / 1000 * 3 + 2) + 20
        watchdog = threading.Timer(timeout, proc.kill)   # a client that stalls without printing
        watchdog.start()
        try:
            for line in proc.stdout:
                lines.append(line)
                got = perf.parse_pass_line(line)
                if got:
                    passes[got[0]] = (meter.sample(), got[1])
            rc = proc.wait()
        finally:
            watchdog.cancel()
        stalled = time.monotonic() - t0 >= timeout
        if watcher:
            watcher()
        text = "".join(lines)
        (self.workdir / (csv_path.stem + ".out")).write_text(text)
        parsed = perf.parse_perf_csv(csv_path.read_text()) if csv_path.exists() else []
        if stalled:
            # perf_analyzer (2.45, synchronous mode) now and then stops reporting after a window when
            # a fast server meets many client threads on 2 cores; its windows so far still count.
            if not passes:
                row["error"] = f"perf_analyzer did not finish in {timeout:.0f} s (killed), no window reported"
                return row
            ordered = sorted(passes)
            row["throughput"] = sum(passes[k][1] for k in ordered) / len(ordered)
            row["note"] = (f"perf_analyzer stalled after window {ordered[-1]} and was killed: throughput "
                           f"from the windows it reported, no percentiles")
            if len(ordered) >= 2:
                span_tput = sum(passes[k][1] for k in ordered[1:]) / (len(ordered) - 1)
                row.update(cpu_fields(procs.cpu_between(passes[ordered[0]][0], passes[ordered[-1]][0], running.pid), span_tput))
            return row
        if rc != 0 or not parsed:
            row["error"] = f"perf_analyzer exit {rc}: " + " ".join(text.strip().splitlines()[-3:])[-400:]
            return row
        row.update({k: v for k, v in parsed[0].items() if k != "raw"})
        row["request_count"] = perf.parse_request_count(text)
        ordered = sorted(passes)
        if len(ordered) >= 2:
            a, b = passes[ordered[0]][0], passes[ordered[-1]][0]
            span_tput = sum(passes[k][1] for k in ordered[1:]) / (len(ordered) - 1)
        else:   # no pass lines seen: the whole run
            a, b = start, meter.sample()
            span_tput = row["throughput"]
        cpu = procs.cpu_between(a, b, running.pid)
        row.update(cpu_fields(cpu, span_tput))
        return row

    def wrk_row(self, running, workload, concurrency: int) -> dict:
        perf, procs = self.perf, self.procs
        row = {"server": running.spec.name, "workload": workload.name, "model": workload.model,
               "protocol": "http-json", "concurrency": concurrency, "client": "wrk",
               "seconds": self.cfg["wrk_seconds"]}
        if not shutil.which("wrk"):
            row["error"] = "wrk not installed"
            return row
        body = self.workdir / f"{workload.name}.json"
        if not body.exists():
            body.write_text(perf.json_infer_body(workload))
        script = self.workdir / f"{workload.name}.lua"
        script.write_text(perf.wrk_script(str(body)))
        url = f"http://127.0.0.1:{running.ports.http}/v2/models/{workload.model}/infer"
        try:   # one request first: a server that refuses the body gets an error row, not a number
            req = urllib.request.Request(url, data=body.read_bytes(), headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                reply = json.loads(r.read())
            if not reply.get("outputs"):
                raise ValueError(f"no outputs in {str(reply)[:200]}")
        except Exception as e:  # noqa: BLE001 - any failure is reported in the row
            row["error"] = f"JSON request failed: {e}"
            return row
        row["other_cores_before"] = self.wait_quiet(running)
        argv = perf.wrk_args(str(script), url, concurrency, self.cfg["wrk_seconds"])
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        meter = procs.CpuMeter(running.pid, proc.pid)
        secs = max(1, round(self.cfg["wrk_seconds"]))
        time.sleep(min(0.5, secs * 0.2))
        a = meter.sample()
        time.sleep(max(secs - 0.5 - min(0.5, secs * 0.2), 0.2))
        b = meter.sample()
        out, _ = proc.communicate(timeout=secs + 30)
        (self.workdir / f"{running.spec.name}-{workload.name}-json-c{concurrency}.wrk").write_text(out)
        parsed = perf.parse_wrk(out)
        if proc.returncode != 0 or "throughput" not in parsed:
            row["error"] = f"wrk exit {proc.returncode}: {out.strip()[-300:]}"
            return row
        row.update(parsed)
        if parsed.get("errors"):
            row["error"] = f"{parsed['errors']} failed requests"
        row.update(cpu_fields(procs.cpu_between(a, b, running.pid), parsed["throughput"]))
        return row

    # -----------------------------------------------------------------------------------------
    def run_server(self, name: str) -> None:
        import perf
        spec = self.servers.SERVERS[name]
        protocols = [p for p in self.cfg["protocols"] if p in spec.protocols]
        workloads = [perf.WORKLOADS[w] for w in self.cfg["workloads"]]
        if spec.identity_only:
            workloads = [w for w in workloads if w.floors]
        if not protocols or not workloads:
            return
        info = self.server_info.setdefault(name, {"description": spec.description})
        # Floors take the response size at start: one instance per workload. The others: one.
        batches = [[w] for w in workloads] if spec.identity_only else [workloads]
        for batch in batches:
            opts = {"elements": batch[0].elements, "naiad_flags": self.args.naiad_flag}
            log(f"starting {name}" + (f" for {batch[0].name}" if spec.identity_only else ""))
            try:
                running = self.servers.Running(spec, self.workdir / name, opts)
            except Exception as e:  # noqa: BLE001
                info["error"] = str(e)
                log(f"{name} did not start: {str(e)[:2000]}")
                for w in batch:
                    for proto in protocols:
                        for c in self.concurrencies(proto):
                            self.rows.append({"server": name, "workload": w.name, "protocol": proto,
                                              "concurrency": c, "error": f"{name} did not start"})
                return
            info.setdefault("start_s", running.start_s)
            log(f"{name} ready in {running.start_s:.2f} s")
            try:
                for w in batch:
                    for proto in protocols:
                        if proto == "http-json" and w.name != "identity_4k_dyn":
                            continue
                        for c in self.concurrencies(proto):
                            row = self.best_of(lambda: self.wrk_row(running, w, c) if proto == "http-json"
                                               else self.perf_row(running, w, proto, c))
                            self.rows.append(row)
                            log(summarise(row))
                if name == "naiad" and self.args.profile:
                    self.run_profile(running)
                mem = self.procs.tree_memory(running.pid)
                if "rss_mib" not in info or mem["rss_mib"] > info["rss_mib"]:
                    info.update(mem)
            finally:
                running.stop()

    def best_of(self, measure) -> dict:
        """The fastest of `--repeat` attempts (noise on a shared machine only ever slows a run);
        every attempt's throughput and other-cores figure is kept in the row."""
        attempts = [measure() for _ in range(max(1, self.args.repeat))]
        good = [a for a in attempts if not a.get("error")]
        if not good and "no window reported" in attempts[-1].get("error", ""):
            # perf_analyzer now and then stalls after a window on an overloaded machine: once more
            attempts.append(measure())
            good = [a for a in attempts[-1:] if not a.get("error")]
        best = max(good, key=lambda a: a["throughput"]) if good else attempts[-1]
        if len(attempts) > 1:
            best["attempts"] = [{"throughput": a.get("throughput"), "p99_us": a.get("p99_us"),
                                 "other_cores": a.get("other_cores"), "error": a.get("error")} for a in attempts]
        return best

    def concurrencies(self, proto: str) -> list[int]:
        return self.cfg["wrk_concurrency"] if proto == "http-json" else self.cfg["concurrency"]

    def run_profile(self, running) -> None:
        import perf
        import pyspy_summary as prof
        pyspy = peers.PEERS / "tools" / "bin" / "py-spy"
        if not pyspy.exists():
            self.profile = {"error": "py-spy missing"}
            return
        secs = self.args.profile_seconds
        base = self.workdir / "naiad-pyspy"
        log(f"profiling naiad with py-spy for {secs} s during HTTP c=8 identity_4k_dyn")
        state: dict = {}

        def during(proc):
            time.sleep(1.0)
            state["p"] = subprocess.Popen(
                [str(pyspy), "record", "--pid", str(running.pid), "--subprocesses", "-d", str(secs),
                 "-r", "200", "-f", "raw", "-o", str(base) + ".txt", "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

            def done():
                _, err = state["p"].communicate(timeout=secs + 60)
                state["err"] = err
            return done

        window = int(secs * 1000 / 3) + 1000
        row = self.perf_row(running, perf.WORKLOADS["identity_4k_dyn"], "http", 8, window_ms=window, during=during)
        row["note"] = "under py-spy"
        raw = Path(str(base) + ".txt")
        if not raw.exists():
            self.profile = {"error": f"py-spy wrote nothing: {state.get('err', '')[-500:]}"}
            return
        self.profile = prof.summarise_collapsed(raw.read_text())
        self.profile["raw_path"] = os.path.relpath(raw, Path(__file__).resolve().parent.parent)
        self.profile["row"] = row


def cpu_fields(cpu: dict, throughput: float) -> dict:
    out = {"cpu_span_s": cpu["span_s"], "server_cores": cpu["server_cores"], "client_cores": cpu["client_cores"],
           "other_cores": cpu["other_cores"]}
    if throughput:
        out["server_cpu_per_inf_us"] = cpu["server_cores"] / throughput * 1e6
        out["server_cpu_per_inf_us_by_process"] = {
            k: round(v / throughput * 1e6, 1) for k, v in cpu.get("server_cores_by_process", {}).items()}
        out["client_cpu_per_inf_us"] = cpu["client_cores"] / throughput * 1e6
    return out


def summarise(row: dict) -> str:
    head = f"{row['server']:>14} {row['workload']:<16} {row['protocol']:<9} c={row['concurrency']:<3}"
    if row.get("error"):
        return head + " ERROR " + row["error"][:300]
    if row.get("note"):
        head += " [" + row["note"][:40] + "...]"
    return (head + f" {row['throughput']:9.0f} inf/s  p99 {row.get('p99_us', 0):7.0f} us  "
            f"cpu/inf {row.get('server_cpu_per_inf_us', 0):6.0f} us  other {row.get('other_cores', 0):.2f} cores")


def machine() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0.0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) / 2**20
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def versions() -> dict:
    out = {}
    try:
        out["naiad"] = subprocess.run(["git", "-C", str(peers.REPO), "describe", "--always", "--dirty"],
                                      capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        pass
    for venv, dist in (("triton", "nvidia-pytriton"), ("perf", "tritonclient"), ("mlserver", "mlserver")):
        py = peers.venv_python(venv)
        if py.exists():
            r = subprocess.run([str(py), "-c", f"import importlib.metadata as m; print(m.version('{dist}'))"],
                               capture_output=True, text=True)
            if r.returncode == 0:
                out[dist if dist != "tritonclient" else "perf_analyzer (tritonclient)"] = r.stdout.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    tools_py = peers.venv_python("tools")
    in_tools = Path(sys.prefix).resolve() == (peers.PEERS / "tools").resolve()
    if not in_tools:
        if not args.no_setup:
            peers.ensure_all()
        if args.setup_only:
            log(f"peers ready under {peers.PEERS}")
            return 0
        os.execv(str(tools_py), [str(tools_py), str(Path(__file__).resolve()), *argv, "--no-setup"])
    if args.setup_only:
        return 0

    def interrupted(signum, frame):   # SIGTERM as Ctrl-C: servers are stopped, partial results kept
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)
    cfg = settings(args)
    started = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = WORK / started
    workdir.mkdir(parents=True, exist_ok=True)
    out_dir = Path(args.out) if args.out else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, cfg, workdir)
    versions_at_start = versions()    # naiad's commit as measured, not as it is when the run ends
    t0 = time.monotonic()
    log(f"mode {'quick' if args.quick else 'full'}: servers {cfg['servers']}, workloads {cfg['workloads']}, "
        f"c={cfg['concurrency']}, {cfg['passes']}×{cfg['window_ms']} ms windows; work folder {workdir}")
    try:
        for name in [s for s in SERVER_ORDER if s in cfg["servers"]]:
            try:
                bench.run_server(name)
            except Exception:  # noqa: BLE001 - one server's failure must not lose the others
                bench.server_info.setdefault(name, {})["error"] = traceback.format_exc()
                log(f"{name} failed:\n{traceback.format_exc()}")
    finally:
        import report
        results = {
            "started": started, "mode": "quick" if args.quick else "full",
            "elapsed_s": round(time.monotonic() - t0, 1),
            "machine": machine(), "versions": versions_at_start,
            "settings": {k: v for k, v in cfg.items()},
            "descriptions": {n: s.description for n, s in bench.servers.SERVERS.items()},
            "servers": {n: bench.server_info[n] for n in SERVER_ORDER if n in bench.server_info},
            "rows": bench.rows,
        }
        if bench.profile:
            results["profile"] = bench.profile
        stem = started + (f"-{args.tag}" if args.tag else "")
        (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str))
        md = report.render_markdown(results)
        (out_dir / f"{stem}.md").write_text(md)
        (out_dir / "latest.md").write_text(md)
        try:
            report.plot(results, str(out_dir / f"{stem}.png"))
            if (out_dir / f"{stem}.png").exists():
                shutil.copyfile(out_dir / f"{stem}.png", out_dir / "latest.png")
        except Exception:  # noqa: BLE001
            log("plot failed:\n" + traceback.format_exc())
        log(f"done in {time.monotonic() - t0:.0f} s: {out_dir / (stem + '.json')}, {out_dir / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
