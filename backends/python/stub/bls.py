"""The stub's client side of calls to the parent: BLS requests (`InferenceRequest.exec`,
`async_exec`) and model-control or metric calls, with their answers handed to whichever
thread or asyncio future waits for them."""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import pb_utils
from ..ipc import BLS, CALL
from ..pb_utils import WIRE_TO_CODE, InferenceRequest, InferenceResponse, Tensor, TritonError, TritonModelException
from ..shm import align
from .wire import NUMPY, payload

if TYPE_CHECKING:
    import asyncio


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



class BlsClient:
    """Calls to the parent and their answers (a mixin of `Stub`)."""

    def _init_bls(self) -> None:
        self.calls: dict[int, _Call] = {}
        self.next_call = 1
        self.async_pending = 0  # async BLS calls not yet final (sync mode: a pump reads for them)
        self.pump_running = False

    def bls(self, request: InferenceRequest, decoupled: bool, loop: asyncio.AbstractEventLoop | None = None) -> _Call:
        if not self.initialized or self.finalizing:
            raise TritonModelException("BLS is only supported during the 'execute' function.")
        staged: list = []
        total = 0
        descs = []
        for t in request._inputs:
            data, wire, shape = payload(t)
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
            resolve_threadsafe(call.future, item)
            return
        with call.lock:
            call.items.append((item, final))
            waiter, call.waiter = call.waiter, None
        if waiter is not None:
            resolve_threadsafe(waiter, None)
        if call.future is not None and not call.future.done():
            # An awaited decoupled async_exec returns once the first response is in, as
            # Triton's: a model iterating it with a plain `for` then rarely blocks the loop.
            resolve_threadsafe(call.future, None)

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
                dtype = NUMPY.get(dt)
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
                dtype = NUMPY.get(dt, np.dtype(np.object_))
                tensors.append(Tensor._wrap(name, np.zeros(shape, dtype), WIRE_TO_CODE[dt]))
        return InferenceResponse(tensors, None, params)


def _resolve(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def resolve_threadsafe(fut: asyncio.Future, value: Any) -> None:
    try:
        fut.get_loop().call_soon_threadsafe(_resolve, fut, value)
    except RuntimeError:
        pass  # its loop is closed: nobody waits any more
