"""The rate limiter's pure logic: resource counts (defaults, explicit, per device,
global), admission when resources free up, and priority as a share of turns."""

from __future__ import annotations

import asyncio

import pytest

from naiad.kernel.inference.errors import InferenceError
from naiad.protos import model_config_pb2 as mc
from naiad.services.models.rate_limiter import RateLimiter, parse_resource


def _rl(priority: int = 0, **resources) -> mc.ModelRateLimiter:
    rl = mc.ModelRateLimiter(priority=priority)
    for name, count in resources.items():
        r = rl.resources.add(name=name.lstrip("_"), count=count)
        if name.startswith("_"):
            setattr(r, "global", True)
    return rl


def test_parse_resource():
    assert parse_resource("R1:4") == ("R1", 4, None)
    assert parse_resource("R2:5:1") == ("R2", 5, 1)
    for bad in ("R1", "R1:x", ":3", "R1:2:z", "R1:-1"):
        with pytest.raises(ValueError):
            parse_resource(bad)


def test_default_counts_are_the_largest_requirement_per_device_and_global():
    lim = RateLimiter()
    lim.register("a", _rl(R1=4, R2=4), 0)
    lim.register("b", _rl(R2=5, _G=2), 0)
    lim.register("c", _rl(R1=1, _G=3), 1)
    assert lim.capacity(("R1", 0)) == 4 and lim.capacity(("R2", 0)) == 5
    assert lim.capacity(("R1", 1)) == 1 and lim.capacity(("G", "global")) == 3


def test_explicit_count_below_a_requirement_fails_with_tritons_message():
    lim = RateLimiter(["R1:3", "R2:8:1"])
    with pytest.raises(InferenceError, match='Resource count for "R1" is limited to 3 which will prevent scheduling '
                                             'of one or more model instances, the minimum required count is 4'):
        lim.register("a", _rl(R1=4), 0)
    gate = lim.register("b", _rl(R2=6), 1)  # device 1 has 8
    assert lim.capacity(("R2", 1)) == 8 and gate.needs == [(("R2", 1), 6)]


def test_waiters_are_admitted_as_resources_free_up():
    async def main():
        lim = RateLimiter(["R:2"])
        gates = [lim.register(f"i{i}", _rl(R=1), 0) for i in range(3)]
        await gates[0].acquire()
        await gates[1].acquire()
        third = asyncio.ensure_future(gates[2].acquire())
        await asyncio.sleep(0.01)
        assert not third.done() and lim.waiting == 1
        gates[0].release()
        await asyncio.wait_for(third, 1)
        assert lim.in_use[("R", 0)] == 2
        gates[1].release()
        gates[2].release()
        assert lim.in_use[("R", 0)] == 0

    asyncio.run(main())


def test_an_instance_without_resources_is_never_held_back():
    async def main():
        lim = RateLimiter(["R:1"])
        busy = lim.register("busy", _rl(R=1), 0)
        free = lim.register("free", _rl(), 0)
        await busy.acquire()
        await asyncio.wait_for(free.acquire(), 0.5)

    asyncio.run(main())


def test_priority_two_gets_half_the_turns_of_priority_one():
    async def main():
        lim = RateLimiter(["R:1"])
        fast = lim.register("fast", _rl(priority=1, R=1), 0)
        slow = lim.register("slow", _rl(priority=2, R=1), 0)
        turns: list[str] = []

        async def worker(name, gate):
            # Like a scheduler worker with a backlog: execute, release, ask again at once.
            while len(turns) < 60:
                await gate.acquire()
                turns.append(name)
                await asyncio.sleep(0)
                gate.release()

        await asyncio.wait_for(asyncio.gather(worker("fast", fast), worker("slow", slow)), 5)
        share = turns[:60].count("fast") / 60
        assert 0.6 <= share <= 0.72, turns

    asyncio.run(main())


def test_a_cancelled_waiter_leaves_the_queue():
    async def main():
        lim = RateLimiter(["R:1"])
        a, b = lim.register("a", _rl(R=1), 0), lim.register("b", _rl(R=1), 0)
        await a.acquire()
        waiting = asyncio.ensure_future(b.acquire())
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert lim.waiting == 0
        a.release()
        assert lim.in_use[("R", 0)] == 0

    asyncio.run(main())
