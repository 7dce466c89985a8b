"""Run a real `naiad serve` process on loopback for a test, with bounded waits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class NaiadProcess:
    def __init__(self, workdir: Path, flags: list[str], config: str | None = None,
                 env: dict | None = None, http: bool = True, ready_timeout: float = 60.0) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flags = flags
        self.config_text = config
        self.extra_env = env or {}
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.ready_timeout = ready_timeout
        self.http = http
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "naiad.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_address(self) -> str:
        """host:port as tritonclient.http wants it."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "naiad.kernel.main", "serve"]
        if self.config_text is not None:
            path = self.workdir / "naiad.toml"
            path.write_text(self.config_text)
            cmd += ["--config", str(path)]
        if self.http and not any(f.startswith("--http-port") for f in self.flags):
            cmd += [f"--http-port={self.http_port}", "--http-address=127.0.0.1"]
        # Ports of the other built-in services, on loopback, when this build has them.
        from naiad.kernel.config import BUILTIN_SERVICES

        if "grpc" in BUILTIN_SERVICES and not any(f.startswith("--grpc-port") for f in self.flags):
            cmd += [f"--grpc-port={self.grpc_port}", "--grpc-address=127.0.0.1"]
        if "metrics" in BUILTIN_SERVICES and not any(f.startswith("--metrics-port") for f in self.flags):
            cmd += [f"--metrics-port={self.metrics_port}", "--metrics-address=127.0.0.1"]
        return cmd + self.flags

    def start(self, wait_ready: bool = True) -> None:
        env = dict(os.environ)
        env.update(self.extra_env)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, cwd=self.workdir)
        if wait_ready:
            self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"naiad exited with {self.proc.returncode} before ready:\n{self.logs()}")
            try:
                status, _ = http_get(self.url + "/v2/health/ready", timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"naiad not ready within {self.ready_timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"naiad did not exit within {timeout}s:\n{self.logs()}")

    def stop(self, timeout: float = 60.0) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()
