"""Load for the chaos tests: many concurrent tritonclient (asyncio) calls for a while, every
outcome counted. An INT32 identity model echoes each call's own value, so a right answer
is told from a wrong one; a refusal (HTTP 503, gRPC UNAVAILABLE, a connection refused) is
the server saying no; anything else is a request lost."""

from __future__ import annotations

import asyncio
import collections
import statistics
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import aiohttp
import numpy as np
import tritonclient.grpc.aio as grpcaio
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from .models import DELAYED_IDENTITY_MODEL, IDENTITY_MODEL, identity_config, write_model


@dataclass
class Tally:
    ok: int = 0
    refused: int = 0
    wrong: int = 0
    lost: list[str] = field(default_factory=list)  # what each lost call ended with
    lost_at: list[tuple[float, float]] = field(default_factory=list)  # (sent, ended) of each
    latencies: list[float] = field(default_factory=list)  # of the right answers, seconds
    done_at: list[float] = field(default_factory=list)  # time.monotonic() of each right answer

    def lost_sent_before(self, t: float) -> list[str]:
        """The lost calls sent before `t` (time.monotonic())."""
        return [what for what, (sent, _) in zip(self.lost, self.lost_at) if sent < t]

    def ok_after(self, t: float) -> int:
        return sum(1 for d in self.done_at if d > t)

    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")

    def summary(self) -> str:
        lost = f" {dict(collections.Counter(self.lost))}" if self.lost else ""
        return (f"ok {self.ok}, refused {self.refused}, wrong {self.wrong}, lost {len(self.lost)}{lost}, "
                f"p50 {self.p50_ms():.1f} ms")


def write_identity(repo, name: str = "echo", extra: str = "", delay: float = 0.0) -> None:
    """An INT32 identity Python model (`[ 1 ]`): the value sent comes back, after `delay`
    seconds of work per batch."""
    if delay:
        extra = f'parameters {{ key: "delay" value {{ string_value: "{delay}" }} }}\n' + extra
    write_model(repo, name, identity_config(name, datatype="TYPE_INT32", dims="[ 1 ]", extra=extra),
                DELAYED_IDENTITY_MODEL if delay else IDENTITY_MODEL)


def http_caller(client: httpaio.InferenceServerClient, model: str) -> Callable[[int], Awaitable[int]]:
    async def call(value: int) -> int:
        x = httpaio.InferInput("INPUT0", [1], "INT32")
        x.set_data_from_numpy(np.array([value], dtype=np.int32))
        result = await client.infer(model, [x])
        return int(result.as_numpy("OUTPUT0")[0])

    return call


def grpc_caller(client: grpcaio.InferenceServerClient, model: str) -> Callable[[int], Awaitable[int]]:
    async def call(value: int) -> int:
        x = grpcaio.InferInput("INPUT0", [1], "INT32")
        x.set_data_from_numpy(np.array([value], dtype=np.int32))
        result = await client.infer(model, [x], client_timeout=30)
        return int(result.as_numpy("OUTPUT0")[0])

    return call


def refused(exc: BaseException) -> bool:
    """The server said no before taking the request: 503, UNAVAILABLE, no connection."""
    if isinstance(exc, InferenceServerException):
        return exc.status() in ("503", "StatusCode.UNAVAILABLE")
    return isinstance(exc, aiohttp.ClientConnectorError)  # connection refused: never accepted


async def hammer(call: Callable[[int], Awaitable[int]], concurrency: int, until: Callable[[], bool]) -> Tally:
    """`concurrency` callers, each sending its next value as soon as the last is answered,
    until `until()`; a refused caller waits 5 ms before its next try."""
    tally = Tally()

    async def caller(w: int) -> None:
        n = 0
        while not until():
            value = w * 1_000_000 + n
            n += 1
            sent = time.monotonic()
            try:
                got = await call(value)
            except Exception as exc:  # noqa: BLE001 - every outcome is counted
                if refused(exc):
                    tally.refused += 1
                else:
                    tally.lost.append(f"{type(exc).__name__}: {exc}")
                    tally.lost_at.append((sent, time.monotonic()))
                await asyncio.sleep(0.005)
                continue
            now = time.monotonic()
            if got != value:
                tally.wrong += 1
                continue
            tally.ok += 1
            tally.latencies.append(now - sent)
            tally.done_at.append(now)

    await asyncio.gather(*(caller(w) for w in range(concurrency)))
    return tally


def deadline(seconds: float) -> Callable[[], bool]:
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end
