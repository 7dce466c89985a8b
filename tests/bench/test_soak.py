"""bench/soak.py on a real `naiad serve` for a few seconds: RSS samples and the summary come
out, the load got answers, and the slope is a least-squares line."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))  # soak.py imports its siblings (peers, perf, procs, servers)
_spec = importlib.util.spec_from_file_location("naiad_bench_soak", BENCH / "soak.py")
soak = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = soak
_spec.loader.exec_module(soak)


def test_slope_per_minute():
    assert soak.slope_per_minute([(0, 100.0), (60, 101.0), (120, 102.0)]) == pytest.approx(1.0)
    assert soak.slope_per_minute([(0, 5.0), (10, 5.0)]) == 0.0
    assert soak.slope_per_minute([(0, 5.0)]) == 0.0


@pytest.mark.slow
def test_short_soak(tmp_path):
    pytest.importorskip("tritonclient.http")
    assert soak.main(["--minutes", "0.15", "--interval", "3", "--allocators", "system",
                      "--client", "tritonclient", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(next(tmp_path.glob("soak-*.csv")).open()))
    assert len(rows) >= 3 and {r["allocator"] for r in rows} == {"system"}
    assert all(float(r["server_mib"]) > 10 and float(r["stubs_mib"]) > 10 for r in rows)  # a server and its stubs
    md = next(tmp_path.glob("soak-*.md")).read_text()
    for protocol in ("http", "grpc"):
        line = next(l for l in md.splitlines() if l.startswith(f"- {protocol}:"))
        requests = int(line.split()[2])
        assert requests > 0 and " 0 failed requests" in line, line
