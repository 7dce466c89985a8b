"""The benchmark harness's pure parts: parsing perf_analyzer and wrk output, the ratio tables,
the py-spy summary. No peer and no server is started here (bench/run.py does that)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"naiad_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module      # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


perf = load("perf")
report = load("report")
pyspy = load("pyspy_summary")

CSV = """Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency
8,6193.19,100,384,354,41,274,129,0,1178,1685,1986,3592
"""

VERBOSE = """Request concurrency: 8
  Pass [1] throughput: 5698.09 infer/sec. Avg latency: 1397 usec (std 1395 usec). 
  Pass [2] throughput: 6194.44 infer/sec. Avg latency: 1286 usec (std 501 usec). 
  Client: 
    Request count: 23331
    Throughput: 6193.19 infer/sec
"""

WRK = """Running 3s test @ http://127.0.0.1:8000/v2/models/identity_fp32_dyn/infer
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.91ms    1.10ms  20.01ms   90.00%
  Latency Distribution
     50%    2.70ms
     75%    3.10ms
     90%    3.90ms
     99%    1.02s
  8190 requests in 3.00s, 40.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   2729.51
Transfer/sec:     13.33MB
"""


def test_perf_csv_is_parsed_by_column_name():
    (row,) = perf.parse_perf_csv(CSV)
    assert row["concurrency"] == 8
    assert row["throughput"] == 6193.19
    assert (row["p50_us"], row["p99_us"]) == (1178, 3592)
    assert row["raw"]["Server Queue"] == 354


def test_verbose_pass_lines_and_request_count():
    got = [perf.parse_pass_line(line) for line in VERBOSE.splitlines()]
    assert [g for g in got if g] == [(1, 5698.09, 1397), (2, 6194.44, 1286)]
    assert perf.parse_request_count(VERBOSE) == 23331


def test_perf_analyzer_args_fix_the_windows():
    w = perf.WORKLOADS["identity_4k_dyn"]
    args = perf.perf_analyzer_args("pa", w, "grpc", "127.0.0.1:1", 32, 2000, "/tmp/x.csv")
    assert "--measurement-mode=time_windows" in args and "--measurement-interval=2000" in args
    assert args[args.index("--shape") + 1] == "INPUT0:1024"
    assert "--max-threads=32" in args and ["-i", "grpc"] == args[args.index("-i"):args.index("-i") + 2]


def test_wrk_output_units_and_errors():
    r = perf.parse_wrk(WRK)
    assert r["throughput"] == 2729.51
    assert r["p50_us"] == 2700 and r["p99_us"] == 1.02e6
    assert r["requests"] == 8190 and r["errors"] == 3


def test_json_body_matches_the_workload():
    import json
    body = json.loads(perf.json_infer_body(perf.WORKLOADS["identity_4k_dyn"]))
    (inp,) = body["inputs"]
    assert inp["shape"] == [1, 1024] and len(inp["data"]) == 1024 and inp["datatype"] == "FP32"


def row(server, tput, p99, cpu, protocol="http", c=8, workload="identity_4k_dyn", **kw):
    return {"server": server, "workload": workload, "protocol": protocol, "concurrency": c,
            "throughput": tput, "p99_us": p99, "server_cpu_per_inf_us": cpu, "other_cores": 0.1, **kw}


def test_ratio_formatting():
    assert report.ratio(13, 10) == "1.30×"
    assert report.ratio(None, 10) == "–" and report.ratio(1, 0) == "–"


def test_markdown_puts_naiad_beside_each_peer_as_ratios():
    results = {
        "started": "20260101-000000", "mode": "quick",
        "rows": [row("naiad", 13000, 1000, 50), row("triton", 10000, 1250, 100),
                 row("floor-protocol", 16250, 800, 40),
                 row("naiad", 3000, 2000, 300, protocol="http-json"),
                 row("mlserver", 1500, 4000, 900, protocol="http-json"),
                 row("triton", 0, 0, 0, protocol="grpc", error="perf_analyzer exit 99: boom")],
        "servers": {"naiad": {"start_s": 2.0, "rss_mib": 150.0}, "triton": {"start_s": 2.5, "rss_mib": 300.0}},
    }
    md = report.render_markdown(results)
    triton_line = next(l for l in md.splitlines() if l.startswith("| identity_4k_dyn | http | 8 | 13.00k | 10.00k"))
    assert "| 1.30× |" in triton_line and "| 0.80× |" in triton_line and "| 0.50× |" in triton_line
    floor_line = next(l for l in md.splitlines() if "| floor-protocol |" in l and l.startswith("| identity"))
    assert "| 0.80× |" in floor_line
    json_line = next(l for l in md.splitlines() if l.startswith("| identity_4k_dyn | 8 | 3.00k"))
    assert "2.00×" in json_line and "0.50×" in json_line           # naiad/MLServer throughput and p99
    server_line = next(l for l in md.splitlines() if l.startswith("| triton | 2.50 s"))
    assert "0.80×" in server_line and "0.50×" in server_line
    assert "error" in md                                            # the failed Triton gRPC row


def test_markdown_without_naiad_still_renders_peers():
    md = report.render_markdown({"rows": [row("triton", 10000, 1250, 100)], "servers": {}})
    assert "| identity_4k_dyn | http | 8 | – | 10.00k | – |" in md


def test_pyspy_collapsed_stacks_summary():
    text = ("process 1:\"/venv/bin/python -m naiad\";thread (0x1);main (naiad/main.py:3);serve (http/service.py:10);"
            "parse (http/codec.py:20) 6\n"
            "process 1:\"python -m naiad\";thread (0x1);main (naiad/main.py:3);send (http/service.py:30) 5\n"
            "process 2:\"stub\";thread (0x2);run (python/stub.py:5) 1\n")
    s = pyspy.summarise_collapsed(text)
    assert s["samples"] == 12
    assert s["self"][0] == {"function": "naiad: parse (http/codec.py)", "samples": 6, "share": 0.5}
    top_incl = {r["function"]: r["samples"] for r in s["inclusive"]}
    assert top_incl["naiad: serve (http/service.py)"] == 6        # main (11 of 11) is the trunk: left out
    assert "naiad: main (naiad/main.py)" not in top_incl
    assert s["processes"][0]["process"] == "1 naiad" and s["processes"][0]["samples"] == 11
    assert "parse (http/codec.py)" in s["summary_md"]
