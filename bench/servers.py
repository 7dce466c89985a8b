"""The servers under test and how each is started, probed for readiness, and stopped.

Every server runs alone on loopback with ports chosen at start; its log goes to the run's work
folder. A `ServerSpec` says which protocols and workloads it can serve; `Running` is one live
process with its start-up time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import peers

BENCH = peers.BENCH
REPO = peers.REPO
MODELS = BENCH / "models"
FLOORS = BENCH / "floors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1.0) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ConnectionError):
        return False


def grpc_ready(port: int) -> bool:
    try:
        import tritonclient.grpc as grpcclient
        c = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            return bool(c.is_server_ready(client_timeout=1.0))
        finally:
            c.close()
    except Exception:
        return False


@dataclass
class Ports:
    http: int = field(default_factory=free_port)
    grpc: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)


@dataclass
class ServerSpec:
    name: str                     # row label: naiad, triton, mlserver, floor-...
    role: str                     # "naiad", "peer" or "floor"
    protocols: tuple[str, ...]    # of "http", "grpc", "http-json"
    command: Callable[[Ports, Path, dict], tuple[list[str], dict]]   # (ports, workdir, opts) -> argv, env
    description: str
    identity_only: bool = False   # floors: only identity workloads (and they need --elements)
    ready_via: str = "http"

    def ready(self, ports: Ports) -> bool:
        return grpc_ready(ports.grpc) if self.ready_via == "grpc" else http_ready(ports.http)


class Running:
    def __init__(self, spec: ServerSpec, workdir: Path, opts: dict | None = None, timeout: float = 120.0):
        self.spec = spec
        self.ports = Ports()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        argv, extra_env = spec.command(self.ports, workdir, opts or {})
        env = dict(os.environ)
        env.update(extra_env)
        self.log_path = workdir / f"{spec.name}.log"
        self._log = open(self.log_path, "ab")
        t0 = time.monotonic()
        # Own process group, so the server and its children (stubs, workers) can be signalled
        # together, but not its own session: with the kernel's autogroup scheduling a session is
        # a scheduling group, and a server alone in one would get half the CPU whatever the client
        # needs (and perf_analyzer's main thread then starves behind its workers and stalls).
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=workdir, process_group=0)
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{spec.name} exited ({self.proc.returncode}) before ready; "
                                   f"log {self.log_path}:\n{self.tail()}")
            if spec.ready(self.ports):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{spec.name} not ready within {timeout:.0f}s; log {self.log_path}:\n{self.tail()}")
            time.sleep(0.02)
        self.start_s = time.monotonic() - t0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, protocol: str) -> str:
        return f"127.0.0.1:{self.ports.grpc if protocol == 'grpc' else self.ports.http}"

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Whatever the server left behind in its process group (it has no other members).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()


# ---------------------------------------------------------------------------------------------
# The servers

def naiad_argv(python: str, ports: Ports, models: Path = MODELS) -> list[str]:
    """`naiad serve` on loopback with `ports`, serving `models`, run by `python`."""
    return [python, "-m", "naiad.kernel.main", "serve", "--model-repository", str(models),
            f"--http-port={ports.http}", "--http-address=127.0.0.1",
            f"--grpc-port={ports.grpc}", "--grpc-address=127.0.0.1",
            f"--metrics-port={ports.metrics}", "--metrics-address=127.0.0.1"]


def _naiad(ports: Ports, workdir: Path, opts: dict) -> tuple[list[str], dict]:
    return naiad_argv(str(REPO / ".venv" / "bin" / "python"), ports) + opts.get("naiad_flags", []), {}


def _triton(ports: Ports, workdir: Path, opts: dict) -> tuple[list[str], dict]:
    t = peers.ensure_triton()
    argv = [str(t.binary), "--backend-directory", str(t.backends), "--cache-directory", str(t.caches),
            "--model-repository", str(MODELS), f"--http-port={ports.http}", f"--grpc-port={ports.grpc}",
            f"--metrics-port={ports.metrics}"]
    return argv, t.env


def _mlserver(ports: Ports, workdir: Path, opts: dict) -> tuple[list[str], dict]:
    folder = workdir / "mlserver-models"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(BENCH / "mlserver", folder)
    (folder / "settings.json").write_text(json.dumps({
        "http_port": ports.http, "grpc_port": ports.grpc, "metrics_port": ports.metrics,
        "host": "127.0.0.1", "debug": False}))
    exe = peers.PEERS / "mlserver" / "bin" / "mlserver"
    return [str(exe), "start", str(folder)], {}


def _floor(script: str) -> Callable:
    def command(ports: Ports, workdir: Path, opts: dict) -> tuple[list[str], dict]:
        port = ports.grpc if script.startswith("grpc") else ports.http
        return [str(peers.venv_python("tools")), str(FLOORS / script), "--port", str(port),
                "--elements", str(opts.get("elements", 1024))], {}
    return command


SERVERS = {s.name: s for s in (
    ServerSpec("naiad", "naiad", ("http", "grpc", "http-json"), _naiad,
               "naiad serve, the same model repository (bench/models)"),
    ServerSpec("triton", "peer", ("http", "grpc", "http-json"), _triton,
               "tritonserver 2.51 from nvidia-pytriton, Python backend, the same model repository"),
    ServerSpec("mlserver", "peer", ("http-json",), _mlserver,
               "MLServer 1.7 with an identity MLModel (bench/mlserver); JSON through wrk only"),
    ServerSpec("floor-canned", "floor", ("http",), _floor("http_canned.py"),
               "aiohttp + uvloop answering a fixed, precomputed response", identity_only=True),
    ServerSpec("floor-aiohttp", "floor", ("http",), _floor("http_aiohttp_echo.py"),
               "aiohttp + uvloop parsing the binary-tensor request and echoing the tensor",
               identity_only=True),
    ServerSpec("floor-protocol", "floor", ("http",), _floor("http_protocol_echo.py"),
               "bare uvloop asyncio.Protocol + httptools (llhttp) echoing the tensor", identity_only=True),
    ServerSpec("floor-grpc", "floor", ("grpc",), _floor("grpc_echo.py"),
               "grpcio aio server echoing raw_input_contents", identity_only=True, ready_via="grpc"),
)}
