"""A real Prometheus server (Debian's `prometheus` package) for a test: scrapes one target
every second on loopback; `query()` asks its HTTP API. Tests skip when the binary is absent."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

from .naiad_process import free_port, http_get

BINARY = shutil.which("prometheus")
SKIP_REASON = "the prometheus binary is absent (apt-get install prometheus; `make install-test` does it as root)"


class Prometheus:
    def __init__(self, workdir: Path, target: str, scrape_interval: str = "1s") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = workdir / "prometheus.log"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {scrape_interval}\n"
            f"  evaluation_interval: {scrape_interval}\n"
            "scrape_configs:\n"
            "  - job_name: naiad\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [BINARY or "prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if http_get(self.url + "/-/ready", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready within {timeout}s:\n{self.logs()}")

    def query(self, expr: str) -> list[dict]:
        """The instant vector `expr` evaluates to now (the API's `data.result`)."""
        status, body = http_get(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def wait_for(self, expr: str, accept, timeout: float = 30.0) -> list[dict]:
        """Query `expr` every 0.5 s until `accept(result)` holds; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if accept(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr!r} still {result} after {timeout}s")
            time.sleep(0.5)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
