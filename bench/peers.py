"""Set up the benchmark's peers under a cache folder: real Triton, perf_analyzer, MLServer, tools.

Each peer is a virtual environment of its own under ``bench/.peers/`` (git-ignored), made once and
marked done by a stamp file holding the pip requirements it was built from; a changed requirement
list rebuilds it. Nothing is installed into naiad's own venv.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS = Path(os.environ.get("NAIAD_BENCH_PEERS", BENCH / ".peers"))

# (venv name, pip requirements). The Triton venv's interpreter also runs the Python-backend stub,
# so it must hold numpy; its Python version picks the stub bundled in the wheel.
VENVS: dict[str, list[str]] = {
    "triton": ["nvidia-pytriton", "pyzmq", "tritonclient[all]", "numpy"],
    "perf": ["tritonclient[all]==2.45.0", "nvidia-cuda-runtime-cu12"],
    # MLServer 1.7.1's inference workers call asyncio.get_event_loop() before setting a loop,
    # which uvloop 0.22 turned into an error (the model then never loads).
    "mlserver": ["mlserver==1.7.1", "uvloop<0.22"],
    "tools": ["matplotlib", "py-spy", "aiohttp", "uvloop", "httptools", "grpcio",
              "tritonclient[grpc]==2.45.0", "numpy", "psutil"],
}
APT = ["wrk", "libb64-0d"]


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def base_python() -> str:
    """The interpreter the venvs are made from: naiad's Python version, so stubs match."""
    for cand in (REPO / ".venv/bin/python", ):
        if cand.exists():
            out = subprocess.run([str(cand), "-c", "import sys; print(sys._base_executable)"],
                                 capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
    return sys.executable


def venv_python(name: str) -> Path:
    return PEERS / name / "bin" / "python"


def ensure_venv(name: str) -> Path:
    reqs = VENVS[name]
    root = PEERS / name
    stamp = root / ".bench-stamp"
    want = "\n".join(reqs)
    if stamp.exists() and stamp.read_text() == want and venv_python(name).exists():
        return root
    log(f"creating venv {root} ({' '.join(reqs)})")
    if root.exists():
        shutil.rmtree(root)
    subprocess.run([base_python(), "-m", "venv", str(root)], check=True)
    pip_log = PEERS / f"{name}.pip.log"
    with open(pip_log, "w") as out:
        for args in (["--upgrade", "pip"], list(reqs)):
            r = subprocess.run([str(venv_python(name)), "-m", "pip", "install", *args],
                               stdout=out, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                out.flush()
                tail = pip_log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"pip install {' '.join(args)} failed in {root} (log {pip_log}):\n{tail}")
    stamp.write_text(want)
    return root


def site_packages(name: str) -> Path:
    hits = glob.glob(str(PEERS / name / "lib" / "python*" / "site-packages"))
    if not hits:
        raise RuntimeError(f"no site-packages in venv {name}")
    return Path(hits[0])


def ensure_apt() -> None:
    missing = [p for p, probe in (("wrk", "wrk"),) if shutil.which(probe) is None]
    libb64 = any(Path(d).glob("libb64.so*") for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/lib/aarch64-linux-gnu") if Path(d).is_dir())
    if not libb64:
        missing.append("libb64-0d")
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        log(f"cannot install {missing} (needs root and apt-get); runs needing them will be skipped")
        return
    log(f"apt-get install {' '.join(missing)}")
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=False)


@dataclass
class Triton:
    """A runnable copy of the tritonserver bundled in the nvidia-pytriton wheel."""
    binary: Path
    backends: Path
    caches: Path
    env: dict = field(default_factory=dict)


def ensure_triton() -> Triton:
    ensure_venv("triton")
    sp = site_packages("triton")
    src = sp / "pytriton" / "tritonserver"
    copy = PEERS / "tritonserver"
    pyver = subprocess.run([str(venv_python("triton")), "-c",
                            "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                           capture_output=True, text=True, check=True).stdout.strip()
    stub = src / "python_backend_stubs" / pyver / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeError(f"no Python-backend stub for Python {pyver} in {src}/python_backend_stubs")
    if not (copy / "bin" / "tritonserver").exists():
        log(f"laying out tritonserver copy at {copy}")
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(src, copy, symlinks=True)
    dst = copy / "backends" / "python" / "triton_python_backend_stub"
    if not dst.exists():
        shutil.copy2(stub, dst)
    env = {
        "LD_LIBRARY_PATH": str(sp / "nvidia_pytriton.libs"),
        "PATH": f"{PEERS / 'triton' / 'bin'}:{os.environ.get('PATH', '')}",
    }
    return Triton(copy / "bin" / "tritonserver", copy / "backends", copy / "caches", env)


@dataclass
class PerfAnalyzer:
    binary: Path
    env: dict


def ensure_perf_analyzer() -> PerfAnalyzer:
    ensure_venv("perf")
    sp = site_packages("perf")
    binary = PEERS / "perf" / "bin" / "perf_analyzer"
    if not binary.exists():
        raise RuntimeError(f"{binary} missing: the tritonclient 2.45.0 wheel should carry it")
    return PerfAnalyzer(binary, {"LD_LIBRARY_PATH": str(sp / "nvidia" / "cuda_runtime" / "lib")})


def ensure_all() -> dict:
    """Everything the full run needs; returns paths the runner uses."""
    ensure_apt()
    out = {"triton": ensure_triton(), "perf_analyzer": ensure_perf_analyzer()}
    ensure_venv("mlserver")
    ensure_venv("tools")
    return out


if __name__ == "__main__":
    ensure_all()
    log("peers ready under " + str(PEERS))
