"""The batch queue: the native one (naiad.ext._batcher) and its Python twin decide alike.

Random workloads (priorities, shapes, batch sizes, queue limits, idle workers) go into
both; every pump must give the same batches and the same rejections. Then the native
timer thread on its own: a delayed batch and a queue timeout become ready with no call
from Python, signalled once on the eventfd.
"""

from __future__ import annotations

import random
import select
import time

import pytest

from naiad.ext import batcher, batcher_py

needs_native = pytest.mark.skipif(not batcher.NATIVE, reason="naiad.ext._batcher is not built")

REJECT, DELAY = True, False


def _both(*args):
    return batcher.NativeBatchQueue(*args), batcher_py.BatchQueue(*args)


def _random_config(rng: random.Random):
    levels = rng.choice([1, 1, 2, 3])
    default_level = rng.randint(1, levels)
    max_batch = rng.choice([1, 2, 4, 8, 16])
    preferred = sorted(rng.sample(range(1, max_batch + 1), k=min(max_batch, rng.randint(0, 2))))
    policies = [(rng.random() < 0.5, 0, rng.random() < 0.5, rng.choice([0, 0, 3, 10])) for _ in range(levels)]
    dynamic = rng.random() < 0.85
    delay_ns = rng.choice([0, 10**10])  # none, or one far beyond the test: only full batches or 2 idle go
    return dynamic, max_batch, preferred, delay_ns, levels, default_level, policies


@needs_native
@pytest.mark.parametrize("seed", range(40))
def test_native_and_twin_form_the_same_batches(seed):
    rng = random.Random(seed)
    config = _random_config(rng)
    native, twin = _both(*config)
    max_batch = config[1]
    handle = 0
    formed = 0
    for _ in range(60):
        for _ in range(rng.randint(0, 6)):
            args = (handle, rng.randint(0, config[4] + 1), rng.choice([0, 10**9]), rng.randint(1, max_batch),
                    rng.choice([1, 1, 1, 2]), time.monotonic_ns())
            assert native.push(*args) == twin.push(*args), args
            handle += 1
        assert native.size == twin.size
        idle = rng.randint(0, 3)
        got = native.pump(idle)
        assert got == twin.pump(idle)
        batches, expired = got
        assert not expired  # no timeouts in these configs
        assert len(batches) <= idle
        formed += len(batches)
        for b in batches:
            assert b  # never an empty batch
    assert native.take_all() == twin.take_all()
    assert native.size == twin.size == 0
    assert formed > 0
    native.stop()


@needs_native
def test_priority_levels_then_delayed_then_fifo():
    # Two levels (REJECT on 1, DELAY on 2); level 2's request times out at once into the delayed queue.
    native, twin = _both(True, 8, [], 0, 2, 1, [(REJECT, 0, False, 0), (DELAY, 1, False, 0)])
    for q in (native, twin):
        t = time.monotonic_ns()
        q.push(0, 2, 0, 1, 5, t)   # level 2, times out after 1 µs -> delayed
        q.push(1, 1, 0, 1, 5, t)   # level 1
        q.push(2, 2, 0, 1, 6, t)   # level 2, another shape
        q.push(3, 0, 0, 1, 5, t)   # default level (1)
    time.sleep(0.001)
    for q in (native, twin):
        # level 1 [1, 3], then the delayed [0, 2] (both of level 2 timed out): one batch
        # while the shape holds
        assert q.pump(1) == ([[1, 3, 0]], [])
        assert q.pump(3) == ([[2]], [])
    native.stop()


@needs_native
def test_full_level_refuses_and_reject_timeout_is_reported():
    native, twin = _both(True, 4, [], 0, 1, 1, [(REJECT, 0, True, 2)])
    for q in (native, twin):
        t = time.monotonic_ns()
        assert q.push(0, 0, 1, 1, 1, t)   # own timeout 1 µs, but no default: no timeout
        assert q.push(1, 0, 0, 1, 1, t)
        assert not q.push(2, 0, 0, 1, 1, t)  # max_queue_size 2
        assert q.size == 2
        assert q.take_all() == [0, 1]
    native.stop()


@needs_native
def test_native_timer_fires_a_delayed_batch_and_signals_once():
    q = batcher.NativeBatchQueue(True, 8, [], 50_000_000, 1, 1, [(REJECT, 0, False, 0)])  # 50 ms delay
    fd = q.fileno()
    assert fd >= 0
    t0 = time.monotonic_ns()
    for h in range(3):
        q.push(h, 0, 0, 1, 1, t0)
    assert q.pump(1) == ([], [])  # not final: waits for the delay
    readable, _, _ = select.select([fd], [], [], 1.0)
    waited = (time.monotonic_ns() - t0) / 1e6
    assert readable == [fd]
    assert waited >= 50  # not before the delay (a loaded box may wake it late)
    assert q.wants == 0  # the timer formed the batch for the idle worker itself
    assert q.pump(0) == ([[0, 1, 2]], [])
    assert select.select([fd], [], [], 0.05)[0] == []  # the wake-up was consumed with the batch
    q.stop()


@needs_native
def test_native_timer_rejects_at_the_deadline_while_workers_are_busy():
    q = batcher.NativeBatchQueue(True, 8, [], 0, 1, 1, [(REJECT, 30_000, True, 0)])  # 30 ms default
    fd = q.fileno()
    t0 = time.monotonic_ns()
    q.push(0, 0, 0, 1, 1, t0)
    q.push(1, 0, 10_000, 1, 1, t0)  # its own 10 ms shortens the default
    rounds = []
    while q.size:
        assert select.select([fd], [], [], 2.0)[0] == [fd]
        rounds.append(((time.monotonic_ns() - t0) / 1e6, q.pump(0)))
    first_ms, (batches, expired) = rounds[0]
    assert first_ms >= 10  # never before the deadline (a loaded box may wake it late, not early)
    assert batches == [] and 1 in expired  # the shortened one goes first (with the other if woken late)
    assert sorted(h for _, (_, e) in rounds for h in e) == [0, 1]
    if len(rounds) == 2:  # woken in time for each deadline: the other no sooner than 30 ms
        assert expired == [1] and rounds[1][0] >= 30
    q.stop()


def test_twin_without_timers_has_no_fd_and_bad_levels_are_refused():
    q = batcher_py.BatchQueue(True, 4, [], 0, 1, 1, [(REJECT, 0, False, 0)])
    assert q.fileno() == -1
    for cls in filter(None, (batcher.NativeBatchQueue, batcher_py.BatchQueue)):
        with pytest.raises(ValueError, match="outside"):
            cls(True, 4, [], 0, 2, 3, [(REJECT, 0, False, 0)] * 2)
        with pytest.raises(ValueError, match="one policy per level"):
            cls(True, 4, [], 0, 2, 1, [(REJECT, 0, False, 0)])


@needs_native
def test_stop_joins_the_timer_thread():
    q = batcher.NativeBatchQueue(True, 8, [], 10**9, 1, 1, [(REJECT, 0, False, 0)])
    q.push(0, 0, 0, 1, 1, time.monotonic_ns())
    q.pump(1)  # the timer now sleeps for a second
    t0 = time.monotonic()
    q.stop()
    assert time.monotonic() - t0 < 0.5
    q.stop()  # twice is fine
    assert q.fileno() == -1
