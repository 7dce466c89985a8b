"""Chaos against a real `naiad serve` with real clients (tritonclient's asyncio HTTP and gRPC
clients, see support/load.py): SIGTERM under load loses no accepted request, SIGKILL of
the server leaves no stub and nothing in /dev/shm behind, and an overload at c=256 fails
nothing but explicit refusals. Each test prints what it saw."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import time

import psutil
import pytest
import tritonclient.grpc.aio as grpcaio
import tritonclient.http.aio as httpaio

from support.load import deadline, grpc_caller, hammer, http_caller, write_identity
from support.naiad_process import http_get

TWO_INSTANCES = "instance_group [ { count: 2 kind: KIND_CPU } ]\n"
EXIT_TIMEOUT = 4


def _clients(proc, protocol: str, concurrency: int):
    if protocol == "http":
        client = httpaio.InferenceServerClient(proc.http_address, conn_limit=concurrency)
        return client, http_caller(client, "echo")
    client = grpcaio.InferenceServerClient(proc.grpc_address)
    return client, grpc_caller(client, "echo")


def _log_time(logs: str, text: str, marks: dict[str, float]) -> float:
    """When the server logged `text` (its first line with it), as time.monotonic() here."""
    (line,) = [ln for ln in logs.splitlines() if text in ln][:1]
    stamp = datetime.datetime.strptime(f"{datetime.date.today().year}{line[1:21]}", "%Y%m%d %H:%M:%S.%f")
    return stamp.timestamp() - marks["signal_wall"] + marks["signal"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sigterm_under_load_loses_no_accepted_request(naiad, tmp_path, protocol):
    repo = tmp_path / "models"
    # 20 ms of work a request: requests are queued and running in the server at the signal.
    write_identity(repo, extra=TWO_INSTANCES, delay=0.02)
    proc = naiad(f"--model-repository={repo}", f"--exit-timeout-secs={EXIT_TIMEOUT}")
    marks: dict[str, float] = {}

    async def run():
        client, call = _clients(proc, protocol, 8)
        exited = asyncio.Event()

        async def chaos():
            await asyncio.sleep(1.0)
            marks["signal"], marks["signal_wall"] = time.monotonic(), time.time()
            proc.signal(signal.SIGTERM)
            marks["code"], marks["exit"] = await asyncio.to_thread(lambda: (proc.wait(30), time.monotonic()))
            await asyncio.sleep(0.3)  # callers meet the closed server for a moment
            exited.set()

        try:
            tally, _ = await asyncio.gather(hammer(call, 8, exited.is_set), chaos())
        finally:
            await client.close()
        return tally

    tally = asyncio.run(run())
    after = tally.ok_after(marks["signal"])
    print(f"\nSIGTERM under load at c=8 over {protocol}: {tally.summary()}, {after} answered after the "
          f"signal, exit {marks['code']} after {marks['exit'] - marks['signal']:.2f}s")
    for sent, ended in tally.lost_at:
        print(f"  lost: sent {sent - marks['signal']:+.3f}s, ended {ended - marks['signal']:+.3f}s from the signal")
    # Calls sent once the server took no more work (it was draining) cannot be accepted ones:
    # a keep-alive connection closed at the end under a request just sent (HTTP), gRPC core
    # cancelling calls that reach it after its Shutdown began, before their client saw the
    # GOAWAY. Every call sent before may end only in its answer or a refusal.
    draining = _log_time(proc.logs(), "Waiting for in-flight requests to complete.", marks)
    accepted_lost = tally.lost_sent_before(draining)
    print(f"  draining from {draining - marks['signal']:+.3f}s; lost calls sent before: {len(accepted_lost)}")
    assert accepted_lost == [] and tally.wrong == 0
    # Drained (0), or the busy keep-alive connections held the drain to its deadline and the
    # requests still running then were answered 503 "Server exiting: ..." (1): never longer.
    assert marks["code"] in (0, 1), proc.logs()
    assert marks["exit"] - marks["signal"] < EXIT_TIMEOUT + 2, proc.logs()[-3000:]
    assert tally.ok > 0
    assert after >= 1  # what was in flight at the signal was answered
    assert tally.refused >= 1  # and the callers were refused once it stopped taking work


def _naiad_shm(pids: list[int]) -> set[str]:
    """/dev/shm files these processes map (naiad's own memory is memfd: none expected)."""
    found = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as maps:
                found |= {line.split(None, 5)[5].strip() for line in maps if "/dev/shm/" in line}
        except OSError:
            pass
    return found


def _wait_gone(pids: list[int], timeout: float) -> tuple[list[int], float]:
    """Wait up to `timeout` for the processes to be gone (a zombie is gone): (the living,
    when the last was seen gone)."""
    end = time.monotonic() + timeout
    alive = [pid for pid in pids if _running(pid)]
    while alive and time.monotonic() < end:
        time.sleep(0.002)
        alive = [pid for pid in alive if _running(pid)]
    return alive, time.monotonic()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigkill_of_the_server_leaves_no_stub_and_nothing_in_dev_shm(naiad, tmp_path):
    repo = tmp_path / "models"
    write_identity(repo, extra=TWO_INSTANCES, delay=0.005)  # the stubs are busy at the kill
    shm_before = set(os.listdir("/dev/shm"))
    proc = naiad(f"--model-repository={repo}")
    marks: dict[str, float] = {}

    async def run():
        client, call = _clients(proc, "http", 8)
        stop = asyncio.Event()

        async def chaos():
            await asyncio.sleep(0.7)  # the stubs are busy in execute
            marks["stubs"] = [p.pid for p in psutil.Process(proc.proc.pid).children(recursive=True)]
            marks["mapped"] = _naiad_shm([proc.proc.pid, *marks["stubs"]])
            marks["kill"] = time.monotonic()
            proc.signal(signal.SIGKILL)
            marks["alive"], marks["gone"] = await asyncio.to_thread(_wait_gone, marks["stubs"], 1.0)
            await asyncio.to_thread(proc.wait, 10)
            stop.set()

        try:
            tally, _ = await asyncio.gather(hammer(call, 8, stop.is_set), chaos())
        finally:
            await client.close()
        return tally

    tally = asyncio.run(run())
    alive = marks["alive"]
    gone_after = marks["gone"] - marks["kill"]
    new_shm = {name for name in set(os.listdir("/dev/shm")) - shm_before if "naiad" in name}
    print(f"\nSIGKILL of the server under load: {len(marks['stubs'])} stub(s), all gone "
          f"{gone_after * 1000:.0f} ms after the kill; /dev/shm files mapped {sorted(marks['mapped'])}, "
          f"left {sorted(new_shm)}; load before the kill: {tally.summary()}")
    assert len(marks["stubs"]) >= 2  # two instances (and the spare)
    assert alive == []
    assert marks["mapped"] == set() and new_shm == set()
    assert tally.ok > 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_overload_at_c256_fails_nothing_but_refusals(naiad, tmp_path, protocol):
    repo = tmp_path / "models"
    write_identity(repo)
    proc = naiad(f"--model-repository={repo}")

    async def run():
        client, call = _clients(proc, protocol, 256)
        try:
            loaded = await hammer(call, 256, deadline(3.0))
            after = await hammer(call, 1, deadline(0.3))  # and it still answers
        finally:
            await client.close()
        return loaded, after

    loaded, after = asyncio.run(run())
    print(f"\noverload c=256 over {protocol} for 3 s: {loaded.summary()} ({loaded.ok / 3:.0f}/s); "
          f"after: {after.summary()}")
    assert loaded.lost == [] and loaded.wrong == 0
    assert loaded.ok > 256
    assert after.ok > 0 and after.lost == [] and after.refused == 0
    assert http_get(proc.url + "/v2/health/ready")[0] == 200
