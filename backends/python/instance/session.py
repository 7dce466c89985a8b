"""One stub incarnation as the parent sees it (the IPC session).

`Session` packs a batch's inputs into the parent's arena and sends ONE EXECUTE packet,
reads the stub's packets on the event loop (`add_reader`, no threads), routes responses
to the requests' sinks, and fails what is in flight if the stub dies. The stub's own
calls (BLS, model control, metrics) are answered by `ServerCalls` (server_calls.py).

Outputs are copied out of the stub's region once, into one `bytes` per message whose
slices become the response tensors. The copy lets the stub reuse its memory as soon as
the parent has read the message (the free rides on the next packet down), and a
response's lifetime (protocol encoding, caches, ensembles) never pins stub memory.
"""

from __future__ import annotations

import asyncio
import logging
import marshal
import os
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

from naiad.kernel.inference.backend import BackendContext, ExecutionTimes
from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.types import (
    InferenceRequest,
    InferenceResponse,
    ResponseSink,
    Tensor,
)

from .. import ipc
from ..ipc import (
    ACK,
    AUTO_COMPLETE,
    AUTO_COMPLETE_DONE,
    BLS,
    CALL,
    CANCEL,
    EXEC_DONE,
    EXECUTE,
    FINALIZE,
    FINALIZE_DONE,
    INIT,
    INIT_DONE,
    LOG,
    RESPONSE,
    RESPONSES,
)
from ..launcher import StubProcess
from ..metrics import StubMetrics
from ..readiness import ReadinessProbe
from .packing import copy_in, plain, stage
from .server_calls import ServerCalls

logger = logging.getLogger("naiad.backends.python")

#: A failed batch of a non-decoupled model, as Triton's Python backend words it
#: (python_be.cc); a decoupled model's requests get the stub's message as is.
FAILED = "Failed to process the request(s) for model instance '{instance}', message: {message}"

_LOG_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.DEBUG}
# Send an explicit ACK (frees only) once this many stub blocks, or bytes, wait to be
# freed with nothing else going down (a decoupled model streaming with no new requests).
_ACK_FREES = 64
_ACK_BYTES = 16 << 20


@dataclass(frozen=True)
class Settings:
    """The backend's knobs (from `--backend-config=python,<key>=<value>`)."""

    region_size: int = 8 << 20  # shm-growth-byte-size
    first_region_size: int = 8 << 20  # shm-default-byte-size
    stub_timeout: float = 30.0  # stub-timeout-seconds: finalize grace before SIGKILL
    max_inflight: int = 4  # max_inflight: batches in flight for `async def execute`
    auto_complete: bool = True  # auto_complete: run auto_complete_config at load
    spare_stubs: bool = True  # spare_stub: keep one started stub ready for the next load
    restart_backoff_max: float = 30.0


_RESCHEDULE_REFUSED = (
    "Request is released with TRITONSERVER_REQUEST_RELEASE_RESCHEDULE, but the model is not configured with "
    "sequence_batching { iterative_sequence: true }, the only scheduler that reschedules requests")


def _reschedule_refused() -> InferenceError:
    return InferenceError.invalid(_RESCHEDULE_REFUSED)


class _Batch:
    __slots__ = ("requests", "sinks", "future", "sent_ns", "done", "open", "exec_done", "times", "lane", "summary")

    def __init__(self, requests: Sequence[InferenceRequest], sinks: Sequence[ResponseSink], future: asyncio.Future, sent_ns: int) -> None:
        self.requests = requests
        self.sinks = sinks
        self.future = future
        self.sent_ns = sent_ns
        self.done: list[bool] | None = None  # decoupled: which requests got their final
        self.open = len(requests)
        self.exec_done = False
        self.times: ExecutionTimes | None = None
        self.lane: Any = None  # a LaneBatch (ext/lane/batch.h) instead of requests and sinks
        self.summary: tuple | None = None  # the lane batch's answers, for the statistics


class StubDied(Exception):
    """The stub exited (or the control socket broke) before answering."""


class Session(ServerCalls):
    """One stub incarnation: process, channel, in-flight batches and calls."""

    def __init__(
        self,
        *,
        label: str,
        model_name: str,
        model_version: str,
        instance_name: str,
        context: BackendContext,
        settings: Settings,
        decoupled: bool = False,
        on_death: Callable[["Session", str], None] | None = None,
        stub: StubProcess | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.model_name = model_name
        self.model_version = model_version
        self.instance_name = instance_name
        self.context = context
        self.decoupled = decoupled
        self.on_death = on_death
        self.stub = stub if stub is not None else StubProcess.spawn(label)
        self.ep = ipc.Endpoint(
            self.stub.sock,
            prefix=f"naiad-{label}-in",
            region_size=settings.region_size,
            first_region_size=settings.first_region_size,
            blocking=False,
            on_backpressure=self._backpressure,
        )
        self.fd = self.stub.sock.fileno()
        self.batches: dict[int, _Batch] = {}
        self.next_bid = 1
        self.tasks: set[asyncio.Task] = set()
        self.waiters: dict[int, asyncio.Future] = {}
        self.dead = False
        self.eof = False
        self._eof_timer: asyncio.TimerHandle | None = None
        self.death: str = ""
        self._abort_error: InferenceError | None = None  # set when shutdown ends the stub
        self.wakeups = 0  # reads of the socket that found data (for tests/benchmarks)
        self.metrics = StubMetrics()  # the custom metrics the model made
        self.readiness: ReadinessProbe | None = None  # the model defines is_ready()
        self.loop.add_reader(self.fd, self._on_readable)
        if self.stub.pidfd >= 0:
            self.loop.add_reader(self.stub.pidfd, self._on_exit)

    @property
    def pid(self) -> int:
        return self.stub.pid

    # ============================================================== control calls ==

    async def _request(self, cmd: int, reply: int, *fields: Any) -> tuple:
        if self.dead:
            raise StubDied(self.death)
        fut = self.loop.create_future()
        self.waiters[reply] = fut
        self._send(cmd, *fields)
        return await fut

    async def initialize(self, config: dict) -> dict:
        _, _, error, info = await self._request(INIT, INIT_DONE, config)
        if error is not None:
            raise InferenceError.internal(error)
        ready_sock = self.stub.ready_sock
        if info.get("has_is_ready") and ready_sock is not None:
            ready_sock.setblocking(False)
            self.readiness = ReadinessProbe(ready_sock, self.instance_name)
        return info

    async def auto_complete(self, config: dict) -> tuple[str, bool]:
        """(completed config JSON, primed): see AUTO_COMPLETE_DONE in ipc."""
        _, _, error, text, primed = await self._request(AUTO_COMPLETE, AUTO_COMPLETE_DONE, config)
        if error is not None:
            raise InferenceError.internal(error)
        return text, primed

    def adopt(self, *, model_version: str, instance_name: str, decoupled: bool, on_death: Callable[["Session", str], None]) -> None:
        """Serve a model instance from this (primed auto-complete) session."""
        self.model_version = model_version
        self.instance_name = instance_name
        self.decoupled = decoupled
        self.on_death = on_death

    # ================================================================== execute ==

    async def execute(self, requests: Sequence[InferenceRequest], sinks: Sequence[ResponseSink]) -> ExecutionTimes:
        if self.dead:
            return self._fail_now(requests, sinks, self._death_error())
        sent_ns = time.monotonic_ns()
        bid = self.next_bid
        self.next_bid = bid + 1
        try:
            packet = self._pack(bid, requests)
        except InferenceError as exc:
            return self._fail_now(requests, sinks, exc)
        except (ValueError, TypeError) as exc:  # metadata marshal cannot carry
            return self._fail_now(requests, sinks, InferenceError.invalid(f"cannot send the request to the model: {exc}"))
        fut = self.loop.create_future()
        batch = _Batch(requests, sinks, fut, sent_ns)
        if self.decoupled:
            batch.done = [False] * len(requests)
        self.batches[bid] = batch
        try:
            self.ep.send_packet(packet)
        except OSError as exc:
            self._died(f"control socket error: {exc}")
            return await fut
        for i, r in enumerate(requests):
            r.cancel.on_cancel(partial(self._cancel, bid, i))
        return await fut

    async def execute_lane(self, lane: Any) -> tuple[ExecutionTimes, tuple]:
        """A batch of native lane requests (ext/lane/batch.h): laid out and copied into the
        arena natively, one EXECUTE packet as for `execute`, answered natively from the
        stub's region. Returns the times and the lane's summary for the statistics."""
        if self.dead:
            err = self._death_error()
            now = time.monotonic_ns()
            return ExecutionTimes(now, now, now, now, True), lane.fail(int(err.code), err.message)
        sent_ns = time.monotonic_ns()
        bid = self.next_bid
        self.next_bid = bid + 1
        metas, total = lane.layout()
        if total:
            region, base = self.ep.arena.alloc(total)
            lane.copy_into(region.view, base)
            rid = region.id
        else:
            rid, base = -1, 0
        packet = marshal.dumps((EXECUTE, self.ep.take_frees(), bid, rid, base, total, metas))
        fut = self.loop.create_future()
        batch = _Batch((), (), fut, sent_ns)
        batch.lane = lane
        self.batches[bid] = batch
        try:
            self.ep.send_packet(packet)
        except OSError as exc:
            self._died(f"control socket error: {exc}")
        times = await fut
        return times, batch.summary or (0, 0, 0, 0, [])

    def _pack(self, bid: int, requests: Sequence[InferenceRequest]) -> bytes:
        """Inputs of the whole batch into one arena block; metadata into one packet."""
        metas = []
        staged = []
        total = 0
        for r in requests:
            ins: list = []
            total = stage(r.inputs, ins, staged, total)
            flags = r.flags
            if r.sequence_start:
                flags |= 1
            if r.sequence_end:
                flags |= 2
            outs = r.outputs
            metas.append(
                (
                    r.id,
                    r.sequence_id,
                    flags,
                    r.timeout_us,
                    r.parameters,
                    tuple([o.name for o in outs]) if outs else None,
                    tuple(ins),
                )
            )
        if total:
            rid, base = copy_in(self.ep.arena, staged, total)
        else:
            rid, base = -1, 0
        frees = self.ep.take_frees()
        try:
            return marshal.dumps((EXECUTE, frees, bid, rid, base, total, tuple(metas)))
        except ValueError:
            pass
        try:
            # A parameter value marshal cannot carry (a numpy scalar, ...): send its str.
            metas = [m[:4] + ({k: plain(v) for k, v in m[4].items()},) + m[5:] for m in metas]
            return marshal.dumps((EXECUTE, frees, bid, rid, base, total, tuple(metas)))
        except ValueError:
            self.ep.frees.extend(frees)
            if rid >= 0:
                self.ep.arena.free(rid)
            raise

    def _cancel(self, bid: int, index: int) -> None:
        if bid in self.batches:
            self._send(CANCEL, bid, index)

    def _send(self, cmd: int, *fields: Any) -> None:
        if self.dead:
            return
        try:
            self.ep.send(cmd, *fields)
        except OSError as exc:
            self._died(f"control socket error: {exc}")

    # ================================================================== reading ==

    def _on_readable(self, drain: bool = False) -> None:
        """One packet per callback: the loop calls again while more are waiting, which
        spares the common single-packet case a failing recv (EAGAIN) per wake-up."""
        recv = self.ep.recv
        dispatch = self._dispatch
        got = False
        try:
            while True:
                msg = recv()
                if msg is None:
                    self._on_eof()
                    return
                got = True
                dispatch(msg)
                if not drain or self.dead:
                    break
        except BlockingIOError:
            pass
        except (ConnectionError, OSError) as exc:
            if not self.dead:
                self._died(f"control socket error: {exc}")
            return
        except ipc.ProtocolError as exc:
            logger.error("python stub for %s sent a bad message: %s", self.instance_name, exc)
            self.stub.kill()
            self._died(str(exc))
            return
        except Exception:  # a bug here must not stall the instance: log, carry on
            logger.exception("python backend: handling a message from the stub of %s failed", self.instance_name)
        if got:
            self.wakeups += 1
        if len(self.ep.frees) >= _ACK_FREES or self.ep.free_bytes >= _ACK_BYTES:
            self._send(ACK)

    def _on_eof(self) -> None:
        """The stub closed its end: it is exiting. Let the pidfd report how (a second at
        most), so the error names the signal or exit code."""
        self.eof = True
        self.loop.remove_reader(self.fd)
        if self.stub.pidfd < 0 or self.stub.exit_status() is not None:
            self._died("its control socket closed")
        else:
            self._eof_timer = self.loop.call_later(1.0, self._died, "it closed its control socket")

    def _on_exit(self) -> None:
        # Read what the stub sent before it went, then fail the rest.
        if not self.dead and not self.eof:
            self._on_readable(drain=True)
        if not self.dead:
            self._died(self.stub.describe_exit())

    def _dispatch(self, msg: tuple) -> None:
        cmd = msg[0]
        if cmd == RESPONSES:
            self._on_responses(msg)
        elif cmd == RESPONSE:
            self._on_response(msg)
        elif cmd == EXEC_DONE:
            self._on_exec_done(msg)
        elif cmd == BLS:
            self._spawn(self._bls(msg))
        elif cmd == CALL:
            if msg[3] == "is_cancelled":
                self._answer_is_cancelled(msg)
            elif self.metrics.handles(msg[3]):
                self._metric_call(msg)
            else:
                self._spawn(self._control(msg))
        elif cmd == LOG:
            self._on_log(msg)
        elif cmd in (INIT_DONE, AUTO_COMPLETE_DONE, FINALIZE_DONE):
            fut = self.waiters.pop(cmd, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        # REGION: mapped by the endpoint; ACK: frees only

    def _blob(self, rid: int, base: int, total: int) -> memoryview | None:
        """Copy a block out of the stub's region once; the stub may reuse it afterwards."""
        if rid < 0:
            return None
        data = bytes(self.ep.peer[rid].view[base : base + total])
        self.ep.frees.append(rid)
        self.ep.free_bytes += total
        return memoryview(data)

    def _response(self, req: InferenceRequest, rd: tuple, blob: memoryview | None, final: bool) -> InferenceResponse:
        error, params, outputs = rd
        if error is not None:
            return InferenceResponse(
                self.model_name,
                self.model_version,
                id=req.id,
                parameters=params or None,
                error=InferenceError(error[1], ErrorCode(error[0])),
                final=final,
            )
        tensors = [Tensor(name, dt, shape, raw=blob[off : off + n]) for name, dt, shape, off, n in outputs]
        return InferenceResponse(
            self.model_name, self.model_version, tensors, id=req.id, parameters=params or None, final=final
        )

    def _on_responses(self, msg: tuple) -> None:
        _, _, bid, t0, t1, error, rds, rid, base, total = msg
        batch = self.batches.pop(bid, None)
        if batch is not None and batch.lane is not None:
            self._on_lane_responses(batch, msg)
            return
        blob = self._blob(rid, base, total)
        if batch is None:
            return
        name, version = self.model_name, self.model_version
        if error is not None:
            err = InferenceError(FAILED.format(instance=self.instance_name, message=error), ErrorCode.INTERNAL)
            for req, sink in zip(batch.requests, batch.sinks):
                sink.send(InferenceResponse(name, version, id=req.id, error=err))
        else:
            respond = self._response
            for req, sink, rd in zip(batch.requests, batch.sinks, rds):
                if rd is None:
                    if not sink.reschedule():
                        sink.send(InferenceResponse(name, version, id=req.id, error=_reschedule_refused()))
                else:
                    sink.send(respond(req, rd, blob, True))
        if not batch.future.done():  # (the caller may have stopped waiting)
            batch.future.set_result(ExecutionTimes(batch.sent_ns, t0, t1, time.monotonic_ns(), error is not None))

    def _on_lane_responses(self, batch: _Batch, msg: tuple) -> None:
        """A lane batch's answers, read by the lane straight out of the stub's region."""
        _, _, bid, t0, t1, error, rds, rid, base, total = msg
        try:
            if error is not None:
                batch.summary = batch.lane.fail(int(ErrorCode.INTERNAL),
                                                FAILED.format(instance=self.instance_name, message=error))
            else:
                block = self.ep.peer[rid].view[base : base + total] if rid >= 0 else None
                batch.summary = batch.lane.complete(rds, block, _RESCHEDULE_REFUSED)
        finally:
            if rid >= 0:
                self.ep.frees.append(rid)
                self.ep.free_bytes += total
            if not batch.future.done():
                batch.future.set_result(ExecutionTimes(batch.sent_ns, t0, t1, time.monotonic_ns(), error is not None))

    def _on_response(self, msg: tuple) -> None:
        _, _, bid, index, final, rd, rid, base, total = msg
        blob = self._blob(rid, base, total)
        batch = self.batches.get(bid)
        if batch is None or batch.done is None or batch.done[index]:
            return  # the request already failed (execute raised, stub restarted, ...)
        req = batch.requests[index]
        sink = batch.sinks[index]
        if rd is None:
            sink.finish()
        else:
            sink.send(self._response(req, rd, blob, final))
        if final:
            batch.done[index] = True
            batch.open -= 1
            if batch.open == 0 and batch.exec_done:
                del self.batches[bid]

    def _on_exec_done(self, msg: tuple) -> None:
        _, _, bid, t0, t1, error, rescheduled = msg
        batch = self.batches.get(bid)
        if batch is None:
            return
        batch.exec_done = True
        if error is not None:
            self._fail_open(batch, InferenceError(error, ErrorCode.INTERNAL))
        for i in rescheduled:  # released with RESCHEDULE: this batch is done with them
            if batch.done[i]:
                continue
            batch.done[i] = True
            batch.open -= 1
            if not batch.sinks[i].reschedule():
                batch.sinks[i].send(InferenceResponse(self.model_name, self.model_version, id=batch.requests[i].id,
                                                      error=_reschedule_refused()))
        if batch.open == 0:
            del self.batches[bid]
        if not batch.future.done():
            batch.future.set_result(ExecutionTimes(batch.sent_ns, t0, t1, time.monotonic_ns(), error is not None))

    def _fail_open(self, batch: _Batch, err: InferenceError) -> None:
        if batch.lane is not None:
            batch.summary = batch.lane.fail(int(err.code), err.message)
            return
        name, version = self.model_name, self.model_version
        for i, (req, sink) in enumerate(zip(batch.requests, batch.sinks)):
            if batch.done is not None:
                if batch.done[i]:
                    continue
                batch.done[i] = True
            sink.send(InferenceResponse(name, version, id=req.id, error=err))
        batch.open = 0

    def _on_log(self, msg: tuple) -> None:
        _, _, level, message, filename, lineno = msg
        lvl = _LOG_LEVELS.get(level, logging.INFO)
        if logger.isEnabledFor(lvl):
            record = logger.makeRecord(logger.name, lvl, filename, lineno, "%s", (message,), None)
            record.source = f"{os.path.basename(filename)}:{lineno}"  # Triton heads it model.py:LINE
            logger.handle(record)

    # ================================================================ lifecycle ==

    def _backpressure(self) -> None:
        if not self.dead:
            self.loop.add_writer(self.fd, self._on_writable)

    def _on_writable(self) -> None:
        try:
            drained = self.ep.flush()
        except OSError as exc:
            self.loop.remove_writer(self.fd)
            self._died(f"control socket error: {exc}")
            return
        if drained:
            self.loop.remove_writer(self.fd)

    def _death_error(self) -> InferenceError:
        if self._abort_error is not None:
            return self._abort_error
        # How it died is in the log (PythonModelInstance._on_death); clients get Triton's words.
        return InferenceError(
            FAILED.format(instance=self.instance_name, message=f"Stub process '{self.instance_name}' is not healthy."),
            ErrorCode.INTERNAL,
        )

    def _fail_now(self, requests: Sequence[InferenceRequest], sinks: Sequence[ResponseSink], err: InferenceError) -> ExecutionTimes:
        for req, sink in zip(requests, sinks):
            sink.send(InferenceResponse(self.model_name, self.model_version, id=req.id, error=err))
        now = time.monotonic_ns()
        return ExecutionTimes(now, now, now, now, True)

    def _died(self, how: str) -> None:
        """The stub is gone: fail everything in flight and release what it held."""
        if self.dead:
            return
        self.dead = True
        if self._eof_timer is not None:
            self._eof_timer.cancel()
        if self.stub.exit_status() is not None:
            how = self.stub.describe_exit()
        self.death = how
        self._unwatch()
        err = self._death_error()
        now = time.monotonic_ns()
        batches, self.batches = self.batches, {}
        for batch in batches.values():
            self._fail_open(batch, err)
            if not batch.future.done():
                batch.future.set_result(ExecutionTimes(batch.sent_ns, now, now, now, True))
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(StubDied(how))
        self.waiters.clear()
        for task in list(self.tasks):
            task.cancel()
        self.metrics.release()
        self.stub.kill()
        self.stub.close_fds()
        self.ep.close()
        self._reap()
        if self.on_death is not None:
            self.on_death(self, how)

    def _reap(self, tries: int = 0) -> None:
        """Collect the exited process without blocking the loop."""
        if self.stub.exit_status() is None and tries < 1000:
            self.loop.call_later(0.005 if tries < 100 else 0.05, self._reap, tries + 1)

    def _unwatch(self) -> None:
        for remove, fd in ((self.loop.remove_reader, self.fd), (self.loop.remove_writer, self.fd)):
            try:
                remove(fd)
            except (ValueError, OSError):
                pass
        if self.stub.pidfd >= 0:
            try:
                self.loop.remove_reader(self.stub.pidfd)
            except (ValueError, OSError):
                pass

    async def close(self, timeout: float) -> None:
        """Finalize the model (bounded by `timeout`), then make sure the process is gone."""
        if self.dead:
            return
        self.on_death = None
        try:
            await asyncio.wait_for(self._request(FINALIZE, FINALIZE_DONE), timeout)
            deadline = time.monotonic() + min(timeout, 5.0)
            while self.stub.exit_status() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
        except (asyncio.TimeoutError, StubDied):
            pass
        self.kill("closed")

    def kill(self, how: str = "killed") -> None:
        self.on_death = None
        self.stub.kill()
        self._died(how)

    def abort(self, error: InferenceError, grace: float) -> bool:
        """Shutdown's exit timeout: a stub still running work gets SIGTERM, then SIGKILL
        after `grace`; that work is answered with `error` when it is gone. An idle stub
        is left for `close()` to finalize. Returns whether the stub was ended."""
        if self.dead or self._abort_error is not None or not (self.batches or self.waiters):
            return False
        self.on_death = None  # no restart
        self._abort_error = error
        self.stub.terminate()
        self.loop.call_later(grace, self.stub.kill)  # a no-op once it has exited
        return True
