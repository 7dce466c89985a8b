"""Running batches in the stub: an EXECUTE's inputs become numpy views over the parent's
region, the model's `execute` runs (in the main thread, or as a task on the asyncio loop
for `async def execute`), and its responses go back as one block of the stub's arena.

Input lifetime. Each batch's inputs are views of one numpy "base" array over the
parent's region. When the batch is done the stub keeps the base until no view of it is
alive (`sys.getrefcount`), then tells the parent to free it, piggybacked on the next
message it sends; a model that keeps an input array keeps its memory, as in Triton.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import pb_utils
from ..ipc import EXEC_DONE, RESPONSE, RESPONSES
from ..pb_utils import WIRE_TO_CODE, InferenceRequest, InferenceResponse, Tensor, _RequestState
from .errors import StubError, error_text, failed_text
from .loading import is_awaitable
from .wire import EMPTY_BLOCK, NUMPY, stage

if TYPE_CHECKING:
    import asyncio


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



class Execution:
    """Batches in flight (a mixin of `Stub`)."""

    def _init_execution(self) -> None:
        self.requests: dict[tuple[int, int], _RequestState] = {}  # (batch, index): for CANCEL

    def _make_batch(self, msg: tuple) -> "_Batch":
        _, _, bid, rid, base_off, total, metas = msg
        batch = _Batch(bid, rid)
        base = None
        if rid >= 0:
            base = np.frombuffer(self.ep.peer[rid].mm, np.uint8, total, base_off)
        numpy_of = NUMPY.get
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
            raise StubError(f"Python model {self.model_path} does not implement `execute` method.")
        return execute(reqs)

    # The batch's requests, result and input base live only in its _Batch (never in a
    # local of these functions), so `_complete` can drop the last reference to them
    # before it checks whether the input block can be freed.

    def _execute_sync(self, msg: tuple) -> None:
        t0 = time.monotonic_ns()
        batch = self._make_batch(msg)
        try:
            batch.result = self._call_execute(batch.reqs)
            if is_awaitable(batch.result):
                batch.result = self._run_blocking(batch.result)
        except BaseException as exc:  # noqa: BLE001
            batch.error = error_text(exc)
        self._complete(batch, t0, time.monotonic_ns())

    def _execute_async(self, msg: tuple) -> None:
        t0 = time.monotonic_ns()
        batch = self._make_batch(msg)
        try:
            batch.result = self._call_execute(batch.reqs)
        except BaseException as exc:  # noqa: BLE001
            batch.error = error_text(exc)
        if batch.error is not None or not is_awaitable(batch.result):
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
                batch.error = error_text(exc)
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
                    self.log(pb_utils.Logger.LogLevel.INFO, failed_text(self.instance_name, error), __file__, 0)
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
        block = EMPTY_BLOCK
        with self.lock:
            if error is None:
                error = _check_responses(result, reqs)
            if error is None:
                try:
                    rdescs, block = self._pack(reqs, result)
                except BaseException as exc:  # noqa: BLE001
                    error = error_text(exc)
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
            rd, total = stage(resp, req._state.requested, total, staged)
            rdescs.append(rd)
        block = self._write(staged, total)
        return tuple(rdescs), block

    def send_response(self, state: _RequestState, response: InferenceResponse | None, final: bool) -> None:
        """A decoupled response (InferenceResponseSender.send), from any thread."""
        bid, idx = state.key
        with self.lock:
            rd = None
            block = EMPTY_BLOCK
            if response is not None:
                staged: list = []
                rd, total = stage(response, state.requested, 0, staged)
                block = self._write(staged, total)
            if final:
                self.requests.pop(state.key, None)
            if self.pinned:
                self._release_pinned()
            self.ep.send(RESPONSE, bid, idx, final, rd, *block)


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
