"""CPU and memory of process trees, from psutil: what a server (and its children) cost.

A `CpuSample` is taken at an instant; the difference of two samples is the CPU each side took
over that span: the server's tree, the client's tree, and the whole machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def tree_cpu(pid: int, seen: dict[int, float] | None = None) -> float:
    """user+system seconds of the tree rooted at `pid` (children that have exited are not counted
    twice: their last reading stays in `seen`, keyed by pid)."""
    seen = {} if seen is None else seen
    for p in tree(pid):
        try:
            t = p.cpu_times()
            seen[p.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return sum(seen.values())


def system_busy() -> float:
    """CPU seconds the whole machine has spent not idle, since boot."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)


@dataclass
class CpuSample:
    at: float
    server: float
    client: float
    system: float
    server_by_pid: dict | None = None    # pid -> user+system seconds, for the per-process split
    server_main_thread: float = 0.0      # the server process's main thread (naiad: the Python event loop)


class CpuMeter:
    """Samples the server's tree, the client's tree and the machine together."""

    def __init__(self, server_pid: int, client_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self.client_pid = client_pid
        self._server_seen: dict[int, float] = {}
        self._client_seen: dict[int, float] = {}

    def sample(self) -> CpuSample:
        server = tree_cpu(self.server_pid, self._server_seen)
        return CpuSample(
            time.monotonic(), server,
            tree_cpu(self.client_pid, self._client_seen) if self.client_pid else 0.0,
            system_busy(), dict(self._server_seen), main_thread_cpu(self.server_pid))


def main_thread_cpu(pid: int) -> float:
    """user+system seconds of `pid`'s main thread (its thread id is the pid)."""
    try:
        for t in psutil.Process(pid).threads():
            if t.id == pid:
                return t.user_time + t.system_time
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return 0.0


def process_label(pid: int) -> str:
    """A short name for a process of a server's tree: `naiad.kernel.main`, `triton_python_backend_stub`."""
    try:
        cmd = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return str(pid)
    if not cmd:
        return str(pid)
    if "-m" in cmd[:3]:
        return cmd[cmd.index("-m") + 1]
    first = cmd[0].rsplit("/", 1)[-1]
    if first.startswith("python") and len(cmd) > 1:
        return cmd[1].rsplit("/", 1)[-1]
    return first


def split_by_process(a: CpuSample, b: CpuSample, root: int | None = None) -> dict[str, float]:
    """CPU seconds per process label between two samples (processes with one label summed).
    The `root` process is split into its main thread (naiad's Python event loop) and its
    other threads (naiad's native front ends and batch timers)."""
    out: dict[str, float] = {}
    for pid, t in (b.server_by_pid or {}).items():
        d = t - (a.server_by_pid or {}).get(pid, 0.0)
        label = process_label(pid)
        if pid == root:
            main = max(b.server_main_thread - a.server_main_thread, 0.0)
            out[f"{label} [main thread]"] = out.get(f"{label} [main thread]", 0.0) + main
            label = f"{label} [other threads]"
            d = max(d - main, 0.0)
        out[label] = out.get(label, 0.0) + d
    return out


def cpu_between(a: CpuSample, b: CpuSample, root: int | None = None) -> dict:
    """Cores used on average between two samples by the server, the client and everything else."""
    dt = max(b.at - a.at, 1e-9)
    server = b.server - a.server
    client = b.client - a.client
    system = b.system - a.system
    return {"span_s": dt, "server_cpu_s": server, "client_cpu_s": client, "system_cpu_s": system,
            "server_cores": server / dt, "client_cores": client / dt,
            "other_cores": max(system - server - client, 0.0) / dt,
            "server_cores_by_process": {k: v / dt for k, v in split_by_process(a, b, root).items()}}


def other_load(exclude_pids: list[int], seconds: float = 0.5) -> float:
    """Cores busy over `seconds` outside the given process trees (to wait for a quiet machine)."""
    seen = [dict() for _ in exclude_pids]
    s0 = system_busy() - sum(tree_cpu(p, s) for p, s in zip(exclude_pids, seen))
    time.sleep(seconds)
    s1 = system_busy() - sum(tree_cpu(p, s) for p, s in zip(exclude_pids, seen))
    return max(s1 - s0, 0.0) / seconds


def tree_memory(pid: int) -> dict:
    """RSS and PSS (MiB) summed over the tree, and how many processes it holds."""
    rss = pss = 0
    n = 0
    for p in tree(pid):
        try:
            m = p.memory_full_info()
            rss += m.rss
            pss += getattr(m, "pss", m.rss)
            n += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return {"rss_mib": rss / 2**20, "pss_mib": pss / 2**20, "processes": n}
