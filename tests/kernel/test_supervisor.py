"""The supervisor: dependency order, restart with backoff, budget, give-up, start failures."""

from __future__ import annotations

import asyncio
import logging

import pytest

from naiad.kernel.config import from_table
from naiad.kernel.kernel import EXIT_FAILED, Kernel
from naiad.kernel.loop import run
from naiad.kernel.service import Service, ServiceContext, ServiceState
from naiad.kernel.supervisor import DependencyError, RestartPolicy, StartupError, Supervisor, dependency_order
from naiad.kernel.bus import Bus
from naiad.kernel.lifecycle import Lifecycle

FAST = RestartPolicy(max_restarts=3, window_secs=30, backoff_initial=0.01, backoff_max=0.02)
EVENTS: list[str] = []


def _ctx(bus: Bus) -> ServiceContext:
    return ServiceContext(bus, from_table({"services": {"http": {"enabled": False}}}), Lifecycle(),
                          logging.getLogger("naiad.test"))


class Recorder(Service):
    requires: tuple[str, ...] = ()

    async def start(self) -> None:
        EVENTS.append(f"start {self.name}")

    async def stop(self) -> None:
        EVENTS.append(f"stop {self.name}")


def make(name, requires=(), cls=Recorder, bus=None, essential=True):
    bus = bus or Bus()
    svc = type(f"S_{name}", (cls,), {"requires": tuple(requires), "essential": essential})(name, None, _ctx(bus))
    return svc


def test_dependency_order_and_reverse_stop():
    EVENTS.clear()
    bus = Bus()
    services = {n: make(n, r, bus=bus) for n, r in [("http", ["models"]), ("metrics", ["models"]), ("models", [])]}
    sup = Supervisor(services, bus, FAST)

    async def main():
        await sup.start_all()
        await sup.stop_all()

    run(main())
    assert EVENTS[0] == "start models"
    assert EVENTS[:3].index("start models") == 0
    assert EVENTS[3:] == ["stop metrics", "stop http", "stop models"]


def test_missing_dependency_and_cycle_are_errors():
    bus = Bus()
    with pytest.raises(DependencyError, match="requires service 'models'"):
        dependency_order({"http": make("http", ["models"], bus=bus)})
    with pytest.raises(DependencyError, match="cycle"):
        dependency_order({"a": make("a", ["b"], bus=bus), "b": make("b", ["a"], bus=bus)})


class Crashy(Service):
    """Crashes `crashes` times (a background task raising), then runs."""

    crashes = 2
    starts = 0

    async def start(self) -> None:
        type(self).starts += 1
        if type(self).starts <= type(self).crashes:
            self.spawn(self._boom(), "boom")

    async def _boom(self) -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError(f"crash #{type(self).starts}")


def test_crashed_service_is_restarted_within_budget(caplog):
    bus = Bus()
    cls = type("C1", (Crashy,), {"crashes": 2, "starts": 0})
    svc = cls("worker", None, _ctx(bus))
    gave_up = []
    sup = Supervisor({"worker": svc}, bus, FAST, on_give_up=lambda s, why: gave_up.append(why))

    async def main():
        await sup.start_all()
        for _ in range(200):
            if cls.starts >= 3 and svc.state is ServiceState.RUNNING:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        await sup.stop_all()

    with caplog.at_level(logging.WARNING, logger="naiad"):
        run(main())
    assert cls.starts == 3
    assert gave_up == []
    crash_logs = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert len(crash_logs) == 2 and "RuntimeError: crash #1" in crash_logs[0].getMessage()
    assert any("restarted" in r.getMessage() for r in caplog.records)


def test_crash_loop_gives_up_and_stops_server():
    bus = Bus()
    cls = type("C2", (Crashy,), {"crashes": 100, "starts": 0})
    svc = cls("worker", None, _ctx(bus))
    gave_up = []
    sup = Supervisor({"worker": svc}, bus, FAST, on_give_up=lambda s, why: gave_up.append(why))

    async def main():
        await sup.start_all()
        for _ in range(300):
            if gave_up:
                break
            await asyncio.sleep(0.01)
        await sup.stop_all()

    run(main())
    assert gave_up and "crashed 3 times within 30s" in gave_up[0]
    assert cls.starts == 4  # first start + 3 restarts
    assert svc.state in (ServiceState.FAILED, ServiceState.STOPPED)


def test_non_essential_crash_loop_does_not_stop_server():
    bus = Bus()
    cls = type("C3", (Crashy,), {"crashes": 100, "starts": 0, "essential": False})
    svc = cls("extra", None, _ctx(bus))
    gave_up = []
    sup = Supervisor({"extra": svc}, bus, FAST, on_give_up=lambda s, why: gave_up.append(why))

    async def main():
        await sup.start_all()
        for _ in range(300):
            if svc.state is ServiceState.FAILED:
                break
            await asyncio.sleep(0.01)
        await sup.stop_all()

    run(main())
    assert gave_up == []
    assert cls.starts == 4


class FailsToStart(Service):
    async def start(self) -> None:
        raise OSError("port in use")


def test_essential_start_failure_is_a_startup_error_non_essential_is_skipped():
    bus = Bus()
    bad = type("F1", (FailsToStart,), {"essential": True})("bad", None, _ctx(bus))
    with pytest.raises(StartupError, match="service 'bad' failed to start: OSError: port in use"):
        run(Supervisor({"bad": bad}, bus, FAST).start_all())

    bus2 = Bus()
    ok = make("ok", bus=bus2)
    meh = type("F2", (FailsToStart,), {"essential": False})("meh", None, _ctx(bus2))
    sup = Supervisor({"meh": meh, "ok": ok}, bus2, FAST)

    async def main():
        await sup.start_all()
        assert meh.state is ServiceState.FAILED and ok.state is ServiceState.RUNNING
        await sup.stop_all()

    run(main())


def test_kernel_exits_with_failure_code_when_essential_service_gives_up(monkeypatch):
    # A kernel whose only service is a crash-looping plug-in, via config like a user's.
    import sys, types
    mod = types.ModuleType("naiad_test_crashy")
    cls = type("Looping", (Crashy,), {"crashes": 100, "starts": 0})
    mod.Looping = cls
    monkeypatch.setitem(sys.modules, "naiad_test_crashy", mod)
    cfg = from_table({"services": {"http": {"enabled": False},
                                   "looping": {"module": "naiad_test_crashy:Looping"}}})

    async def main():
        return await asyncio.wait_for(Kernel(cfg, FAST).serve(), 10)

    assert run(main()) == EXIT_FAILED
