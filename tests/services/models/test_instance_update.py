"""A reload that changes only `instance_group` updates the serving version in place, as
Triton 24.04 does: instances are created or finalised one by one, kept ones never
re-initialise, in-flight requests finish, a bad new config leaves the old one serving, and
sequences keep their instance until they end. Real server, explicit model control,
tritonclient; the model logs every initialize / finalize with its pid to a file."""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.models import write_model

NAME = "counted"

# Logs "<event> <instance name> <pid>" lines to $EVENTS; sleeps $DELAY_FILE seconds per
# execute; fails initialize while $FAIL_FILE exists; answers each request with its pid.
COUNTED_MODEL = '''
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _log(event, name):
    with open(os.environ["EVENTS"], "a") as f:
        f.write(f"{event} {name} {os.getpid()}\\n")


def _delay():
    try:
        with open(os.environ["DELAY_FILE"]) as f:
            return float(f.read() or 0)
    except FileNotFoundError:
        return 0.0


class TritonPythonModel:
    def initialize(self, args):
        if os.path.exists(os.environ["FAIL_FILE"]):
            raise RuntimeError("initialize refused by the test")
        self.name = args["model_instance_name"]
        _log("initialize", self.name)

    def execute(self, requests):
        time.sleep(_delay())
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT0", x),
                pb_utils.Tensor("PID", np.array([os.getpid()], np.int64))]))
        return out

    def finalize(self):
        _log("finalize", self.name)
'''


def _config(instance_group: str, extra: str = "") -> str:
    return f'''
name: "{NAME}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }},
         {{ name: "PID" data_type: TYPE_INT64 dims: [ 1 ] }} ]
instance_group [ {instance_group} ]
{extra}
'''


def _cpu(count: int) -> str:
    return f"{{ count: {count} kind: KIND_CPU }}"


class Setup:
    def __init__(self, naiad, tmp_path: Path, *flags: str) -> None:
        self.repo = tmp_path / "repo"
        self.events = tmp_path / "events.log"
        self.delay = tmp_path / "delay"
        self.fail = tmp_path / "fail"
        self.model_dir = write_model(self.repo, NAME, _config(_cpu(1)), COUNTED_MODEL)
        self.proc = naiad("--model-repository", str(self.repo), *(flags or ["--model-control-mode=explicit"]),
                          env={"EVENTS": str(self.events), "DELAY_FILE": str(self.delay),
                               "FAIL_FILE": str(self.fail)})
        self.http = httpclient.InferenceServerClient(self.proc.http_address)
        self.grpc = grpcclient.InferenceServerClient(self.proc.grpc_address)

    def write_config(self, instance_group: str, extra: str = "") -> None:
        (self.model_dir / "config.pbtxt").write_text(_config(instance_group, extra))

    def reload(self, instance_group: str, extra: str = "") -> None:
        self.write_config(instance_group, extra)
        self.http.load_model(NAME)

    def events_of(self, kind: str) -> list[tuple[str, int]]:
        if not self.events.exists():
            return []
        rows = [line.split() for line in self.events.read_text().splitlines()]
        return [(name, int(pid)) for event, name, pid in rows if event == kind]

    def wait_events(self, kind: str, count: int, timeout: float = 20.0) -> list[tuple[str, int]]:
        deadline = time.monotonic() + timeout
        while len(self.events_of(kind)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.events_of(kind)

    def infer(self, **kwargs) -> int:
        """One request over gRPC; the pid of the instance that ran it."""
        inp = grpcclient.InferInput("INPUT0", [2], "FP32")
        inp.set_data_from_numpy(np.array([1.0, 2.0], np.float32))
        result = self.grpc.infer(NAME, [inp], **kwargs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [1.0, 2.0])
        return int(result.as_numpy("PID")[0])

    def pids_serving(self, rounds: int = 24) -> set[int]:
        """The instances that answer concurrent requests (each blocks a moment, so that
        every instance gets some)."""
        self.delay.write_text("0.05")
        try:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                return set(pool.map(lambda _: self.infer(), range(rounds)))
        finally:
            self.delay.write_text("0")

    def instance_count(self) -> int:
        groups = self.http.get_model_config(NAME)["instance_group"]
        return sum(int(g["count"]) for g in groups)


@pytest.fixture
def setup(naiad, tmp_path, request):
    s = Setup(naiad, tmp_path, *getattr(request, "param", ()))
    yield s
    s.grpc.close()


# With the rate limiter on, instances are wrapped: added ones get their own gate.
@pytest.mark.parametrize("setup", [(), ("--model-control-mode=explicit", "--rate-limit=execution_count")],
                         indirect=True, ids=["plain", "rate-limited"])
def test_count_up_and_down_creates_and_finalises_only_the_changed_instances(setup):
    setup.http.load_model(NAME)
    assert len(setup.events_of("initialize")) == 1
    first = setup.infer()

    setup.reload(_cpu(3))  # 1 -> 3: two created, the first keeps serving as it was
    inits = setup.events_of("initialize")
    assert len(inits) == 3 and setup.events_of("finalize") == []
    assert [pid for _, pid in inits].count(first) == 1  # never initialised again
    serving = setup.pids_serving()
    assert serving == {pid for _, pid in inits} and first in serving
    assert setup.instance_count() == 3

    setup.reload(_cpu(1))  # 3 -> 1: two finalised, the one left is not re-initialised
    finals = setup.events_of("finalize")
    assert len(finals) == 2 and len(setup.events_of("initialize")) == 3
    left = setup.pids_serving(8)
    assert len(left) == 1 and left <= serving and not left & {pid for _, pid in finals}
    assert setup.instance_count() == 1

    setup.reload(_cpu(1))  # nothing changed: nothing happens
    assert len(setup.events_of("initialize")) == 3 and len(setup.events_of("finalize")) == 2

    setup.http.unload_model(NAME)
    assert len(setup.wait_events("finalize", 3)) == 3
    with pytest.raises(InferenceServerException):
        setup.infer()
    assert setup.proc.stop() == 0


def test_load_with_config_json_updates_in_place(setup):
    setup.http.load_model(NAME)
    config = setup.http.get_model_config(NAME)
    config["instance_group"][0]["count"] = 2
    setup.http.load_model(NAME, config=json.dumps(config))
    assert len(setup.events_of("initialize")) == 2 and setup.events_of("finalize") == []
    assert setup.instance_count() == 2
    assert setup.proc.stop() == 0


def test_in_flight_requests_finish_while_instances_change(setup):
    setup.reload(_cpu(2))
    setup.delay.write_text("1.5")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        running = [pool.submit(setup.infer) for _ in range(2)]
        time.sleep(0.5)  # both instances are executing
        setup.reload(_cpu(3))  # adding does not wait for the running requests
        assert not any(f.done() for f in running)
        setup.reload(_cpu(1))  # removing lets the removed instances' requests finish first
        assert len(setup.events_of("finalize")) == 2
        pids = {f.result(timeout=10) for f in running}
    # They ran on the two first instances, the ones 3 -> 1 removed (the newest is kept).
    assert len(pids) == 2 and pids == {pid for _, pid in setup.events_of("finalize")}
    assert len(setup.events_of("initialize")) == 3
    setup.delay.write_text("0")
    setup.infer()
    assert setup.proc.stop() == 0


def test_invalid_new_config_leaves_the_old_version_serving(setup):
    setup.reload(_cpu(2))
    before = setup.pids_serving()
    (setup.model_dir / "config.pbtxt").write_text(_config(_cpu(2)).replace("instance_group [", "instance_group [ ---"))
    with pytest.raises(InferenceServerException) as info:
        setup.http.load_model(NAME)
    assert f"failed to load '{NAME}', failed to poll from model repository" in str(info.value)
    assert "Poll failed for model directory 'counted'" in setup.proc.logs()
    assert setup.http.is_model_ready(NAME) and setup.pids_serving() == before

    setup.fail.write_text("")  # a new instance fails to initialise: nothing changes
    with pytest.raises(InferenceServerException, match="initialize refused by the test"):
        setup.reload(_cpu(4))
    setup.fail.unlink()
    assert setup.http.is_model_ready(NAME) and setup.pids_serving() == before
    assert len(setup.events_of("initialize")) == 2 and setup.events_of("finalize") == []
    assert setup.instance_count() == 2

    setup.reload(_cpu(1))  # and a good config applies afterwards
    assert len(setup.events_of("finalize")) == 1
    assert setup.proc.stop() == 0


def test_other_changes_reload_every_instance(setup):
    setup.reload(_cpu(2))
    # A changed model file: a full reload, as Triton (every instance is new).
    with open(setup.model_dir / "1" / "model.py", "a") as f:
        f.write("\n# changed\n")
    setup.reload(_cpu(3))
    assert len(setup.events_of("initialize")) == 5
    assert len(setup.wait_events("finalize", 2)) == 2
    # A change outside instance_group: a full reload too.
    setup.reload(_cpu(3), 'parameters { key: "k" value: { string_value: "v" } }')
    assert len(setup.events_of("initialize")) == 8
    assert len(setup.wait_events("finalize", 5)) == 5
    assert setup.proc.stop() == 0


@pytest.mark.parametrize("strategy", ["direct { }", "oldest { max_candidate_sequences: 4 }"])
def test_sequences_keep_a_removed_instance_until_they_end(setup, strategy):
    batching = f"sequence_batching {{ {strategy} max_sequence_idle_microseconds: 30000000 }}"
    setup.reload(_cpu(3), batching)
    assert len(setup.events_of("initialize")) == 3
    one = setup.infer(sequence_id=1, sequence_start=True)
    two = setup.infer(sequence_id=2, sequence_start=True)
    assert one != two

    # 3 -> 1: the instance left is the free one; the two holding sequences are removed
    # but live on until their sequences end.
    setup.reload(_cpu(1), batching)
    assert len(setup.events_of("initialize")) == 3 and setup.events_of("finalize") == []
    assert setup.infer(sequence_id=1) == one and setup.infer(sequence_id=2) == two
    three = setup.infer(sequence_id=3, sequence_start=True)
    assert three not in (one, two)
    assert setup.events_of("finalize") == []
    # 1 -> 2: an instance on its way out is never taken back; a new one is made.
    setup.reload(_cpu(2), batching)
    assert len(setup.events_of("initialize")) == 4 and setup.events_of("finalize") == []

    assert setup.infer(sequence_id=1, sequence_end=True) == one
    finals = setup.wait_events("finalize", 1)
    assert [pid for _, pid in finals] == [one]
    assert setup.infer(sequence_id=2, sequence_end=True) == two
    finals = setup.wait_events("finalize", 2)
    assert sorted(pid for _, pid in finals) == sorted([one, two])
    # New sequences go to the instance left.
    assert setup.infer(sequence_id=3, sequence_end=True) == three
    assert setup.infer(sequence_id=4, sequence_start=True, sequence_end=True) == three

    setup.http.unload_model(NAME)
    assert len(setup.wait_events("finalize", 4)) == 4
    assert setup.proc.stop() == 0


@pytest.mark.parametrize("setup", [("--model-control-mode=poll", "--repository-poll-secs=1")], indirect=True)
def test_poll_mode_applies_an_instance_group_change_in_place(setup):
    assert len(setup.wait_events("initialize", 1)) == 1
    first = setup.infer()
    setup.write_config(_cpu(2))
    inits = setup.wait_events("initialize", 2)
    assert len(inits) == 2 and setup.events_of("finalize") == []
    deadline = time.monotonic() + 20
    while setup.instance_count() != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first in setup.pids_serving()
    assert setup.proc.stop() == 0


@pytest.mark.parametrize("setup", [("--model-control-mode=explicit", "--rate-limit=execution_count",
                                    "--log-verbose=1")], indirect=True)
def test_lower_resource_need_lowers_the_rate_limiter_capacity(setup):
    """As Triton's L0_model_update test_instance_resource_decrease: without an explicit count,
    a resource's capacity follows the largest need, and Triton's verbose resource map says so."""
    def group(count: int) -> str:
        return f'{{ count: 1 kind: KIND_CPU rate_limiter {{ resources [ {{ name: "R1" count: {count} }} ] }} }}'
    setup.reload(group(4))
    setup.infer()
    setup.reload(group(3))
    setup.infer()
    setup.http.unload_model(NAME)
    assert setup.wait_events("finalize", 1)
    log = setup.proc.logs()
    assert "Max Resource Map===>\n\tDevice: 0\n\t\tResource: R1\t Count: 4\n" in log
    assert "Max Resource Map===>\n\tDevice: 0\n\t\tResource: R1\t Count: 3\n" in log
