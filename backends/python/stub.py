"""The stub process: loads one model.py and runs its batches.

    python -m naiad.backends.python.stub --fd N --ppid P --label L

Started by `launcher`, it owns one instance of the user's `TritonPythonModel`. It talks to
the parent over the control socket `--fd` (see `ipc`), reads inputs as numpy views over
the parent's shared-memory regions (no copy) and writes outputs into its own arena.

Threads. Whichever thread needs a message reads the socket (leader/follower): when idle,
the main thread blocks on the socket and runs an EXECUTE it receives itself, so a batch
costs no thread hand-off. A model thread waiting for a BLS response becomes the reader
while the main thread is busy, and the main thread dispatches that thread's response
when idle. Models with `async def execute` run on an asyncio loop in the main thread,
which watches the socket with `add_reader`, so several batches can be in flight.

Input lifetime. Each batch's inputs are views of one numpy "base" array over the
parent's region. When the batch is done the stub keeps the base until no view of it is
alive (`sys.getrefcount`), then tells the parent to free it, piggybacked on the next
message it sends; a model that keeps an input array keeps its memory, as in Triton.

The stub exits when the parent closes the socket (EOF) and, as a backstop, when the
parent dies (PR_SET_PDEATHSIG); its memfds vanish with it.
"""

from __future__ import annotations

import collections
import ctypes
import importlib
import os
import signal
import socket
import sys
import threading
import time
import types
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import ipc, pb_utils
from .ipc import (
    AUTO_COMPLETE,
    AUTO_COMPLETE_DONE,
    BLS,
    BLS_RESULT,
    CALL,
    CALL_RESULT,
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
from .pb_utils import (
    CODE_TO_WIRE,
    TYPE_BYTES,
    WIRE_TO_CODE,
    InferenceRequest,
    InferenceResponse,
    Tensor,
    TritonError,
    TritonModelException,
    _RequestState,
)
from .shm import align
from naiad.kernel.inference.datatypes import WIRE_TO_NUMPY

if TYPE_CHECKING:
    import asyncio

# asyncio, inspect, traceback and argparse are imported where needed: a stub's start-up
# time is most of a small model's load time.

# Wire name -> numpy dtype for fixed-size types (BYTES is handled apart).
_NUMPY = {name: dtype for name, dtype in WIRE_TO_NUMPY.items() if name != "BYTES"}
_EMPTY_BLOCK = (-1, 0, 0)
_DONTWAIT = int(socket.MSG_DONTWAIT)
# sys.getrefcount of a pinned base held only by our (base, rid) tuple: the tuple's
# reference plus the call's argument.
_UNREFERENCED = 2


class _Call:
    """A request the stub made to the parent (BLS or model control), awaiting results."""

    __slots__ = ("id", "decoupled", "loop", "future", "items", "waiter", "lock", "done")

    def __init__(self, cid: int, decoupled: bool, loop: asyncio.AbstractEventLoop | None) -> None:
        self.id = cid
        self.decoupled = decoupled
        self.loop = loop
        self.future = loop.create_future() if loop is not None else None
        self.items: collections.deque = collections.deque()
        self.waiter: asyncio.Future | None = None  # async iteration of a decoupled call
        self.lock = threading.Lock()
        self.done = False


class _Batch:
    """One EXECUTE in progress: the only holder of its requests, result and input base."""

    __slots__ = ("bid", "rid", "reqs", "result", "error", "base", "logged")

    def __init__(self, bid: int, rid: int) -> None:
        self.bid = bid
        self.rid = rid
        self.reqs: list | None = None
        self.result: Any = None
        self.error: str | None = None
        self.base: np.ndarray | None = None
        self.logged = False  # the error is in the server log already


class Stub:
    def __init__(self, sock: socket.socket, label: str) -> None:
        self.sock = sock
        self.label = label
        self.ep = ipc.Endpoint(sock, prefix=f"naiad-{label}-out", region_size=8 << 20, blocking=True)
        self.lock = threading.RLock()  # sends, the arena, pinned inputs
        self.cond = threading.Condition(threading.Lock())  # the reader role
        self.reading = False
        self.work: collections.deque = collections.deque()
        self.requests: dict[tuple[int, int], _RequestState] = {}
        self.calls: dict[int, _Call] = {}
        self.next_call = 1
        self.pinned: list[tuple[np.ndarray, int]] = []
        self.deferred: collections.deque = collections.deque()  # one-way calls (`notify`)
        self.async_pending = 0  # async BLS calls not yet final (sync mode: a pump reads for them)
        self.pump_running = False
        self.loop: asyncio.AbstractEventLoop | None = None  # async mode: execute runs here
        self.async_mode = False
        self.aux_loop: asyncio.AbstractEventLoop | None = None  # sync code awaiting a coroutine
        self.loop_thread = 0
        self.model: Any = None
        self.model_name = ""
        self.instance_name = ""  # Triton's stub names itself after its instance ("m_0_0")
        self.model_path = ""
        self.model_dir = ""
        self.decoupled = False
        self.all_outputs: tuple | None = None
        self.initialized = False
        self.finalizing = False
        self.ready_sock: socket.socket | None = None

    # ================================================================== serving ==

    def serve(self) -> int:
        self._wait_for(self._has_work)
        msg = self.work.popleft()
        if msg[0] == AUTO_COMPLETE:
            error, text, primed = self._auto_complete(msg[2])
            if error is not None:
                self.log(pb_utils.Logger.LogLevel.INFO, f"Failed to initialize Python stub for auto-complete: {error}",
                         __file__, 0)
            self._send(AUTO_COMPLETE_DONE, error, text, primed)
            if not primed:
                return 0
            # Only model.py was imported (as any instance's stub would): stay, and become
            # the first instance's stub if the parent sends INIT.
            self._wait_for(self._has_work)
            msg = self.work.popleft()
        if msg[0] != INIT:
            return 2
        error, info = self._initialize(msg[2])
        if error is not None:
            self.log(pb_utils.Logger.LogLevel.INFO, f"Failed to initialize Python stub: {error}", __file__, 0)
        if error is None:
            info["has_is_ready"] = self._serve_readiness()
        self._send(INIT_DONE, error, info)
        if error is not None:
            return 1
        self.initialized = True
        if info["is_async"]:
            return self._serve_async()
        return self._serve_sync()

    def _serve_readiness(self) -> bool:
        """Answer the parent's readiness checks if the model defines `is_ready`."""
        if self.ready_sock is None or not hasattr(self.model, "is_ready"):
            return False
        from . import readiness

        readiness.serve(self.ready_sock, self.model, self.loop, _error_text)
        return True

    def _has_work(self) -> bool:
        return bool(self.work)

    def _serve_sync(self) -> int:
        work = self.work
        while True:
            if not work:
                self._wait_for(self._has_work)
            msg = work.popleft()
            cmd = msg[0]
            if cmd == EXECUTE:
                self._execute_sync(msg)
            elif cmd == FINALIZE:
                self._finalize()
                return 0

    def _serve_async(self) -> int:
        loop = self.loop
        assert loop is not None
        self.loop_thread = threading.get_ident()
        self.async_mode = True
        loop.add_reader(self.sock.fileno(), self.poll)
        while self.work:  # anything that arrived before the loop watched the socket
            self._dispatch_to_loop(self.work.popleft())
        try:
            loop.run_forever()
        finally:
            loop.remove_reader(self.sock.fileno())
        self._finalize()
        return 0

    # ============================================================ reading (roles) ==

    def _wait_for(self, pred: Callable[[], Any], on_satisfied: Callable[[], None] | None = None) -> None:
        """Block until `pred()`; meanwhile read and dispatch messages if nobody else is."""
        cond = self.cond
        with cond:
            while not pred():
                if self.reading:
                    cond.wait()
                    continue
                self.reading = True
                cond.release()
                try:
                    self._read_one(0)
                finally:
                    cond.acquire()
                    self.reading = False
                    cond.notify_all()
            if on_satisfied is not None:
                on_satisfied()

    def poll(self) -> None:
        """Dispatch whatever is waiting, without blocking (cancellations, frees, ...)."""
        with self.cond:
            if self.reading:
                return
            self.reading = True
        try:
            while True:
                try:
                    self._read_one(_DONTWAIT)
                except BlockingIOError:
                    break
        finally:
            with self.cond:
                self.reading = False
                self.cond.notify_all()

    def _read_one(self, flags: int) -> None:
        packet = self.ep.recv_packet(flags)
        if packet is None:
            _parent_gone()
        with self.lock:
            msg = self.ep.take(*packet)
        self._dispatch(msg)

    def _dispatch(self, msg: tuple) -> None:
        cmd = msg[0]
        if cmd == EXECUTE or cmd == FINALIZE:
            if self.async_mode:
                self._dispatch_to_loop(msg)
            else:
                self.work.append(msg)
        elif cmd == CANCEL:
            state = self.requests.get((msg[2], msg[3]))
            if state is not None:
                state.cancelled = True
        elif cmd == BLS_RESULT:
            _, _, cid, final, rd, rid, base, total = msg
            call = self.calls.get(cid)
            response = self._response_from(rd, rid, base, total)
            if call is not None:
                if final:
                    self.calls.pop(cid, None)
                self._deliver(call, response, final)
        elif cmd == CALL_RESULT:
            _, _, cid, error, value = msg
            call = self.calls.pop(cid, None)
            if call is not None:
                self._deliver(call, (error, value), True)
        elif cmd == INIT or cmd == ipc.AUTO_COMPLETE:
            self.work.append(msg)
        # ACK and REGION carry nothing more (frees and fds were taken by the endpoint)

    def _dispatch_to_loop(self, msg: tuple) -> None:
        loop = self.loop
        if msg[0] == FINALIZE:
            fn = loop.stop
        else:
            fn = partial(self._execute_async, msg)
        if threading.get_ident() == self.loop_thread:
            loop.call_soon(fn)
        else:
            loop.call_soon_threadsafe(fn)

    # ================================================================== sending ==

    def _send(self, cmd: int, *fields: Any) -> None:
        with self.lock:
            if self.pinned:
                self._release_pinned()
            if self.deferred:
                self._flush_deferred()
            self.ep.send(cmd, *fields)

    def notify(self, op: str, args: tuple) -> None:
        """A call that wants no answer (a metric's deletion), sent ahead of the next message
        to the parent: safe from `__del__`, which may run in the middle of a send."""
        self.deferred.append((op, args))

    def _flush_deferred(self) -> None:
        """Send the waiting one-way calls (call with the lock; call id 0: no answer)."""
        deferred = self.deferred
        while deferred:
            self.ep.send(CALL, 0, *deferred.popleft())

    def _release_pinned(self) -> None:
        """Free the parent's input blocks whose views are all gone (call with the lock)."""
        pinned = self.pinned
        getrefcount = sys.getrefcount
        keep = []
        for entry in pinned:
            if getrefcount(entry[0]) <= _UNREFERENCED:
                self.ep.frees.append(entry[1])
            else:
                keep.append(entry)
        self.pinned = keep

    def _alloc(self, nbytes: int):
        """Allocate in our arena (call with the lock); before growing it, collect the
        parent's frees that may be waiting in the socket."""
        got = self.ep.arena.try_alloc(nbytes)
        if got is None:
            self.poll()
            got = self.ep.arena.alloc(nbytes)
        return got

    # ============================================================== model loading ==

    def _load_model_class(self, cfg: dict) -> type:
        if cfg.get("label"):  # a spare stub learns whom it serves (names its regions)
            self.label = cfg["label"]
            self.ep.arena.prefix = f"naiad-{self.label}-out"
        self.model_name = cfg["model_name"]
        self.model_path = cfg["model_path"]
        self.model_dir = cfg["version_dir"]
        for entry in (cfg["version_dir"], cfg["model_dir"]):
            if entry not in sys.path:
                sys.path.append(entry)
        # Triton imports model.py as "<version>.<stem>"; a package for the version folder
        # makes that import (and relative imports inside model.py) resolve to this model.
        package, _, stem = cfg["module"].rpartition(".")
        if package and package not in sys.modules:
            pkg = types.ModuleType(package)
            pkg.__path__ = [cfg["version_dir"]]
            sys.modules[package] = pkg
        module = importlib.import_module(cfg["module"])
        # Without the class: Python's own AttributeError, as Triton reports it.
        return getattr(module, "TritonPythonModel")

    def _auto_complete(self, cfg: dict) -> tuple[str | None, str | None, bool]:
        """(error, completed config JSON, primed: no user code ran besides the import)."""
        import json

        try:
            cls = self._load_model_class(cfg)
            if not hasattr(cls, "auto_complete_config"):
                return None, cfg["config_json"], True
            config = cls.auto_complete_config(pb_utils.ModelConfig(cfg["config_json"]))
            if not isinstance(config, pb_utils.ModelConfig):
                return (
                    f"auto_complete_config function in model '{self.model_name}' must return "
                    "a valid pb.ModelConfig object.",
                    None,
                    False,
                )
            return None, json.dumps(config.as_dict()), False
        except BaseException as exc:  # noqa: BLE001 (anything the model raises)
            return _error_text(exc), None, False

    def _initialize(self, cfg: dict) -> tuple[str | None, dict]:
        self.decoupled = bool(cfg["decoupled"])
        self.instance_name = cfg.get("instance_name") or cfg["model_name"]
        self.all_outputs = tuple(cfg["all_outputs"]) or None
        arena = self.ep.arena
        arena.region_size = max(int(cfg.get("region_size", arena.region_size)), 1 << 16)
        arena.first_region_size = max(int(cfg.get("first_region_size", arena.region_size)), 1 << 16)
        try:
            cls = self._load_model_class(cfg)
            self.model = cls()
            execute = getattr(cls, "execute", None)
            is_async = execute is not None and _is_coroutine_function(execute)
            if is_async:
                import asyncio

                self.loop = asyncio.new_event_loop()
                asyncio.set_event_loop(self.loop)
            init = getattr(self.model, "initialize", None)
            if init is not None:
                result = init(dict(cfg["args"]))
                if _is_awaitable(result):
                    self._run_blocking(result)
        except BaseException as exc:  # noqa: BLE001
            return _error_text(exc), {}
        return None, {"is_async": is_async, "pid": os.getpid()}

    def _run_blocking(self, coro: Any) -> Any:
        """Run a coroutine to completion from synchronous code (sync execute/initialize
        that return one)."""
        if self.loop is not None and not self.loop.is_running():
            return self.loop.run_until_complete(coro)
        if self.aux_loop is None:
            import asyncio

            self.aux_loop = asyncio.new_event_loop()
        return self.aux_loop.run_until_complete(coro)

    def _finalize(self) -> None:
        self.finalizing = True
        fin = getattr(self.model, "finalize", None)
        if fin is not None:
            try:
                result = fin()
                if _is_awaitable(result):
                    self._run_blocking(result)
            except BaseException as exc:  # noqa: BLE001
                self.log(pb_utils.Logger.LogLevel.ERROR, f"finalize failed: {_error_text(exc)}", self.model_path, 0)
        self._send(FINALIZE_DONE)

    # ================================================================ execution ==

    def _make_batch(self, msg: tuple) -> "_Batch":
        _, _, bid, rid, base_off, total, metas = msg
        batch = _Batch(bid, rid)
        base = None
        if rid >= 0:
            base = np.frombuffer(self.ep.peer[rid].mm, np.uint8, total, base_off)
        numpy_of = _NUMPY.get
        wrap = Tensor._wrap
        requests_map = self.requests
        all_outputs = self.all_outputs
        model_name = self.model_name
        reqs = []
        for idx, (rq_id, corr, flags, timeout, params, requested, inputs) in enumerate(metas):
            tensors = []
            for name, dt, shape, off, n in inputs:
                dtype = numpy_of(dt)
                if dtype is not None:
                    arr = np.ndarray(shape, dtype, base, off) if n else np.zeros(shape, dtype)
                else:  # BYTES
                    arr = pb_utils.deserialize_bytes_tensor(base[off : off + n]) if n else np.empty(0, np.object_)
                    arr = arr.reshape(shape)
                tensors.append(wrap(name, arr, WIRE_TO_CODE[dt]))
            if requested is None:
                requested = all_outputs
            state = _RequestState((bid, idx), requested)
            requests_map[state.key] = state
            reqs.append(
                InferenceRequest._incoming(
                    rq_id, corr, flags, timeout, params, requested or (), tensors, model_name, state
                )
            )
        batch.reqs = reqs
        batch.base = base
        return batch

    def _call_execute(self, reqs: list) -> Any:
        execute = getattr(self.model, "execute", None)
        if execute is None:
            raise _StubError(f"Python model {self.model_path} does not implement `execute` method.")
        return execute(reqs)

    # The batch's requests, result and input base live only in its _Batch (never in a
    # local of these functions), so `_complete` can drop the last reference to them
    # before it checks whether the input block can be freed.

    def _execute_sync(self, msg: tuple) -> None:
        t0 = time.monotonic_ns()
        batch = self._make_batch(msg)
        try:
            batch.result = self._call_execute(batch.reqs)
            if _is_awaitable(batch.result):
                batch.result = self._run_blocking(batch.result)
        except BaseException as exc:  # noqa: BLE001
            batch.error = _error_text(exc)
        self._complete(batch, t0, time.monotonic_ns())

    def _execute_async(self, msg: tuple) -> None:
        t0 = time.monotonic_ns()
        batch = self._make_batch(msg)
        try:
            batch.result = self._call_execute(batch.reqs)
        except BaseException as exc:  # noqa: BLE001
            batch.error = _error_text(exc)
        if batch.error is not None or not _is_awaitable(batch.result):
            self._complete(batch, t0, time.monotonic_ns())
            return
        import asyncio

        task = asyncio.ensure_future(batch.result, loop=self.loop)
        batch.result = None
        task.add_done_callback(partial(self._async_done, batch, t0))

    def _async_done(self, batch: "_Batch", t0: int, task: asyncio.Future) -> None:
        if task.cancelled():
            batch.error = "execute was cancelled"
        else:
            exc = task.exception()
            if exc is not None:
                batch.error = _error_text(exc)
                if self.decoupled:
                    # Triton runs a decoupled coroutine in the background and logs how it
                    # failed as a Python traceback.
                    import traceback

                    self.log(pb_utils.Logger.LogLevel.ERROR, "".join(traceback.format_exception(exc)), __file__, 0)
                    batch.logged = True
                del exc
            else:
                batch.result = task.result()
        self._complete(batch, t0, time.monotonic_ns())

    def _complete(self, batch: "_Batch", t0: int, t1: int) -> None:
        """Answer a batch whose execute has returned (one message), release its inputs."""
        reqs, result, error = batch.reqs, batch.result, batch.error
        batch.reqs = batch.result = None
        bid = batch.bid
        if self.decoupled:
            if error is None and result is not None:
                error = (
                    f"Python model '{self.instance_name}' is using the decoupled mode and the "
                    "execute function must return None."
                )
            if error is not None:
                if not batch.logged:
                    self.log(pb_utils.Logger.LogLevel.INFO, _failed(self.instance_name, error), __file__, 0)
                self._forget(reqs, close=True)
                rescheduled = ()
            else:
                rescheduled = tuple(i for i, r in enumerate(reqs)
                                    if r._release_flags == pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
            del reqs, result
            with self.lock:
                self._pin(batch)
                if self.deferred:
                    self._flush_deferred()
                self.ep.send(EXEC_DONE, bid, t0, t1, error, rescheduled)
            return

        rdescs = None
        block = _EMPTY_BLOCK
        with self.lock:
            if error is None:
                error = _check_responses(result, reqs)
            if error is None:
                try:
                    rdescs, block = self._pack(reqs, result)
                except BaseException as exc:  # noqa: BLE001
                    error = _error_text(exc)
            self._forget(reqs)
            del reqs, result
            self._pin(batch)
            if self.deferred:
                self._flush_deferred()
            self.ep.send(RESPONSES, bid, t0, t1, error, rdescs, *block)

    def _forget(self, reqs: list, close: bool = False) -> None:
        """Stop routing cancellations to these requests (a function, so that no loop
        variable outlives it holding a request and thus its inputs)."""
        for r in reqs:
            state = r._state
            if close:
                state.closed = True
            self.requests.pop(state.key, None)

    def _pin(self, batch: "_Batch") -> None:
        """Keep the batch's input base until its views die; free what can be (with lock)."""
        if batch.base is not None:
            self.pinned.append((batch.base, batch.rid))
            batch.base = None
        if self.pinned:
            self._release_pinned()

    # ---------------------------------------------------------------- responses --

    def _pack(self, reqs: list, responses: list) -> tuple[tuple, tuple]:
        """All outputs of a batch into one block of our arena (call with the lock)."""
        staged = []  # (response slot, outputs list)
        total = 0
        rdescs: list = []
        for req, resp in zip(reqs, responses):
            if resp is None:
                rdescs.append(None)
                continue
            rd, total = _stage(resp, req._state.requested, total, staged)
            rdescs.append(rd)
        block = self._write(staged, total)
        return tuple(rdescs), block

    def _write(self, staged: list, total: int) -> tuple:
        if not staged:
            return _EMPTY_BLOCK
        region, base = self._alloc(total)
        view = region.view
        for off, n, data in staged:
            if n:
                view[base + off : base + off + n] = data
        return (region.id, base, total)

    def send_response(self, state: _RequestState, response: InferenceResponse | None, final: bool) -> None:
        """A decoupled response (InferenceResponseSender.send), from any thread."""
        bid, idx = state.key
        with self.lock:
            rd = None
            block = _EMPTY_BLOCK
            if response is not None:
                staged: list = []
                rd, total = _stage(response, state.requested, 0, staged)
                block = self._write(staged, total)
            if final:
                self.requests.pop(state.key, None)
            if self.pinned:
                self._release_pinned()
            self.ep.send(RESPONSE, bid, idx, final, rd, *block)

    # ====================================================================== BLS ==

    def bls(self, request: InferenceRequest, decoupled: bool, loop: asyncio.AbstractEventLoop | None = None) -> _Call:
        if not self.initialized or self.finalizing:
            raise TritonModelException("BLS is only supported during the 'execute' function.")
        staged: list = []
        total = 0
        descs = []
        for t in request._inputs:
            data, wire, shape = _payload(t)
            n = len(data) if isinstance(data, (bytes, bytearray)) else data.nbytes
            descs.append((t._name, wire, shape, total, n))
            staged.append((total, n, data))
            total += align(n)
        meta = (
            request._id,
            request._corr,
            request._flags,
            request._timeout,
            request._params,
            request._requested,
            tuple(descs),
        )
        with self.lock:
            cid = self.next_call
            self.next_call += 1
            call = _Call(cid, decoupled, loop)
            self.calls[cid] = call
            if loop is not None:
                with self.cond:
                    self.async_pending += 1
            block = self._write(staged, total)
            if self.pinned:
                self._release_pinned()
            self.ep.send(BLS, cid, decoupled, request._model_name, request._model_version, meta, *block)
        if loop is not None and not self.async_mode:
            self._ensure_pump()
        return call

    def control(self, op: str, args: tuple) -> Any:
        """A call answered by the parent (model control, custom metrics), blocking."""
        with self.lock:
            cid = self.next_call
            self.next_call += 1
            call = _Call(cid, False, None)
            self.calls[cid] = call
            if self.pinned:
                self._release_pinned()
            if self.deferred:
                self._flush_deferred()
            self.ep.send(CALL, cid, op, args)
        self._wait_for(lambda: call.items)
        (error, value), _ = call.items.popleft()
        if error is not None:
            raise TritonModelException(error[1])
        return value

    def _deliver(self, call: _Call, item: Any, final: bool) -> None:
        """Hand a result to whoever waits for `call` (runs in the reading thread)."""
        if final and call.loop is not None:
            with self.cond:
                self.async_pending -= 1
        if call.loop is not None and not call.decoupled:
            _resolve_threadsafe(call.future, item)
            return
        with call.lock:
            call.items.append((item, final))
            waiter, call.waiter = call.waiter, None
        if waiter is not None:
            _resolve_threadsafe(waiter, None)
        if call.future is not None and not call.future.done():
            # An awaited decoupled async_exec returns once the first response is in, as
            # Triton's: a model iterating it with a plain `for` then rarely blocks the loop.
            _resolve_threadsafe(call.future, None)

    def wait_call(self, call: _Call) -> InferenceResponse:
        self._wait_for(lambda: call.items)
        return call.items.popleft()[0]

    def next_call_item(self, call: _Call) -> tuple[InferenceResponse, bool]:
        self._wait_for(lambda: call.items)
        return call.items.popleft()

    async def next_call_item_async(self, call: _Call) -> tuple[InferenceResponse, bool]:
        while True:
            with call.lock:
                if call.items:
                    return call.items.popleft()
                import asyncio

                fut = asyncio.get_running_loop().create_future()
                call.waiter = fut
            if not self.async_mode and call.loop is None:
                # A decoupled exec() iterated with `async for` from sync mode: make sure
                # someone reads the socket.
                with self.cond:
                    self.async_pending += 1
                self._ensure_pump()
                try:
                    await fut
                finally:
                    with self.cond:
                        self.async_pending -= 1
            else:
                await fut

    def _ensure_pump(self) -> None:
        """Sync-mode models awaiting async BLS (asyncio.run inside execute): a helper
        thread reads the socket until those calls are answered."""
        with self.cond:
            if self.pump_running or self.async_pending <= 0:
                return
            self.pump_running = True
        threading.Thread(target=self._pump, name="naiad-stub-pump", daemon=True).start()

    def _pump(self) -> None:
        def stop() -> None:
            self.pump_running = False

        self._wait_for(lambda: self.async_pending <= 0, stop)

    def _response_from(self, rd: tuple | None, rid: int, base_off: int, total: int) -> InferenceResponse:
        """A BLS response from the parent: outputs are views over its region."""
        if rd is None:
            return InferenceResponse([])
        error, params, outputs = rd
        if error is not None:
            return InferenceResponse([], TritonError(error[1], error[0]), params)
        tensors = []
        if rid >= 0:
            base = np.frombuffer(self.ep.peer[rid].mm, np.uint8, total, base_off)
            for name, dt, shape, off, n in outputs:
                dtype = _NUMPY.get(dt)
                if dtype is not None:
                    arr = np.ndarray(shape, dtype, base, off) if n else np.zeros(shape, dtype)
                else:
                    arr = pb_utils.deserialize_bytes_tensor(base[off : off + n]).reshape(shape)
                tensors.append(Tensor._wrap(name, arr, WIRE_TO_CODE[dt]))
            with self.lock:
                self.pinned.append((base, rid))
            del base
        else:
            for name, dt, shape, off, n in outputs:
                dtype = _NUMPY.get(dt, np.dtype(np.object_))
                tensors.append(Tensor._wrap(name, np.zeros(shape, dtype), WIRE_TO_CODE[dt]))
        return InferenceResponse(tensors, None, params)

    # ================================================================== logging ==

    def log(self, level: int, message: str, filename: str, lineno: int) -> None:
        # Every level goes to the parent, which filters with the live log settings (the
        # verbose level may change at run time through /v2/logging).
        self._send(LOG, int(level), message, filename, int(lineno))


# ==================================================================== helpers ==


def _resolve(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _resolve_threadsafe(fut: asyncio.Future, value: Any) -> None:
    try:
        fut.get_loop().call_soon_threadsafe(_resolve, fut, value)
    except RuntimeError:
        pass  # its loop is closed: nobody waits any more


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE


def _is_coroutine_function(fn: Any) -> bool:
    fn = getattr(fn, "__func__", fn)
    return bool(getattr(getattr(fn, "__code__", None), "co_flags", 0) & _CO_COROUTINE)


def _is_awaitable(obj: Any) -> bool:
    return obj is not None and not isinstance(obj, list) and hasattr(obj, "__await__")


def _payload(t: Tensor) -> tuple[Any, str, tuple]:
    """(bytes-like data in wire layout, wire datatype, shape) of an output tensor."""
    arr = t._array if t._foreign is None else t._host_array()
    code = t._dtype
    if code == TYPE_BYTES:
        data = pb_utils.serialize_byte_tensor(arr) if arr.size else b""
        if data is None:
            raise TritonModelException(f"tensor '{t._name}' is BYTES but holds {arr.dtype} data")
        return data, "BYTES", tuple(arr.shape)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr.reshape(-1).view(np.uint8), CODE_TO_WIRE[code], tuple(arr.shape)


def _stage(resp: InferenceResponse, requested: tuple | None, total: int, staged: list) -> tuple[tuple, int]:
    """Describe one response and queue its tensors for copying at `total` onwards."""
    err = resp._error
    if err is not None:
        return ((int(err.code()), err.message()), resp._params, ()), total
    outs = []
    for t in resp._outputs:
        if requested is not None and t._name not in requested:
            continue
        data, wire, shape = _payload(t)
        n = len(data) if isinstance(data, (bytes, bytearray)) else data.nbytes
        outs.append((t._name, wire, shape, total, n))
        staged.append((total, n, data))
        total += align(n)
    return (None, resp._params, tuple(outs)), total


def _check_responses(result: Any, reqs: list) -> str | None:
    if not isinstance(result, list):
        return f"Expected a list in the execute return, found type '{type(result)}'."
    if len(result) != len(reqs):
        return (
            "Number of InferenceResponse objects do not match the number of InferenceRequest "
            f"objects. InferenceRequest(s) size is:{len(reqs)}, and InferenceResponse(s) size "
            f"is:{len(result)}\n"
        )
    for req, resp in zip(reqs, result):
        if req._release_flags == pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE:
            if resp is not None:
                return (
                    "Expected a None object in the execute function return list for reschduled "
                    f"request, found type '{type(resp)}'."
                )
        elif not isinstance(resp, InferenceResponse):
            return (
                "Expected an 'InferenceResponse' object in the execute function return list, "
                f"found type '{type(resp)}'."
            )
    return None


class _StubError(Exception):
    """An error the stub itself reports (Triton's C++ stub throws these): its text as is."""


# The stub's own frames are not shown in an error's trace: in Triton the caller is C++.
_OWN_FILES = frozenset((__file__, pb_utils.__file__))


def _error_text(exc: BaseException) -> str:
    """An exception as Triton's stub reports it (pybind11's error text): 'Type: message',
    then the model's frames, innermost first."""
    if isinstance(exc, _StubError):
        return str(exc)
    head = f"{type(exc).__name__}: {exc}"
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename not in _OWN_FILES]
    if not frames:
        return head
    lines = [f"  {f.filename}({f.lineno}): {f.name}" for f in reversed(frames)]
    return head + "\n\nAt:\n" + "\n".join(lines) + "\n"


def _failed(instance_name: str, message: str) -> str:
    """How Triton's stub logs a decoupled batch that failed."""
    return f"Failed to process the request(s) for model '{instance_name}', message: {message}"


def _parent_gone() -> None:
    """The parent closed the socket: nothing left to serve; memfds go with us."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)


def _restore_library_path() -> None:
    """A stub in a model's own environment was started with that environment's lib folder
    first on LD_LIBRARY_PATH; the processes the model starts get the old value, as in Triton."""
    old = os.environ.pop("NAIAD_STUB_LD_LIBRARY_PATH", None)
    if old is None:
        return
    if old:
        os.environ["LD_LIBRARY_PATH"] = old
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)


def _set_parent_death_signal() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class _Args:
    fd = -1
    ppid = -1
    label = "stub"
    ready_fd = -1  # the readiness channel (`readiness`)


def _parse_args(argv: list[str]) -> _Args:
    """--fd N --ppid P [--label L] (argparse costs start-up time for three flags)."""
    args = _Args()
    it = iter(argv)
    for flag in it:
        value = next(it, None)
        if value is None or flag not in ("--fd", "--ppid", "--label", "--ready-fd"):
            sys.exit(f"usage: python -m naiad.backends.python.stub --fd N --ppid P [--label L] (bad {flag!r})")
        setattr(args, flag[2:].replace("-", "_"), value if flag == "--label" else int(value))
    if args.fd < 0 or args.ppid < 0:
        sys.exit("usage: python -m naiad.backends.python.stub --fd N --ppid P [--label L]")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    # What Triton's embedded interpreter gives a model (pybind11 started without arguments):
    # a model calling unittest.main() or argparse must not see the stub's own flags.
    sys.argv = [""]

    _set_parent_death_signal()
    if os.getppid() != args.ppid:  # the parent died before the signal was armed
        os._exit(0)
    # The parent owns our lifecycle: Ctrl-C in a terminal must not kill us first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    os.set_inheritable(args.fd, False)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=args.fd)
    sys.modules["triton_python_backend_utils"] = pb_utils
    sys.modules.setdefault("c_python_backend_utils", pb_utils)
    _restore_library_path()
    stub = Stub(sock, args.label)
    if args.ready_fd >= 0:
        os.set_inheritable(args.ready_fd, False)
        stub.ready_sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=args.ready_fd)
    pb_utils._bind(stub)
    code = 0
    try:
        code = stub.serve()
    except ipc.ProtocolError as exc:
        print(f"naiad python stub {args.label}: {exc}", file=sys.stderr)
        code = 3
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


if __name__ == "__main__":
    main()
