"""Queueing rules as Triton 24.04 applies them, through a real `naiad serve`: a priority
above `priority_levels` is served at the default level; a request's own timeout may
shorten the queue policy's default but never lengthen it (and without a default there is
no timeout at all); a sequence that waited for a free slot is not ended as idle the
moment it gets one."""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.models import DELAYED_IDENTITY_MODEL, identity_config, write_model


def _config(name: str, delay: float, extra: str, max_batch_size: int = 4) -> str:
    return identity_config(name, dims="[ 1 ]", max_batch_size=max_batch_size, extra=f'''
parameters [ {{ key: "delay" value: {{ string_value: "{delay}" }} }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
{extra}''')


PRIORITIES = 'dynamic_batching { priority_levels: 2 default_priority_level: 1 }'
SHORTEN = ('dynamic_batching { default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 1500000 '
           'allow_timeout_override: true } }')
NO_DEFAULT = 'dynamic_batching { default_queue_policy { timeout_action: REJECT allow_timeout_override: true } }'
# One slot (max_batch_size 1, one instance); a sequence idles out after 0.5 s.
ONE_SLOT = 'sequence_batching { max_sequence_idle_microseconds: 500000 }'


@pytest.fixture(scope="module")
def server(serve, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "priorities", _config("priorities", 0, PRIORITIES), DELAYED_IDENTITY_MODEL)
    write_model(repo, "shorten", _config("shorten", 0.6, SHORTEN), DELAYED_IDENTITY_MODEL)
    write_model(repo, "no_default", _config("no_default", 0.6, NO_DEFAULT), DELAYED_IDENTITY_MODEL)
    write_model(repo, "one_slot", _config("one_slot", 0.15, ONE_SLOT, max_batch_size=1), DELAYED_IDENTITY_MODEL)
    return serve(repo)


def _input(value: float = 1.0):
    t = httpclient.InferInput("INPUT0", [1, 1], "FP32")
    t.set_data_from_numpy(np.array([[value]], np.float32))
    return t


def test_a_priority_above_the_levels_is_served(server):
    client = httpclient.InferenceServerClient(server.http_address)
    result = client.infer("priorities", [_input(3.0)], priority=7)
    assert result.as_numpy("OUTPUT0").tolist() == [[3.0]]


def _behind_a_busy_instance(server, model: str, timeout_us: int):
    """Send one request that occupies the instance, then one with `timeout_us`; the
    second's outcome: its value, or the exception."""
    client = httpclient.InferenceServerClient(server.http_address, concurrency=2)
    holder = client.async_infer(model, [_input(1.0)])
    time.sleep(0.15)
    queued = client.async_infer(model, [_input(2.0)], timeout=timeout_us)
    try:
        return queued.get_result().as_numpy("OUTPUT0").tolist()
    except InferenceServerException as exc:
        return exc
    finally:
        holder.get_result()


def test_a_request_timeout_may_shorten_the_default(server):
    outcome = _behind_a_busy_instance(server, "shorten", 100_000)
    assert isinstance(outcome, InferenceServerException)
    assert outcome.message() == "Request timeout expired"


def test_a_request_timeout_may_not_lengthen_the_default(server):
    # The default (1.5 s) still applies, and the queued request is served well within it.
    assert _behind_a_busy_instance(server, "shorten", 10_000_000) == [[2.0]]


def test_without_a_default_timeout_a_request_timeout_does_not_apply(server):
    assert _behind_a_busy_instance(server, "no_default", 100_000) == [[2.0]]


def _step(client, seq: int, value: float, start: bool = False, end: bool = False) -> float:
    result = client.infer("one_slot", [_input(value)], sequence_id=seq, sequence_start=start, sequence_end=end)
    return float(result.as_numpy("OUTPUT0")[0, 0])


def test_a_sequence_that_waited_for_a_slot_starts_its_idle_clock_when_it_gets_one(server):
    first = httpclient.InferenceServerClient(server.http_address)
    assert _step(first, 1, 1.0, start=True) == 1.0
    # Sequence 2 starts now but waits in the backlog while sequence 1 keeps the only slot
    # for longer than the idle time.
    waiting: queue.Queue = queue.Queue()

    def second() -> None:
        client = httpclient.InferenceServerClient(server.http_address)
        try:
            waiting.put(_step(client, 2, 10.0, start=True))
            waiting.put(_step(client, 2, 11.0))  # right after its first response
            waiting.put(_step(client, 2, 12.0, end=True))
        except InferenceServerException as exc:
            waiting.put(exc)

    thread = threading.Thread(target=second)
    thread.start()
    for i in range(5):
        time.sleep(0.15)
        assert _step(first, 1, float(i)) == float(i)
    assert _step(first, 1, 9.0, end=True) == 9.0
    thread.join(20)
    got = [waiting.get(timeout=1) for _ in range(waiting.qsize())]
    assert got == [10.0, 11.0, 12.0]
