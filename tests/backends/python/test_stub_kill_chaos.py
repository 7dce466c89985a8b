"""SIGKILL of a Python stub under load, against a real `naiad serve` with tritonclient's
asyncio HTTP client: only the requests in that stub's batch fail (with Triton's "is not
healthy" words), the requests queued behind it and another model's are answered, and the
model is not ready until its new stub is up, less than a second later."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import textwrap
import threading
import time

import numpy as np
import tritonclient.http.aio as httpaio

from support.load import hammer, http_caller, write_identity
from support.models import write_model

BATCH = 4
# Answers with its stub's PID beside the echo, so the test knows which process to kill and
# when the new one serves; loading takes a moment (a real model's initialize does).
VICTIM_MODEL = '''
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(0.15)

    def execute(self, requests):
        time.sleep(0.02)
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT0", x), pb_utils.Tensor("PID", np.full_like(x, os.getpid()))]))
        return out
'''

VICTIM_CONFIG = f'''
name: "victim"
backend: "python"
max_batch_size: {BATCH}
dynamic_batching {{ }}
input [ {{ name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] }}, {{ name: "PID" data_type: TYPE_INT32 dims: [ 1 ] }} ]
'''


def _victim_caller(client: httpaio.InferenceServerClient, pids: list[tuple[float, int]]):
    async def call(value: int) -> int:
        x = httpaio.InferInput("INPUT0", [1, 1], "INT32")
        x.set_data_from_numpy(np.array([[value]], dtype=np.int32))
        result = await client.infer("victim", [x])
        pids.append((time.monotonic(), int(result.as_numpy("PID")[0, 0])))
        return int(result.as_numpy("OUTPUT0")[0, 0])

    return call


def _watch_readiness(port: int, since: float, out: dict, stop: threading.Event) -> threading.Thread:
    """Poll the model's readiness from `since`: when it was first seen not ready, and
    when ready again after that."""

    def go() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        while not stop.is_set() and time.monotonic() - since < 5:
            conn.request("GET", "/v2/models/victim/ready")
            reply = conn.getresponse()
            reply.read()
            now = time.monotonic()
            if reply.status != 200:
                out.setdefault("not_ready", now)
            elif "not_ready" in out:
                out["ready"] = now
                return
            time.sleep(0.002)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def test_sigkill_of_a_stub_fails_only_its_batch_and_the_model_is_back_within_a_second(naiad, tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "victim", textwrap.dedent(VICTIM_CONFIG), VICTIM_MODEL)
    write_identity(repo)
    proc = naiad(f"--model-repository={repo}")
    pids: list[tuple[float, int]] = []
    marks: dict[str, float] = {}
    readiness: dict[str, float] = {}

    async def run():
        client = httpaio.InferenceServerClient(proc.http_address, conn_limit=32)
        stop = asyncio.Event()

        async def chaos():
            await asyncio.sleep(0.8)
            victim = pids[-1][1]
            marks["pid"] = victim
            marks["kill"] = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            halt = threading.Event()
            watcher = _watch_readiness(proc.http_port, marks["kill"], readiness, halt)
            await asyncio.to_thread(watcher.join, 6)
            await asyncio.sleep(0.5)  # the new stub serves on
            halt.set()
            stop.set()

        try:
            victim, bystander, _ = await asyncio.gather(
                hammer(_victim_caller(client, pids), 4 * BATCH, stop.is_set),
                hammer(http_caller(client, "echo"), 4, stop.is_set),
                chaos())
        finally:
            await client.close()
        return victim, bystander

    victim, bystander = asyncio.run(run())
    kill = marks["kill"]
    new_pid_at = min((t for t, pid in pids if t > kill and pid != marks["pid"]), default=float("inf"))
    back = readiness.get("ready", float("inf")) - kill
    print(f"\nSIGKILL of a stub under load (c={4 * BATCH}, batches of {BATCH}): victim {victim.summary()}; "
          f"other model {bystander.summary()}; not ready {1000 * (readiness.get('not_ready', kill) - kill):.0f} ms "
          f"after the kill, ready again after {1000 * back:.0f} ms, first answer from the new stub after "
          f"{1000 * (new_pid_at - kill):.0f} ms")
    # Only the batch the stub was running fails, with Triton's words; the queue behind it is served.
    assert 1 <= len(victim.lost) <= BATCH, victim.lost
    assert all("Stub process 'victim_0_0' is not healthy." in e for e in victim.lost), victim.lost
    assert victim.wrong == 0 and victim.refused == 0
    assert bystander.lost == [] and bystander.wrong == 0
    # Not ready while the stub is down, back (and serving from a new stub) within a second.
    assert "not_ready" in readiness
    assert back < 1.0
    assert new_pid_at - kill < 1.0
    assert any(pid != marks["pid"] for _, pid in pids)
