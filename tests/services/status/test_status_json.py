"""The status page's data (`/status.json` on the metrics port) through a real server:
models with their state, throughput moving with real tritonclient inferences, Python
stubs with live PIDs and RSS, the effective config; the flag and path settings."""

from __future__ import annotations

import json
import os
import signal
import time

from support.models import identity_config, write_model
from support.naiad_process import http_get


def status(proc, path: str = "/") -> dict:
    code, body = http_get(f"http://127.0.0.1:{proc.metrics_port}{path}status.json")
    assert code == 200, body
    return json.loads(body)


def series_of(s: dict, name: str) -> dict:
    (found,) = [x for x in s["series"] if x["name"] == name]
    return found


def wait_for(pred, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_status_json_follows_inferences(naiad, tmp_path, identity_repo, infer_identity):
    proc = naiad("--model-repository", str(identity_repo), "--metrics-interval-ms=100",
                 config="[services.status]\ninterval_s = 0.2\nwindow_s = 60\n")
    s = status(proc)
    assert {"name": "identity", "version": "1", "state": "READY", "reason": ""} in s["models"]
    assert s["server"]["uptime_s"] >= 0 and s["server"]["window_s"] == 60
    assert s["config"]["services"]["status"]["enabled"] is True
    assert s["config"]["services"]["metrics"]["port"] == proc.metrics_port
    assert s["config"]["server"]["model_repository"] == [str(tmp_path / "models")]

    # the stub of the Python model: a live process of ours with its RSS, no restarts
    (stub,) = [p for p in s["stubs"] if p["model"] == "identity"]
    assert stub["restarts"] == 0 and stub["pid"] > 0 and stub["rss_bytes"] > 1 << 20
    os.kill(stub["pid"], 0)  # exists

    before = wait_for(lambda: series_of(status(proc), "identity")["t"] and series_of(status(proc), "identity"))
    assert before["count"] == 0 and max(before["rps"]) == 0
    infer_identity(proc, 25)
    after = wait_for(lambda: (x := series_of(status(proc), "identity"))["count"] == 25 and max(x["rps"]) > 0 and x)
    assert len(after["t"]) == len(after["rps"]) == len(after["p50_ms"]) == len(after["p99_ms"]) == len(after["queue"])
    assert after["t"] == sorted(after["t"])
    pairs = [(a, b) for a, b in zip(after["p50_ms"], after["p99_ms"]) if a is not None]
    assert pairs and all(0 < a <= b for a, b in pairs)
    # requests/s integrates back to about the requests made
    total = sum(r * (t1 - t0) for r, t0, t1 in zip(after["rps"][1:], after["t"], after["t"][1:]))
    assert 20 <= total <= 30, total

    # a stub killed from outside: restarted, with a new PID and the restart counted
    os.kill(stub["pid"], signal.SIGKILL)
    again = wait_for(lambda: [p for p in status(proc)["stubs"] if p["model"] == "identity" and p["restarts"] == 1
                              and p["pid"] not in (None, stub["pid"])], timeout=20)
    assert again[0]["rss_bytes"] > 1 << 20


BROKEN_MODEL = "raise RuntimeError('cannot start')\n"


def test_page_path_and_flag(naiad, identity_repo):
    repo = identity_repo
    write_model(repo, "broken", identity_config("broken"), BROKEN_MODEL)
    proc = naiad("--model-repository", str(repo), "--exit-on-error=false", "--strict-readiness=false",
                 config='[services.status]\npath = "/status"\n')
    code, html = http_get(f"http://127.0.0.1:{proc.metrics_port}/status/")
    # one self-contained page: no external scripts, styles or images
    assert code == 200 and b"status.json" in html
    assert b" src=" not in html and b"<link" not in html and b"@import" not in html
    models = {m["name"]: m for m in status(proc, "/status/")["models"]}
    assert models["identity"]["state"] == "READY"
    assert models["broken"]["state"] == "UNAVAILABLE" and "cannot start" in models["broken"]["reason"]
    assert http_get(f"http://127.0.0.1:{proc.metrics_port}/")[0] == 404
    assert http_get(f"http://127.0.0.1:{proc.metrics_port}/metrics")[0] == 200

    off = naiad("--model-repository", str(repo), "--exit-on-error=false", "--strict-readiness=false",
                "--status-page=false")
    assert http_get(f"http://127.0.0.1:{off.metrics_port}/")[0] == 404
    assert http_get(f"http://127.0.0.1:{off.metrics_port}/status.json")[0] == 404
    assert http_get(f"http://127.0.0.1:{off.metrics_port}/metrics")[0] == 200
