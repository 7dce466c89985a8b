"""Clients' command lines and output parsers: perf_analyzer (CSV, verbose passes) and wrk.

Pure functions only (standard library), so the test suite can check them without any peer.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    """One thing to measure: a model, its input shape, and which floors can stand in for it."""
    name: str
    model: str
    shape: str | None = None          # perf_analyzer --shape, e.g. "INPUT0:1024"
    elements: int = 0                 # FP32 elements per request (identity workloads)
    string_length: int | None = None  # BYTES workloads
    floors: bool = False              # an identity workload: the echo floors can serve it
    description: str = ""


WORKLOADS = {w.name: w for w in (
    Workload("identity_4k_dyn", "identity_fp32_dyn", "INPUT0:1024", 1024, floors=True,
             description="identity FP32 1x1024 (4 KiB), dynamic batching (naiad's target workload)"),
    Workload("identity_4k", "identity_fp32", "INPUT0:1024", 1024, floors=True,
             description="identity FP32 1x1024 (4 KiB), no batcher"),
    Workload("identity_1m", "identity_fp32", "INPUT0:262144", 262144, floors=True,
             description="identity FP32 1x262144 (1 MiB), no batcher"),
    Workload("add_sub", "add_sub", None, description="add_sub, two FP32 [4] inputs, two outputs"),
    Workload("bytes", "string_upper", "TEXT:16", string_length=16,
             description="BYTES: 16 strings of 16 characters upper-cased"),
)}


def perf_analyzer_args(binary: str, workload: Workload, protocol: str, url: str, concurrency: int,
                       window_ms: int, csv_path: str, passes: int = 3) -> list[str]:
    """perf_analyzer over fixed time windows: exactly `passes` windows, reported as their mean.

    A stability threshold far above any real spread makes perf_analyzer stop after its minimum of
    three windows (it never fails for want of stability), so every run lasts the same time.
    """
    args = [binary, "-m", workload.model, "-i", protocol, "-u", url,
            "--concurrency-range", str(concurrency),
            "--measurement-mode=time_windows", f"--measurement-interval={window_ms}",
            "--stability-percentage=1000000", f"--max-trials={max(passes, 3)}",
            f"--max-threads={max(concurrency, 4)}", "-v", "-f", csv_path]
    if workload.shape:
        args += ["--shape", workload.shape]
    if workload.string_length:
        args += ["--string-length", str(workload.string_length)]
    return args


def parse_perf_csv(text: str) -> list[dict]:
    """perf_analyzer's `-f` CSV: one dict per concurrency, numbers as floats, keys normalised
    (`throughput`, `p50_us`, `p90_us`, `p95_us`, `p99_us`, `concurrency`, and the rest verbatim)."""
    rows = []
    reader = csv.DictReader(io.StringIO(text.strip()))
    for raw in reader:
        row: dict = {}
        for k, v in raw.items():
            if k is None or v is None or v == "":
                continue
            k = k.strip()
            try:
                val: object = float(v)
            except ValueError:
                val = v.strip()
            row[k] = val
        out = {"concurrency": int(row.get("Concurrency", 0)),
               "throughput": row.get("Inferences/Second")}
        for p in ("p50", "p90", "p95", "p99"):
            if f"{p} latency" in row:
                out[f"{p}_us"] = row[f"{p} latency"]
        out["raw"] = row
        rows.append(out)
    return rows


PASS_RE = re.compile(r"Pass \[(\d+)\] throughput: ([0-9.]+) infer/sec\. Avg latency: (\d+) usec")


def parse_pass_line(line: str) -> tuple[int, float, int] | None:
    """A verbose perf_analyzer line `Pass [n] throughput: X infer/sec. Avg latency: Y usec ...`."""
    m = PASS_RE.search(line)
    if not m:
        return None
    return int(m.group(1)), float(m.group(2)), int(m.group(3))


def parse_request_count(text: str) -> int | None:
    """The client's request count over the reported windows (`Request count: N`)."""
    m = re.search(r"Client:\s*\n\s*Request count: (\d+)", text)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# wrk (JSON bodies, for servers perf_analyzer cannot drive)

def json_infer_body(workload: Workload) -> str:
    """A KServe v2 JSON inference request for an identity workload (deterministic values)."""
    data = [round((i % 97) * 0.25, 2) for i in range(workload.elements)]
    return json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, workload.elements],
                                   "datatype": "FP32", "data": data}]}, separators=(",", ":"))


def wrk_script(body_path: str) -> str:
    """A wrk Lua script posting the JSON body in `body_path`."""
    return (f'local f = assert(io.open("{body_path}", "rb"))\n'
            'wrk.body = f:read("*a")\n'
            'f:close()\n'
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n')


def wrk_args(script: str, url: str, concurrency: int, seconds: float) -> list[str]:
    return ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency",
            "--timeout", "10s", "-s", script, url]


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def _to_us(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(text: str) -> dict:
    """wrk --latency output: requests/s, latency percentiles (µs), request and error counts."""
    out: dict = {}
    m = re.search(r"Requests/sec:\s*([0-9.]+)", text)
    if m:
        out["throughput"] = float(m.group(1))
    for pct, val in re.findall(r"^\s*(50|75|90|99)%\s+(\S+)\s*$", text, re.M):
        out[f"p{pct}_us"] = _to_us(val)
    m = re.search(r"(\d+) requests in ([0-9.]+)(\w+),", text)
    if m:
        out["requests"] = int(m.group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(g) for g in m.groups())
    out["errors"] = errors
    return out
