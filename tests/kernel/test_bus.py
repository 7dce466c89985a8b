"""The bus: request/reply (incl. failing handlers) and pub/sub with backpressure."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from naiad.kernel.bus import Bus, BusError, HandlerFailed, NoHandler
from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.loop import run
from naiad.kernel.messages import Event, Request


@dataclass(slots=True)
class Add(Request[int]):
    a: int
    b: int


@dataclass(slots=True)
class Fail(Request[None]):
    kind: str


@dataclass(slots=True)
class Tick(Event):
    n: int


@dataclass(slots=True)
class SpecialTick(Tick):
    pass


def test_request_reply_direct_await():
    bus = Bus()

    async def add(msg: Add) -> int:
        return msg.a + msg.b

    bus.handle(Add, add, owner="math")
    bus.freeze()

    async def main():
        assert await bus.request(Add(2, 3)) == 5
        assert await bus.requester(Add)(Add(1, 1)) == 2  # the handler itself
        # Many requests concurrently: each is a plain await, no task per request.
        before = len(asyncio.all_tasks())
        results = await asyncio.gather(*(bus.request(Add(i, i)) for i in range(100)))
        assert results == [2 * i for i in range(100)]
        assert len(asyncio.all_tasks()) <= before + 100

    run(main())


def test_failing_handler_passes_typed_errors_and_wraps_others():
    bus = Bus()

    async def fail(msg: Fail) -> None:
        if msg.kind == "typed":
            raise InferenceError.not_found("no such model")
        raise ZeroDivisionError("boom")

    bus.handle(Fail, fail)

    async def main():
        with pytest.raises(InferenceError) as info:
            await bus.call(Fail("typed"), expected=(InferenceError,))
        assert info.value.code is ErrorCode.NOT_FOUND
        with pytest.raises(HandlerFailed) as info2:
            await bus.call(Fail("bug"), expected=(InferenceError,))
        assert isinstance(info2.value.__cause__, ZeroDivisionError)
        assert "Fail" in str(info2.value) and "boom" in str(info2.value)
        # request() passes every exception through unchanged.
        with pytest.raises(ZeroDivisionError):
            await bus.request(Fail("bug"))
        # The bus still works after failures.
        with pytest.raises(NoHandler):
            await bus.request(Add(1, 2))

    run(main())


def test_registration_rules():
    bus = Bus()

    async def h(msg):
        return None

    bus.handle(Add, h, owner="a")
    with pytest.raises(BusError, match="already has a handler"):
        bus.handle(Add, h, owner="b")
    bus.freeze()
    with pytest.raises(BusError, match="frozen"):
        bus.handle(Fail, h)
    bus.drop_handlers("a")
    assert not bus.has_handler(Add)


def test_pubsub_fanout_and_subtypes():
    bus = Bus()
    all_ticks = bus.subscribe(Tick)
    special = bus.subscribe(SpecialTick)

    async def main():
        await bus.publish(Tick(1))
        await bus.publish(SpecialTick(2))
        assert [(await all_ticks.get()).n for _ in range(2)] == [1, 2]
        assert (await special.get()).n == 2
        assert len(special) == 0

    run(main())


def test_backpressure_blocks_publisher_until_consumed():
    bus = Bus()
    sub = bus.subscribe(Tick, maxsize=2)

    async def main():
        await bus.publish(Tick(1))
        await bus.publish(Tick(2))
        third = asyncio.ensure_future(bus.publish(Tick(3)))
        await asyncio.sleep(0.01)
        assert not third.done(), "publisher must wait while the subscriber is full"
        assert (await sub.get()).n == 1
        await asyncio.wait_for(third, 1)
        assert [(await sub.get()).n for _ in range(2)] == [2, 3]
        # publish_nowait never blocks: a full blocking subscriber misses the event, counted.
        await bus.publish(Tick(4))
        await bus.publish(Tick(5))
        assert bus.publish_nowait(Tick(6)) == 1
        assert sub.dropped == 1

    run(main())


def test_drop_oldest_subscription_never_blocks():
    bus = Bus()
    sub = bus.subscribe(Tick, maxsize=3, overflow="drop_oldest")

    async def main():
        for i in range(10):
            await asyncio.wait_for(bus.publish(Tick(i)), 0.5)
        assert sub.dropped == 7
        assert [(await sub.get()).n for _ in range(3)] == [7, 8, 9]

    run(main())


def test_close_ends_iteration():
    bus = Bus()
    sub = bus.subscribe(Tick)

    async def main():
        got = []

        async def consume():
            async for ev in sub:
                got.append(ev.n)

        task = asyncio.ensure_future(consume())
        await bus.publish(Tick(1))
        await asyncio.sleep(0.01)
        sub.close()
        await asyncio.wait_for(task, 1)
        assert got == [1]
        await bus.publish(Tick(2))  # no subscriber left: nothing blocks

    run(main())
